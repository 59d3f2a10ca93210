"""The analysis's selections, compiled, against sorting everything: GroupSelect's k first entries per group by
(key, token) (sae/analysis/state.py, also in numpy) and a TopK SAE's firing units (sae/analysis/shard.py)."""

import numpy as np
import pytest

from sae.analysis.state import GroupSelect


@pytest.mark.parametrize("compiled", [True, False], ids=["numba", "numpy"])
def test_the_selection_equals_a_stable_sort_of_every_entry_offered(compiled, monkeypatch):
    if not compiled:
        monkeypatch.setattr("sae.analysis.state.kernels", lambda *args: None)  # what numba's absence gives
    gen = np.random.default_rng(0)
    n_groups, k, per_batch, batches = 40, 6, 500, 7
    select = GroupSelect(n_groups, k)
    seen = []
    for b in range(batches):  # tokens ascend across batches (the stream order); keys with many ties
        token = np.sort(gen.integers(b * 10_000, (b + 1) * 10_000, per_batch))
        group, key = gen.integers(0, n_groups, per_batch), gen.integers(0, 30, per_batch)
        value = gen.random(per_batch).astype(np.float32)
        select.update(group, key, token, value)
        seen.append((group, key, token, value))
    group, key, token, value = (np.concatenate(x) for x in zip(*seen))
    order = np.lexsort((token, key, group))
    for g in range(n_groups):
        mine = order[group[order] == g][:k]
        n = len(mine)
        assert select.key[g, :n].tolist() == key[mine].tolist()
        assert select.token[g, :n].tolist() == token[mine].tolist()
        assert select.value[g, :n].tolist() == value[mine].tolist()
        assert (select.token[g, n:] == -1).all() and (select.key[g, n:] == GroupSelect.PAD).all()
    assert select.count().sum() == n_groups * k  # every group filled: the comparison above is not vacuous


@pytest.mark.parametrize("architecture,shift", [("topk", 0.0), ("topk", -2.0), ("relu", -1.0)],
                         ids=["topk-mostly-positive", "topk-fewer-than-k-positive", "relu"])
def test_an_saes_firing_units_equal_the_dense_encodes(architecture, shift):
    """The analysis takes a TopK SAE's firing units from the compiled selection of each row's k largest
    pre-activations (never a dense f); they equal torch's encode and its non-zeros, also on rows with fewer than k
    positive pre-activations (the rest dropped by the ReLU). Every SAE is encoded ENCODE_ROWS rows at a time: the rows
    here span three blocks, and come back in token order with their own rows."""
    import torch

    from sae.analysis.shard import ENCODE_ROWS, Basis, _firing
    from sae.dictionary.model import SAEConfig, SparseAutoencoder

    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=256, architecture=architecture, k=8))
    sae.init_weights(torch.Generator().manual_seed(0)).requires_grad_(False)
    sae.b_enc.fill_(shift)
    n = 2 * ENCODE_ROWS + 37
    x = torch.randn(n, 16, generator=torch.Generator().manual_seed(1))
    rows, units, values = _firing(Basis("t", 256, sae), x, {})
    f = sae.encode(x)
    expected = torch.nonzero(f).numpy()
    assert rows.tolist() == expected[:, 0].tolist() and units.tolist() == expected[:, 1].tolist()
    assert values.tolist() == f[f != 0].tolist()
    per_row = np.bincount(rows, minlength=n)
    assert rows.max() >= 2 * ENCODE_ROWS  # the last block's rows were there
    if architecture == "topk":
        assert (per_row == 8).any() and (per_row < 8).any() == (shift < 0)  # the rows this case is about were there
