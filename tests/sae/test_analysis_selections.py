"""The analysis's compiled kernels against their numpy and torch paths: GroupSelect's k first entries per group
by (key, token) (sae/analysis/state.py), an SAE's and the neurons' firing units (sae/analysis/shard.py), the review
sample's clash test (sae/analysis/review_sample.py) and the windows' lookup in a spill (sae/analysis/spill.py)."""

import numpy as np
import pytest

from sae.analysis.state import GroupSelect
from sae.compiled import kernels


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


@pytest.mark.parametrize("neurons", [True, False], ids=["neurons", "relu-sae"])
def test_the_compiled_firing_units_equal_torchs_to_the_bit(neurons, monkeypatch):
    """A ReLU SAE's and the neurons' firing units come from one compiled pass (sae/analysis/firing_kernels.py); they
    are torch's add, ReLU and non-zeros to the bit, with zeros, -0.0, infinities and NaN among the values (an SAE's
    ReLU keeps NaN, which its non-zeros count; a neuron fires where positive only)."""
    import torch

    from sae.analysis.shard import Basis, _firing
    from sae.dictionary.model import SAEConfig, SparseAutoencoder

    gen = torch.Generator().manual_seed(2)
    if neurons:
        basis, x = Basis("neurons", 64), torch.randn(300, 64, generator=gen)
        x[:, :8] = 0.0
    else:
        sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=256)).init_weights(gen).requires_grad_(False)
        sae.b_enc.fill_(-0.5)
        basis, x = Basis("relu", 256, sae), torch.randn(300, 16, generator=gen)
    x[1, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0])
    x[2, 5] = float("inf")
    assert kernels("sae.analysis.firing_kernels") is not None
    got = _firing(basis, x, {})
    monkeypatch.setattr("sae.analysis.shard.compiled_kernels", lambda *args: None)  # the torch path
    want = _firing(basis, x, {})
    assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
    assert got[2].view(np.int32).tolist() == want[2].view(np.int32).tolist()
    assert got[0].dtype == want[0].dtype and got[1].dtype == want[1].dtype and got[2].dtype == want[2].dtype
    assert np.isnan(got[2]).any() != neurons and np.isinf(got[2]).any() and 0 < len(got[0]) < x.shape[0] * basis.n_units


def test_the_compiled_clash_test_equals_numpys(monkeypatch):
    """The review sample's clash test (sae/analysis/review_kernels.py: each query against its own unit's open windows)
    gives numpy's answers and text hashes: windows near an open one, windows that show the same text (a two-token
    vocabulary repeats texts often; windows cut by their sequence's ends), units with no open window, empty slots."""
    from sae.analysis.review_sample import OpenWindows

    gen = np.random.default_rng(3)
    n_ctx, before, after, n_units = 16, 4, 2, 30
    tokens = gen.integers(0, 2, 40 * n_ctx).astype(np.int32)
    open_units, open_centers = gen.integers(0, n_units - 5, 200), gen.integers(0, len(tokens), 200)
    open_centers[:10] = -1  # empty slots
    units, centers = gen.integers(0, n_units, 5000), gen.integers(0, len(tokens), 5000)
    compiled = OpenWindows(open_units, open_centers, tokens, n_ctx, before, after)
    assert compiled.compiled is not None
    got, got_keys = compiled.clash(units, centers), compiled.text_keys(units, centers)
    monkeypatch.setattr("sae.analysis.review_sample.kernels", lambda *args: None)  # what numba's absence gives
    plain = OpenWindows(open_units, open_centers, tokens, n_ctx, before, after)
    assert got.tolist() == plain.clash(units, centers).tolist()
    assert got_keys.tolist() == plain.text_keys(units, centers).tolist()
    near = plain.near(units, centers)
    assert near.any() and (got & ~near).any() and (~got).any()  # both kinds of clash, and none, were there
    assert not got[units >= n_units - 5].any()


