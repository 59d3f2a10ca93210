"""Streaming correlations (sae/analysis/correlation.py) equal the brute-force Pearson matrix, whatever the chunking,
the sparsity of each side, or the sharding; dead units have none."""

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # np.corrcoef and nanmax on the dead units

from sae.analysis.correlation import CorrelationSums


def topk_codes(rng, n, d, k):
    """SAE-like codes: k non-zeros per token, non-negative, one dead unit (column 0)."""
    scores = rng.random((n, d))
    scores[:, 0] = -1  # never among the top k: dead
    idx = np.argpartition(-scores, k, axis=1)[:, :k]
    codes = np.zeros((n, d), np.float32)
    np.put_along_axis(codes, idx, rng.gamma(2.0, 1.0, (n, k)).astype(np.float32), axis=1)
    return codes


def brute_force(a, b):
    full = np.corrcoef(a.T.astype(np.float64), b.T.astype(np.float64))  # [dA + dB, dA + dB]
    return full[: a.shape[1], a.shape[1]:]


@pytest.mark.parametrize("dense_a,dense_b", [(False, False), (True, False), (False, True), (True, True)])
def test_streamed_correlations_equal_brute_force(dense_a, dense_b):
    rng = np.random.default_rng(0)
    n = 3000
    latent = rng.normal(size=(n, 6))  # shared causes, so correlations are far from 0
    a = topk_codes(rng, n, 40, 4) if not dense_a else np.maximum(latent @ rng.normal(size=(6, 24)), 0).astype(np.float32)
    b = topk_codes(rng, n, 50, 5) if not dense_b else np.maximum(latent @ rng.normal(size=(6, 30)), 0).astype(np.float32)
    if not dense_a:
        a[:, 7] += (latent[:, 0] > 0) * 2.0  # a sparse unit that tracks a cause
    sums = CorrelationSums.zeros(a.shape[1], b.shape[1])
    for start, stop in ((0, 700), (700, 701), (701, 2048), (2048, n)):  # uneven chunks, one of a single token
        sums.update(a[start:stop], b[start:stop])
    corr = sums.correlation()
    expected = brute_force(a, b)
    live = ~np.isnan(expected)
    np.testing.assert_allclose(corr[live], expected[live], atol=2e-6)
    assert np.array_equal(np.isnan(corr), ~live)
    if not dense_a:
        assert np.isnan(corr[0]).all()  # the dead unit
    a_best, a_corr, b_best, b_corr = sums.best_matches()
    for i in range(a.shape[1]):
        if live[i].any():
            assert a_best[i] == np.nanargmax(expected[i]) and a_corr[i] == pytest.approx(np.nanmax(expected[i]), abs=2e-6)
        else:
            assert a_best[i] == -1 and np.isnan(a_corr[i])
    j = int(np.nanargmax(np.nanmax(expected, 0)))
    assert b_best[j] == np.nanargmax(expected[:, j])


def test_shards_merge_to_the_whole():
    rng = np.random.default_rng(1)
    a, b = topk_codes(rng, 2000, 30, 3), topk_codes(rng, 2000, 20, 3)
    whole = CorrelationSums.zeros(30, 20)
    whole.update(a, b)
    left, right = CorrelationSums.zeros(30, 20), CorrelationSums.zeros(30, 20)
    left.update(a[:900], b[:900])
    right.update(a[900:], b[900:])
    np.testing.assert_allclose(left.merge(right).correlation(), whole.correlation(), atol=1e-6, equal_nan=True)


def test_mismatched_chunks_are_refused():
    with pytest.raises(ValueError, match="same tokens"):
        CorrelationSums.zeros(3, 3).update(np.zeros((4, 3)), np.zeros((5, 3)))
