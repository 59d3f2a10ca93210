"""The clean LM's loss rows kept between analyses (sae/analysis/loss_cache.py): read back as written, kept under a
key of everything they depend on, one key per run. (That an analysis reads them and gives the same files to the bit:
tests/sae/test_executors.py.)"""

import numpy as np
import pytest
import torch

from sae import lm
from sae.analysis.config import AnalysisConfig
from sae.analysis.loss_cache import CACHE, clean_rows_cache
from sae.lm.losses import clean_rows

CFG = AnalysisConfig(n_tokens=2000, batch_sequences=16, loss_tokens=700)


def test_kept_rows_come_back_to_the_bit_and_a_changed_input_is_a_new_key(tiny_run_copy):
    model = lm.load_lm(tiny_run_copy)
    tokens = torch.from_numpy(np.load(tiny_run_copy / "corpus" / "heldout.npy")[:4].astype(np.int64))
    head = lm.mlp_head(model, tokens[:2])
    with torch.no_grad():
        mid, post = lm.mid_and_post(model, tokens)
        computed = clean_rows(head, mid, post, tokens, post[:, 1:].reshape(-1, 64).mean(0))

    def never():
        raise AssertionError("recomputed what was kept")

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        cache = clean_rows_cache(tiny_run_copy, CFG, torch.device("cpu"))
        assert cache.rows(16, lambda: computed) is computed
        kept = clean_rows_cache(tiny_run_copy, CFG, torch.device("cpu")).rows(16, never)
        assert kept.names == computed.names == ("clean", "zero", "mean")
        for name in ("logp", "kl", "u", "kappa"):
            torch.testing.assert_close(getattr(kept, name), getattr(computed, name), rtol=0, atol=0)
        mean = torch.arange(64, dtype=torch.float32)
        assert cache.mean(lambda: mean) is mean and torch.equal(cache.mean(never), mean)
        assert not [p for p in cache.folder.iterdir() if p.name.startswith(".")]  # no temporary file left
        torch.set_num_threads(2)  # float sums differ between thread counts: a folder of their own
        other = clean_rows_cache(tiny_run_copy, CFG, torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert other.folder.parent == cache.folder.parent and other.folder.name == "cpu-2" and cache.folder.name == "cpu-1"
    with pytest.raises(ZeroDivisionError):  # nothing kept for two threads
        other.rows(16, lambda: 1 / 0)
    moved = AnalysisConfig(n_tokens=2000, batch_sequences=16, loss_tokens=1400)  # the loss region (so the mean) moved
    assert clean_rows_cache(tiny_run_copy, moved, torch.device("cpu")).folder.parent != cache.folder.parent
    assert cache.folder.is_dir()  # a shard's cache removes nothing; the driver's removes the other keys
    driver = clean_rows_cache(tiny_run_copy, moved, torch.device("cpu"), tidy=True)
    assert not cache.folder.parent.exists() and driver.mean(lambda: mean) is mean
    assert [p.relative_to(tiny_run_copy / CACHE) for p in (tiny_run_copy / CACHE).glob("*/*")] == [
        driver.folder.relative_to(tiny_run_copy / CACHE)]