def test_the_compiled_window_lookup_equals_numpys(tmp_path, monkeypatch):
    """The windows' activations looked up in a spill (sae/analysis/window_kernels.py) are numpy's to the bit: windows
    across batch boundaries and cut by their sequence's ends, silent units, empty slots, a shard that starts late."""
    from sae.analysis.spill import Spill, gather_windows

    gen = np.random.default_rng(4)
    n_ctx, before, after, n_units, n_seq, shard_start = 8, 5, 2, 12, 6, 3 * 8
    spill = Spill.create(tmp_path / "spill", n_units)
    for n_tokens in (16, 8, 24):  # batches of whole sequences
        firing = gen.random((n_tokens, n_units)) < 0.3
        rows, units = np.nonzero(firing)
        spill.append(firing.sum(1), units, gen.random(len(units)).astype(np.float32) + 0.5)
    units = gen.integers(-1, n_units, 300)  # -1: an empty slot
    centers = gen.integers(0, shard_start + n_seq * n_ctx, 300)  # some before this shard
    assert kernels("sae.analysis.window_kernels") is not None
    got = np.full((300, before + 1 + after), -7.0, np.float32)  # entries outside the shard keep their rows
    gather_windows(spill, n_ctx, shard_start, units, centers, before, after, got)
    monkeypatch.setattr("sae.analysis.spill.kernels", lambda *args: None)  # what numba's absence gives
    want = np.full_like(got, -7.0)
    gather_windows(spill, n_ctx, shard_start, units, centers, before, after, want)
    assert got.view(np.int32).tolist() == want.view(np.int32).tolist()
    mine = (units >= 0) & (centers >= shard_start)
    assert (got[mine] > 0).any() and (got[mine] == 0).any() and (got[~mine] == -7).all()


def test_the_compiled_interval_bookkeeping_equals_numpys(monkeypatch):
    """Pass 2's per-entry bookkeeping (sae/analysis/interval_kernels.py) gives numpy's histogram and interval counts,
    activation sums, groups and reservoir to the bit, values on interval edges, at the max and the min included;
    a non-finite value is refused rather than binned out of bounds."""
    from sae.analysis.state import IntervalStats

    gen = np.random.default_rng(5)
    n_units, n = 40, 20_000
    max_act = (gen.random(n_units) * 5 + 0.1).astype(np.float32)
    min_act = (max_act * gen.random(n_units) * 0.01).astype(np.float32)
    max_act[3] = min_act[3] = 0.0  # a dead unit gets nothing
    max_act[5], min_act[5] = 2e-38, 1e-41  # subnormal: 11 / max overflows float32, its values span the intervals
    units = gen.integers(0, n_units, n)
    units = units[units != 3]
    values = (gen.random(len(units)) * max_act[units]).astype(np.float32)
    values = np.maximum(values, min_act[units])
    edges = (max_act[:, None] * (np.arange(12, dtype=np.float32) / np.float32(11))).astype(np.float32)
    on_edge = edges[units[:6000], gen.integers(1, 12, 6000)]  # on an interval's edge (the max among them) or an ulp off
    values[:6000] = np.nextafter(on_edge, np.float32(gen.choice([0, np.inf], 6000)) * on_edge)
    values[:2000] = on_edge[:2000]
    values[6000:6100] = min_act[units[6000:6100]]

    rows = np.arange(len(units), dtype=np.int64)

    def run():
        stats = IntervalStats(max_act, min_act, 11, 5, 50, seed=7)
        return stats, stats.update(rows, units, values, 1000)

    assert kernels("sae.analysis.interval_kernels") is not None
    compiled, got_group = run()
    monkeypatch.setattr("sae.analysis.state.kernels", lambda *args: None)  # what numba's absence gives
    plain, want_group = run()
    assert got_group.tolist() == want_group.tolist()
    for name in ("hist_counts", "interval_counts"):
        assert getattr(compiled, name).tolist() == getattr(plain, name).tolist(), name
    assert compiled.act_sum.view(np.int64).tolist() == plain.act_sum.view(np.int64).tolist()
    assert compiled.reservoir.token.tolist() == plain.reservoir.token.tolist()
    assert compiled.reservoir.key.tolist() == plain.reservoir.key.tolist()
    assert (compiled.hist_counts.reshape(n_units, 50)[:, [0, 49]] > 0).all(axis=1).sum() > 30  # both end bins used
    assert (compiled.interval_counts.reshape(n_units, 11)[5] > 0).all()  # the subnormal unit's values in every one
    monkeypatch.undo()
    with pytest.raises(ValueError, match="not finite"):
        IntervalStats(max_act, min_act, 11, 5, 50, seed=7).update(rows[:2], units[:2],
                                                                  np.array([1.0, np.inf], np.float32), 0)
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) makes its histogram's edges NaN
        broken = IntervalStats(np.float32([1.0]), np.float32([0.0]), 11, 5, 50, seed=7)
    with pytest.raises(ValueError, match="not defined"):  # a live unit whose smallest activation read as 0 (NaN)
        broken.update(rows[:2], np.zeros(2, np.int64), np.float32([0.5, 1.0]), 0)
