"""What bounds the analysis's memory, against the whole-batch computations it replaced: SAELens's pair terms a block
of rows at a time, the windows' token ids looked up when written, units.npz written one array at a time, and the
heap's free pages given back between stages (BENCHMARKS.md, the analysis's peak memory)."""

from itertools import chain

import numpy as np
import pytest
import torch

from sae.analysis.npz import save_npz
from sae.analysis.reduce import WINDOW_KINDS, WINDOW_ROWS, BasisResult
from sae.dictionary.metrics import PAIR_ROWS, _pair_terms


def test_pair_terms_a_block_at_a_time_are_the_whole_batchs_to_the_bit():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2 * PAIR_ROWS + 7, 24, generator=gen)
    x_hat = x + 0.1 * torch.randn(x.shape, generator=gen)
    x[3] = 0  # a zero input: the ratio's guard
    xd, hd = x.double(), x_hat.double()  # the terms as they were made for all rows at once
    norm_in, norm_out, dot = xd.norm(dim=-1), hd.norm(dim=-1), (xd * hd).sum(-1)
    expected = {"n": float(len(x)), "norm_in": float(norm_in.sum()), "norm_out": float(norm_out.sum()),
                "norm_ratio": float((norm_out / torch.where(norm_in < 1e-4, 1.0, norm_in)).sum()),
                "out_sq": float(norm_out.pow(2).sum()), "dot": float(dot.sum()),
                "cos": float((dot / (norm_in * norm_out).clamp_min(1e-12)).sum())}
    assert _pair_terms(x, x_hat) == expected


def test_window_token_ids_are_the_tokens_around_each_center_inside_its_sequence():
    gen = np.random.default_rng(0)
    n_seq, n_ctx, before, width = 300, 40, 6, 10
    tokens = gen.integers(0, 5000, (n_seq, n_ctx)).astype(np.int32)
    n_units = 900  # top 3, interval 2 x 2, review top 1, review interval 2 x 1: 10 windows a unit, 9,000 in all
    shapes = {"top": (n_units, 3), "interval": (n_units, 2, 2), "review_top": (n_units, 1),
              "review_interval": (n_units, 2, 1)}
    n_windows = sum(int(np.prod(s)) for s in shapes.values())
    assert n_windows > WINDOW_ROWS  # the lookup's blocks meet
    centers = gen.integers(0, n_seq * n_ctx, n_windows)
    empty = gen.random(n_windows) < 0.2
    centers[empty] = -1
    units = np.where(empty, -1, gen.integers(0, n_units, n_windows))
    arrays = {f"{kind}_acts": np.zeros((*shapes[kind], width), np.float32) for kind in WINDOW_KINDS}
    result = BasisResult(arrays, {}, units, centers, np.zeros((n_windows, width), np.float32), n_open=0)
    ids = dict(result.token_ids(tokens, before))
    assert list(ids) == [f"{kind}_token_ids" for kind in WINDOW_KINDS]
    flat = np.concatenate([ids[f"{kind}_token_ids"].reshape(-1, width) for kind in WINDOW_KINDS])
    assert flat.dtype == np.int32 and ids["interval_token_ids"].shape == (n_units, 2, 2, width)
    for e in [*range(0, n_windows, 37), WINDOW_ROWS - 1, WINDOW_ROWS, n_windows - 1]:
        for w in range(width):
            seq, pos = divmod(int(centers[e]), n_ctx)
            pos += w - before
            inside = centers[e] >= 0 and 0 <= pos < n_ctx
            assert flat[e, w] == (tokens[seq, pos] if inside else -1), (e, w)
    assert (flat[empty] == -1).all() and (flat[~empty] >= 0).mean() > 0.7


def test_save_npz_writes_what_np_load_reads_taking_each_array_in_turn(tmp_path):
    made = []

    def later(name, array):  # an array made only when its turn to be written comes
        made.append(name)
        return name, array

    arrays = {"a": np.arange(12, dtype=np.int64).reshape(3, 4), "b": np.array([1.5, np.nan], np.float32),
              "names": np.array(["x", "<y>"]), "empty": np.zeros((0, 3), np.int32)}
    items = (later(name, array) for name, array in [("c", np.full((2, 2, 2), -1, np.int32))])
    save_npz(tmp_path / "units.npz", chain(arrays.items(), items))
    assert made == ["c"]
    with np.load(tmp_path / "units.npz") as z:
        assert sorted(z.files) == ["a", "b", "c", "empty", "names"]
        for name, array in {**arrays, "c": np.full((2, 2, 2), -1, np.int32)}.items():
            assert z[name].dtype == array.dtype and z[name].shape == array.shape
            np.testing.assert_array_equal(z[name], array)


def test_giving_back_freed_memory_lowers_the_resident_heap():
    """Small blocks freed in the middle of the heap stay resident until the heap's free pages are given back."""
    from sae.memory import give_back_freed_memory

    if not _glibc():
        pytest.skip("malloc_trim is glibc's")

    def resident_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    blocks = [bytearray(64 * 1024) for _ in range(3200)]  # 200 MB of 64 KB blocks: the heap, not their own maps
    for block in blocks:
        block[::4096] = b"\1" * len(block[::4096])  # touched: resident
    del blocks[::2]  # every other one freed: holes the heap cannot hand back from its top
    before = resident_mb()
    give_back_freed_memory()
    assert before - resident_mb() > 50, (before, resident_mb())


def _glibc() -> bool:
    import platform

    return platform.libc_ver()[0] == "glibc"
