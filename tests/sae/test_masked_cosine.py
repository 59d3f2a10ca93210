"""Masked cosine (sae/analysis/masked_cosine.py) against a brute-force computation, its shard merge against one
pass, and the family edges: none below the threshold, none touching an ultralow feature."""

from __future__ import annotations

import numpy as np
import pytest

from sae.analysis.correlation import CorrelationSums
from sae.analysis.masked_cosine import MaskedSums
from sae.analysis.pairs import pair_relation


def sparse_acts(rng, n: int, d: int, density: float) -> np.ndarray:
    """Non-negative activations [n, d] firing on about `density` of tokens, as SAE codes do."""
    return (rng.random((n, d)) < density) * rng.gamma(2.0, 1.0, (n, d)).astype(np.float32)


def brute_force(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The definition, pair by pair: cosine over the tokens where one fires, then the other; the larger (0 if none)."""
    out = np.zeros((a.shape[1], b.shape[1]))
    for i in range(a.shape[1]):
        for j in range(b.shape[1]):
            best = 0.0
            for mask in (a[:, i] > 0, b[:, j] > 0):
                x, y = a[mask, i].astype(np.float64), b[mask, j].astype(np.float64)
                norm = np.sqrt((x @ x) * (y @ y))
                if norm > 0:
                    best = max(best, float(x @ y / norm))
            out[i, j] = best
    return out


@pytest.fixture
def acts():
    rng = np.random.default_rng(0)
    n = 3000
    a = sparse_acts(rng, n, 12, 0.05)
    b = sparse_acts(rng, n, 20, 0.03)
    b[:, :12] += a * (1.0 + rng.random(12)).astype(np.float32)  # some of B follow A: high masked cosines to find
    b[:, 19] = 0.0  # a dead feature of B
    a[:, 11] = 0.0
    a[7, 11] = 1.0  # an ultralow feature of A (1 token in 3,000 tokens is 3e-4: ultralow only below 1e-5)
    return a, b


def streamed(a: np.ndarray, b: np.ndarray, cuts: list[int]) -> tuple[CorrelationSums, MaskedSums]:
    sums, masked = CorrelationSums.zeros(a.shape[1], b.shape[1]), MaskedSums.zeros(a.shape[1], b.shape[1])
    for lo, hi in zip([0, *cuts], [*cuts, len(a)]):
        sums.update(a[lo:hi], b[lo:hi])
        masked.update(a[lo:hi], b[lo:hi])
    return sums, masked


def test_masked_cosine_matches_the_definition(acts):
    a, b = acts
    sums, masked = streamed(a, b, [700, 1900])
    got = masked.masked_cosine(sums.cross, sums.sumsq_a, sums.sumsq_b)
    np.testing.assert_allclose(got, brute_force(a, b), atol=2e-6)
    assert got[:, 19].max() == 0.0  # a dead feature is joined to nothing
    assert got[np.arange(11), np.arange(11)].min() > 0.5  # the features that follow A are found


def test_shards_merge_to_one_pass(acts):
    a, b = acts
    one_sums, one = streamed(a, b, [])
    parts = [streamed(a[lo:hi], b[lo:hi], []) for lo, hi in ((0, 1234), (1234, 2000), (2000, 3000))]
    merged = parts[0][1].merge(parts[1][1]).merge(parts[2][1])
    assert merged.n == one.n and (merged.fired_a == one.fired_a).all() and (merged.fired_b == one.fired_b).all()
    np.testing.assert_allclose(merged.b2_where_a, one.b2_where_a, rtol=1e-6)
    np.testing.assert_allclose(merged.a2_where_b, one.a2_where_b, rtol=1e-6)


def test_edges_keep_the_threshold_and_leave_out_ultralow_features(acts):
    a, b = acts
    sums, masked = streamed(a, b, [1500])
    full = brute_force(a, b)
    i, j, score = masked.edges(sums.cross, sums.sumsq_a, sums.sumsq_b, 0.4)
    assert len(score) and score.min() >= 0.4  # nothing below the threshold
    expected = {(x, y) for x, y in zip(*np.nonzero(full >= 0.4))}
    assert {(x, y) for x, y in zip(i.tolist(), j.tolist())} == expected  # 3,000 tokens: nothing is ultralow yet
    np.testing.assert_allclose(score, full[i, j], atol=2e-6)
    # Over 200,000 tokens (the same 3,000 and silence), A's feature 11 fires once: ultralow, so it has no edges.
    quiet = MaskedSums.zeros(a.shape[1], b.shape[1])
    quiet.n = 197_000
    padded = masked.merge(quiet)
    assert not padded.kept()[0][11] and padded.kept()[0][:11].all() and not padded.kept()[1][19]
    i2, _, _ = padded.edges(sums.cross, sums.sumsq_a, sums.sumsq_b, 0.4)
    assert 11 not in set(i2.tolist()) and set(i2.tolist()) == set(i.tolist()) - {11}


def test_what_a_pair_measures():
    training = {"d_sae": 64, "k": 8, "seed": 0, "lr": 1e-3}
    assert pair_relation(False, "sae", "sae", 64, 64, training, training) == "universality"
    assert pair_relation(False, "neuron", "neuron", 64, 64, None, None) == "universality"
    assert pair_relation(True, "sae", "sae", 64, 64, training, dict(training, seed=1)) == "seed control"
    assert pair_relation(True, "sae", "sae", 64, 64, training, dict(training, seed=1, lr=3e-4)) == "other"
    assert pair_relation(True, "sae", "sae", 64, 128, training, dict(training, d_sae=128)) == "splitting"
    assert pair_relation(True, "neuron", "sae", 64, 64, None, training) == "other"
