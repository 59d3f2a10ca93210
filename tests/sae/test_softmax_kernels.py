"""The compiled softmax sums (sae/softmax_kernels.py) against float64."""

import subprocess
import sys

import numba
import numpy as np
import torch

from sae import softmax_kernels as K


@numba.njit
def _exp2_all(x, out):
    for i in range(x.shape[0]):
        out[i] = K.exp2f(x[i])


def test_exp2f_is_as_accurate_as_torch_over_the_float32_range_and_clamps_outside():
    x = np.concatenate([np.linspace(-125.9, 126.9, 1_000_001), np.float32([0.0, -0.5, 0.5, 1.0, -1.0])]
                       ).astype(np.float32)
    got = np.empty_like(x)
    _exp2_all(x, got)
    exact = np.exp2(x.astype(np.float64))
    assert np.max(np.abs(got - exact) / exact) < 1e-7
    assert np.max(np.abs(torch.from_numpy(x).exp2().numpy() - exact) / exact) > 5e-8  # torch's own error: comparable
    clamped = np.float32([-300.0, -127.0, 128.0, 1000.0])
    _exp2_all(clamped, out := np.empty_like(clamped))
    assert out.tolist() == [2.0**-126, 2.0**-126, 2.0**127, 2.0**127]


def test_exp_sums_equal_the_sums_in_float64():
    gen = np.random.default_rng(0)
    rows, deltas = gen.normal(size=(4, 300)).astype(np.float32) - 3, gen.normal(size=(6, 300)).astype(np.float32)
    row_of, delta_of = np.array([0, 3, 3, 1, 2]), np.array([5, 0, 1, 1, 4])
    coef, scale = np.float32([0.0, 1.0, -2.0, 0.3, 4.0]), np.float32([1.4, 0.7, 2.0, 1.0, 0.3])
    log2_weights = -gen.random(300).astype(np.float32) * 4
    out = np.empty(5, np.float32)
    K.exp_sums(rows, row_of, deltas, delta_of, coef, scale, log2_weights, out)
    z = (rows[row_of].astype(np.float64) - coef[:, None] * deltas[delta_of]) * scale[:, None] + log2_weights
    np.testing.assert_allclose(out, np.exp2(z).sum(-1), rtol=1e-6)


def test_loading_the_kernels_keeps_the_callers_torch_thread_count():
    """numba's OpenMP layer, started when a module of parallel kernels loads, reset the thread count torch reads to
    the number of cores: an analysis asked to run on one thread ran on two from its first loss chunk (and its float
    sums changed with it). A fresh interpreter, as the layer starts once a process."""
    code = ("import torch; torch.set_num_threads(1); from sae import compiled; "
            "assert compiled.kernels('sae.softmax_kernels') is not None; "
            "assert compiled.kernels('sae.analysis.group_kernels') is not None; print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "1"
