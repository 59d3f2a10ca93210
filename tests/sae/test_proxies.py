"""Specificity proxies: token scores against a hand computation (a partial UTF-8 token included), Python's tokenize
markers, and the per-unit statistics against a direct computation and across shards."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sae.analysis.proxies import BUILTIN, python_spans, resolve
from sae.analysis.proxy_scores import OUTSIDE, Vocabulary, best_suffix_sums, buckets, token_ratios, token_scores
from sae.analysis.proxy_stats import ProxyStats
from sae.errors import MonoscopeError

# ids: 0 end-of-text, 1 "x", 2 " = ", 3 "'", 4 "ab", 5 and 6 the two bytes of "ا" (U+0627: d8 a7), 7 the first byte
# of "§" (U+00A7: c2 a7, whose second byte is token 6 too), 8 newline
VOCAB = Vocabulary.of([b"", b"x", b" = ", b"'", b"ab", b"\xd8", b"\xa7", b"\xc2", b"\n"])
# "x = 'ab'\n" then "اا§\n" and end-of-text: 16 bytes, 14 tokens
TRAIN = np.array([1, 2, 3, 4, 3, 8, 5, 6, 5, 6, 7, 6, 8, 0])


def by_name(*names):
    return [p for p in BUILTIN if p.name in names]


def test_scores_match_a_hand_computation():
    proxies = by_name("string_literal", "base64", "arabic")  # in BUILTIN's order: string, base64, arabic
    ratios = token_ratios(proxies, VOCAB, TRAIN, TRAIN, separator=0)
    held_out = np.array([1, 2, 3, 4, 3, 8, 5, 6, 8, 7, 6, 8, 0])  # "x = 'ab'\n" "ا\n" "§\n"
    scores = token_scores(proxies, ratios, VOCAB, held_out, separator=0)
    string, base64, arabic = scores.T
    # string literal: P(b | string) from the 4 bytes of 'ab' in training (add-one over 256), P(b) from its 16 bytes:
    # the quote is 3/260 against 3/272, a and b 2/260 against 2/272 each.
    r = math.log(272 / 260)
    np.testing.assert_allclose(string[[2, 3, 4]], [r, 3 * r, 4 * r], rtol=1e-6)  # the best span grows along the run
    assert (string[[0, 1, 5, 6, 7]] == OUTSIDE).all()
    # base64: 1/64 a character against P(x) = P(a) = P(b) = 2/272
    np.testing.assert_allclose(base64[[0, 3]], [math.log(136 / 64), 2 * math.log(136 / 64)], rtol=1e-6)
    assert base64[1] == base64[2] == OUTSIDE  # spaces, =, quotes are no base64
    # Arabic by Bayes: 4 of the 14 training tokens are Arabic; the partial token d8 always is, a7 in 2 of its 3
    # occurrences (the third is the end of §): the paper's fraction of occurrences.
    prior = 4 / 14
    np.testing.assert_allclose(arabic[6], math.log(1 / prior), rtol=1e-6)
    np.testing.assert_allclose(arabic[7], math.log(1 / prior) + math.log((2 / 3) / prior), rtol=1e-6)  # span d8 a7
    np.testing.assert_allclose(arabic[10], math.log((2 / 3) / prior), rtol=1e-6)  # a7 after c2: alone
    assert arabic[9] == OUTSIDE and arabic[8] == OUTSIDE
    assert buckets(scores)[6, 2] == 2 and buckets(scores)[0, 0] == 0


def test_best_suffix_sums_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(1, 30))
        values, inside = rng.normal(size=n) * 3, rng.random(n) < 0.7
        got = best_suffix_sums(values, inside)
        for i in range(n):
            j = i
            while j > 0 and inside[j - 1]:
                j -= 1
            want = max(values[k: i + 1].sum() for k in range(j, i + 1)) if inside[i] else -np.inf
            assert got[i] == pytest.approx(want)


def test_python_markers_come_from_tokenize():
    source = ('"""Module doc."""\nimport os  # a comment\n\n@property\ndef f(x=0x1F):\n    """Doc."""\n'
              '    return "s" + x\n')
    spans = {k: [source[a:b] for a, b in v] for k, v in python_spans(source).items()}
    assert spans["docstring"] == ['"""Module doc."""', '"""Doc."""']
    assert spans["string"] == ['"""Module doc."""', '"""Doc."""', '"s"']
    assert spans["comment"] == ["# a comment"]
    assert spans["decorator"] == ["@property\n"]
    assert spans["number"] == ["0x1F"]
    assert python_spans("s = 'unterminated\n")["string"] == []  # a tokenize error keeps what came before


def test_user_proxies_and_bad_names():
    (user,) = resolve((), ("regex:TODO|FIXME",))
    assert user.name == "regex:TODO|FIXME" and user.kind == "span"
    with pytest.raises(MonoscopeError, match="unknown proxy"):
        resolve(("strings",))
    with pytest.raises(MonoscopeError, match="not a regular expression"):
        resolve((), ("regex:(",))


def _batches(seed: int, n_batches: int, n: int, u: int, k: int, signed: bool):
    rng = np.random.default_rng(seed)
    for _ in range(n_batches):
        acts = rng.normal(size=(n, u)).astype(np.float32)
        acts = acts if signed else np.where(rng.random((n, u)) < 0.3, np.abs(acts), 0).astype(np.float32)
        scores = np.where(rng.random((n, k)) < 0.4, rng.normal(size=(n, k)) * 4, OUTSIDE).astype(np.float32)
        yield acts, scores


def _update(stats: ProxyStats, acts: np.ndarray, scores: np.ndarray, signed: bool) -> None:
    rows, units = np.nonzero(acts > 0)
    stats.update(scores, rows, units, acts[rows, units], torch.from_numpy(acts) if signed else None)


@pytest.mark.parametrize("signed", [False, True], ids=["feature", "neuron"])
def test_unit_statistics_match_a_direct_computation_and_merge_to_the_bit(signed):
    u, k = 7, 3
    batches = list(_batches(1, 4, 50, u, k, signed))
    whole, first, second = ProxyStats(u, k), ProxyStats(u, k), ProxyStats(u, k)
    for i, (acts, scores) in enumerate(batches):
        _update(whole, acts, scores, signed)
        _update(first if i < 2 else second, acts, scores, signed)
    merged = first.merge(second)
    for name, value in vars(whole).items():
        assert np.array_equal(value, getattr(merged, name)), name  # fixed point: to the bit
    acts = np.concatenate([a for a, _ in batches]).astype(np.float64)
    scores = np.concatenate([s for _, s in batches]).astype(np.float64)
    firing = (acts > 0).sum(0)
    out = merged.arrays(firing)
    q = (scores > 0).astype(np.float64)
    for unit in range(u):
        for j in range(k):
            assert out["proxy_corr"][unit, j] == pytest.approx(np.corrcoef(acts[:, unit], scores[:, j])[0, 1], abs=1e-5)
            assert out["proxy_corr_pos"][unit, j] == pytest.approx(np.corrcoef(acts[:, unit], q[:, j])[0, 1], abs=1e-5)
            fires = acts[:, unit] > 0
            assert out["proxy_fire_share"][unit, j] == pytest.approx(q[fires, j].mean(), abs=1e-6)
            assert out["proxy_recall"][unit, j] == pytest.approx(fires[q[:, j] > 0].mean(), abs=1e-6)
            positive = np.maximum(acts[:, unit], 0)
            assert out["proxy_act_share"][unit, j] == pytest.approx((positive * q[:, j]).sum() / positive.sum(),
                                                                    abs=1e-6)


def test_split_scores_are_cached_per_corpus_and_proxy_set(tiny_run_copy):
    """The held-out split is scored once per corpus and proxy set (the run's .cache/proxy-scores/); another set is
    scored afresh and replaces it, and a cached read gives the very scores of a fresh one."""
    from sae.analysis.proxy_run import CACHE, heldout_scores

    proxies = resolve(("digits", "string_literal"), ())
    first = heldout_scores(tiny_run_copy, proxies, 10)
    [cached] = list((tiny_run_copy / CACHE).glob("*.npy"))
    again = heldout_scores(tiny_run_copy, proxies, 10)
    np.testing.assert_array_equal(first, again)
    assert (first[:, 0] == OUTSIDE).all() and (first[:, 1:] > OUTSIDE).any()
    cached.write_bytes(b"")  # a cache that is read would now fail: a different set must not read it
    other = heldout_scores(tiny_run_copy, resolve(("digits",), ()), 10)
    np.testing.assert_array_equal(other[..., 0], first[..., 0])
    assert [p.name for p in (tiny_run_copy / CACHE).glob("*.npy")] != [cached.name]


def test_stacked_histograms_match_a_direct_count():
    """ProxyHist (pass 2): per unit, proxy, interval and score bucket, the firing entries counted and their
    activations summed, entry by entry; streamed in batches of whole tokens."""
    from sae.analysis.proxy_stats import ProxyHist

    rng = np.random.default_rng(5)
    u, k, i, n = 6, 3, 4, 90
    token_buckets = np.where(rng.random((n, k)) < 0.6, 0, rng.integers(1, 4, (n, k))).astype(np.uint8)
    fires = rng.random((n, u)) < 0.4
    tokens, units = np.nonzero(fires)  # token order
    values = rng.random(len(units)).astype(np.float32) + 0.01
    intervals = rng.integers(0, i, len(units))
    hist = ProxyHist(u, k, i, token_buckets)
    for lo, hi in ((0, 25), (25, 26), (26, 90)):
        at = (tokens >= lo) & (tokens < hi)
        hist.update(units[at], intervals[at], values[at], tokens[at])
    out = hist.arrays()
    counts = np.zeros((u, k, i, 4), np.int64)
    acts = np.zeros((u, k, i, 4), np.float64)
    for t, unit, value, interval in zip(tokens, units, values, intervals):
        for j in range(k):
            counts[unit, j, interval, token_buckets[t, j]] += 1
            acts[unit, j, interval, token_buckets[t, j]] += value
    np.testing.assert_array_equal(out["proxy_hist_counts"], counts)
    np.testing.assert_allclose(out["proxy_hist_acts"], acts, rtol=1e-5, atol=1e-5)
    assert (counts[..., 1:] > 0).any() and (counts[..., 0] > 0).any()
