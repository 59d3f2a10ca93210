"""The clean LM's loss rows kept between analyses (sae/analysis/loss_cache.py): read back as written, found only for
the same batch and mean-ablation vector, computed again from a damaged file, kept under a key of everything they
depend on. (That an analysis reads them and gives the same files to the bit: tests/sae/test_executors.py.)"""

import numpy as np
import pytest
import torch

from sae import lm
from sae.analysis.config import AnalysisConfig
from sae.analysis.loss_cache import CACHE, clean_rows_cache
from sae.lm.head_losses import clean_rows

CFG = AnalysisConfig(n_tokens=2000, batch_sequences=16, loss_tokens=700)


def never():
    raise AssertionError("recomputed what was kept")


def test_kept_rows_come_back_to_the_bit_for_the_same_batch_and_mean_only(tiny_run_copy):
    model = lm.load_lm(tiny_run_copy)
    tokens = torch.from_numpy(np.load(tiny_run_copy / "corpus" / "heldout.npy")[:4].astype(np.int64))
    mean = torch.arange(64, dtype=torch.float32) / 64
    with torch.no_grad():
        mid, post = lm.mid_and_post(model, tokens)
        computed = clean_rows(lm.mlp_head(model, tokens[:2]), mid, post, tokens, mean)
    n_rows = len(computed.u)
    cache = clean_rows_cache(tiny_run_copy, CFG, torch.device("cpu"))
    assert cache.rows(16, n_rows, mean, lambda: computed) is computed
    kept = clean_rows_cache(tiny_run_copy, CFG, torch.device("cpu")).rows(16, n_rows, mean, never)
    assert kept.names == computed.names == ("clean", "zero", "mean")
    for name in ("logp", "kl", "u", "kappa"):
        torch.testing.assert_close(getattr(kept, name), getattr(computed, name), rtol=0, atol=0)
    assert kept.kappa.dtype == torch.float64
    for other in ((0, n_rows, mean), (16, n_rows - 31, mean), (16, n_rows, mean + 1e-7)):  # another batch or mean
        with pytest.raises(ZeroDivisionError):
            cache.rows(*other, lambda: 1 / 0)
    (entry,) = cache.folder.glob("16-*.npz")
    for damage in (b"", entry.read_bytes()[:1000]):  # empty, truncated: computed again, never an error
        entry.write_bytes(damage)
        assert cache.rows(16, n_rows, mean, lambda: computed) is computed
    assert cache.mean(lambda: mean) is mean and torch.equal(cache.mean(never), mean)
    assert not [p for p in cache.folder.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_thread_counts_have_folders_of_their_own_and_the_driver_removes_other_keys(tiny_run_copy):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = clean_rows_cache(tiny_run_copy, CFG, torch.device("cpu"))
        torch.set_num_threads(2)  # float sums differ between thread counts
        two = clean_rows_cache(tiny_run_copy, CFG, torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert one.folder.parent == two.folder.parent and one.folder.name.startswith("cpu-1-")
    assert two.folder.name.startswith("cpu-2-")
    one.mean(lambda: torch.ones(64))
    moved = AnalysisConfig(n_tokens=2000, batch_sequences=16, loss_tokens=1400)  # the loss region (so the mean) moved
    assert clean_rows_cache(tiny_run_copy, moved, torch.device("cpu")).folder.parent != one.folder.parent
    assert one.folder.is_dir()  # a shard's cache removes nothing
    driver = clean_rows_cache(tiny_run_copy, moved, torch.device("cpu"), tidy=True)
    assert not one.folder.parent.exists()
    driver.mean(lambda: torch.ones(64))
    assert [p.relative_to(tiny_run_copy / CACHE) for p in (tiny_run_copy / CACHE).glob("*/*")] == [
        driver.folder.relative_to(tiny_run_copy / CACHE)]
