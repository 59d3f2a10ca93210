"""The streaming analysis against brute force over dense activations, on synthetic activations and a random SAE.

BOS (position 0) gets large activations here, as a real LM's often does: statistics must leave it out, and context
windows must still show it (sae.conventions.BOS_POSITION)."""

import numpy as np
import pytest
import torch

from sae.analysis.reduce import finish
from sae.analysis.shard import AnalysisConfig, Basis, analyze_shard
from sae.analysis.state import reservoir_keys
from sae.dictionary.model import SAEConfig, SparseAutoencoder

N_SEQ, T, VOCAB, D_IN, D_SAE = 24, 16, 40, 16, 48
CFG = AnalysisConfig(batch_sequences=5, top_k=4, context_before=3, context_after=2, samples_per_interval=2,
                     act_hist_bins=7, seed=3, review_top_k=3, review_samples_per_interval=2)


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (N_SEQ, T), generator=g).numpy().astype(np.int32)
    emb = torch.randn(VOCAB, D_IN, generator=g)
    prev = torch.randn(VOCAB, D_IN, generator=g)

    def acts_fn(batch):  # [B, T] -> [B, T, D_IN]: depends on the token and the one before, like a tiny LM
        shifted = torch.cat([batch[:, :1], batch[:, :-1]], dim=1)
        out = emb[batch] + 0.5 * prev[shifted]
        out[:, 0] += 6.0  # BOS: large everywhere, so it would win every top-k and shift every mean if counted
        return out

    sae = SparseAutoencoder(SAEConfig(D_IN, D_SAE)).init_weights(g)
    with torch.no_grad():
        sae.b_enc.fill_(-0.8)
        sae.b_dec.normal_(generator=g)
    x = acts_fn(torch.from_numpy(tokens).long()).reshape(-1, D_IN)
    dense = {"neurons": x, "sae": sae.encode(x).detach()}
    bases = [Basis("neurons", D_IN), Basis("sae", D_SAE, sae)]
    return tokens, acts_fn, bases, dense


def counted(f: np.ndarray) -> np.ndarray:
    """Zero the BOS rows of dense activations [N_SEQ * T, U]: what the statistics see."""
    out = f.copy()
    out[np.arange(len(f)) % T == 0] = 0
    return out


def run(setup, tmp_path, cuts):
    tokens, acts_fn, bases, _ = setup
    shards = [analyze_shard(acts_fn, None, tokens, (a, b), bases, CFG, tmp_path) for a, b in zip(cuts, cuts[1:])]
    results = finish(shards, bases, tokens, CFG)
    for result in results:  # as the analysis adds them when it writes units.npz
        result.arrays.update(result.token_ids(tokens, CFG.context_before))
    return results


@pytest.fixture(scope="module")
def whole(setup, tmp_path_factory):
    return run(setup, tmp_path_factory.mktemp("whole"), [0, N_SEQ])


@pytest.mark.parametrize("b,name", [(0, "neurons"), (1, "sae")])
def test_counts_density_max_mean_and_histogram(setup, whole, b, name):
    f = counted(setup[3][name].numpy())
    n_counted = N_SEQ * (T - 1)
    arrays, summary = whole[b].arrays, whole[b].summary
    firing = (f > 0).sum(0)
    assert firing.max() < n_counted and (firing > 0).mean() > 0.5  # sparse units, and a few dead ones in the SAE
    np.testing.assert_array_equal(arrays["firing_count"], firing)
    np.testing.assert_allclose(arrays["density"], firing / n_counted)
    np.testing.assert_array_equal(arrays["max_activation"], f.max(0))
    mean = np.where(f > 0, f, 0).sum(0) / np.maximum(firing, 1)
    np.testing.assert_allclose(arrays["mean_activation"], mean, rtol=1e-5)
    np.testing.assert_array_equal(arrays["act_hist_counts"].sum(1), firing)
    assert summary["metrics"]["l0"] == pytest.approx(firing.sum() / n_counted)
    assert summary["metrics"]["n_tokens"] == n_counted


@pytest.mark.parametrize("b,name", [(0, "neurons"), (1, "sae")])
def test_top_k_are_the_k_largest_with_their_windows(setup, whole, b, name):
    tokens = setup[0]
    shown = setup[3][name].numpy()  # windows show BOS too
    f = counted(shown)
    arrays = whole[b].arrays
    k, before, w = CFG.top_k, CFG.context_before, CFG.context_before + 1 + CFG.context_after
    for u in range(f.shape[1]):
        order = np.lexsort((np.arange(len(f)), -f[:, u]))[:k]
        order = order[f[order, u] > 0]
        n = len(order)
        assert arrays["top_count"][u] == n
        np.testing.assert_array_equal(arrays["top_values"][u, :n], f[order, u])
        assert np.all(arrays["top_values"][u, n:] == -np.inf)
        np.testing.assert_array_equal(arrays["top_sequence"][u, :n], order // T)
        np.testing.assert_array_equal(arrays["top_position"][u, :n], order % T)
        for j, g in enumerate(order):
            s, p = divmod(g, T)
            for i in range(w):
                q = p - before + i
                inside = 0 <= q < T
                assert arrays["top_token_ids"][u, j, i] == (tokens[s, q] if inside else -1)
                assert arrays["top_acts"][u, j, i] == (max(shown[s * T + q, u], 0) if inside else 0)
    assert (arrays["top_position"][arrays["top_count"] > 0, 0] != 0).all()  # never a BOS max token
    window_bos = [arrays["top_acts"][u, j, before - arrays["top_position"][u, j]]
                  for u in range(f.shape[1]) for j in range(arrays["top_count"][u])
                  if arrays["top_position"][u, j] <= before]
    assert window_bos  # windows reach BOS (and the loop above checked they show its activation)
    if name == "neurons":  # the neurons' BOS activation is the large one acts_fn put there
        assert max(window_bos) > 3.0


@pytest.mark.parametrize("b,name", [(0, "neurons"), (1, "sae")])
def test_interval_samples_lie_in_their_interval_and_shares_match(setup, whole, b, name):
    f = counted(setup[3][name].numpy())
    arrays = whole[b].arrays
    edges, counts = arrays["interval_edges"], arrays["interval_counts"]
    for u in range(f.shape[1]):
        v = f[f[:, u] > 0, u]
        if len(v) == 0:  # dead: no intervals, no samples
            assert counts[u].sum() == 0 and arrays["interval_sample_count"][u].sum() == 0
            continue
        assert edges[u, 0] == 0 and edges[u, -1] == v.max()
        brute = np.histogram(v, bins=edges[u])[0]  # numpy: half-open bins, the last one closed, as ours
        np.testing.assert_array_equal(counts[u], brute)
        assert counts[u].sum() / len(v) == pytest.approx(1.0)
        for i in range(CFG.n_intervals):
            n = arrays["interval_sample_count"][u, i]
            assert n == min(brute[i], CFG.samples_per_interval)
            vals = arrays["interval_values"][u, i, :n]
            assert np.all(vals > 0) and np.all(vals >= edges[u, i]) and np.all(vals <= edges[u, i + 1])
            np.testing.assert_array_equal(arrays["interval_acts"][u, i, :n, CFG.context_before], vals)
            assert np.all(np.isin(vals, v))


def covered(tokens: np.ndarray) -> set[int]:
    """The global tokens the windows around these centres show (clipped to their sequences)."""
    out = set()
    for c in tokens[tokens >= 0].tolist():
        s, p = divmod(c, T)
        out.update(s * T + q for q in range(max(p - CFG.context_before, 0), min(p + CFG.context_after + 1, T)))
    return out


def text(tokens: np.ndarray, center: int) -> tuple:
    """The token ids the window around a centre shows (those inside its sequence)."""
    s, p = divmod(center, T)
    return tuple(int(tokens[s, q]) for q in range(p - CFG.context_before, p + CFG.context_after + 1) if 0 <= q < T)


@pytest.mark.parametrize("b,name", [(0, "neurons"), (1, "sae")])
def test_review_sample_shares_no_token_with_the_open_windows(setup, whole, b, name):
    """The review windows (sae/analysis/review_sample.py): the largest activations and a hashed draw per interval
    from the tokens whose windows share no token with the unit's open windows (top-k and interval samples) and show
    none of their texts."""
    tokens = setup[0]
    shown = setup[3][name].numpy()
    f = counted(shown)
    a = whole[b].arrays
    top_tokens = a["top_sequence"] * T + a["top_position"]
    found_top = found_samples = 0
    for u in range(f.shape[1]):
        v = f[:, u]
        firing = np.nonzero(v > 0)[0]
        keys = reservoir_keys(firing, np.full(len(firing), u), CFG.seed)
        bucket = np.searchsorted(a["interval_edges"][u], v[firing], side="right") - 1
        bucket = np.minimum(bucket, CFG.n_intervals - 1)
        by_key = [firing[bucket == i][np.lexsort((firing[bucket == i], keys[bucket == i]))]
                  for i in range(CFG.n_intervals)]  # each interval's firing tokens by (key, token)
        open_samples = [tokens[:CFG.samples_per_interval] for tokens in by_key]
        for i in range(CFG.n_intervals):  # the open sample is the S smallest keys, as before
            n = a["interval_sample_count"][u, i]
            np.testing.assert_array_equal(a["interval_values"][u, i, :n], v[open_samples[i]])
        open_centers = np.concatenate([top_tokens[u, : a["top_count"][u]], *open_samples])
        shown_tokens, shown_texts = covered(open_centers), {text(tokens, c) for c in open_centers.tolist()}
        clear = np.array([not covered(np.array([t])) & shown_tokens and text(tokens, t) not in shown_texts
                          for t in firing], dtype=bool)
        # Top: a prefix of the clear tokens by value (desc), token (asc).
        order = firing[clear][np.lexsort((firing[clear], -v[firing[clear]]))]
        n = a["review_top_count"][u]
        np.testing.assert_array_equal(a["review_top_values"][u, :n], v[order[:n]])
        assert np.all(a["review_top_values"][u, n:] == -np.inf)
        np.testing.assert_array_equal(a["review_top_acts"][u, :n, CFG.context_before], v[order[:n]])
        found_top += n
        # Intervals: a prefix of each interval's clear tokens after its open sample, by key.
        for i in range(CFG.n_intervals):
            rest = by_key[i][CFG.samples_per_interval:]
            rest = rest[[not covered(np.array([t])) & shown_tokens and text(tokens, t) not in shown_texts
                         for t in rest]] if len(rest) else rest
            n = a["review_interval_sample_count"][u, i]
            np.testing.assert_array_equal(a["review_interval_values"][u, i, :n], v[rest[:n]])
            np.testing.assert_array_equal(a["review_interval_acts"][u, i, :n, CFG.context_before], v[rest[:n]])
            found_samples += n
    assert found_top > 0 and found_samples > 0


def test_merging_two_shards_equals_the_whole(setup, whole, tmp_path):
    merged = run(setup, tmp_path, [0, 7, N_SEQ])
    for one, two in zip(whole, merged):
        a, m, sa, sm = one.arrays, two.arrays, one.summary, two.summary
        assert a.keys() == m.keys()
        for key in a:
            if key == "mean_activation":
                np.testing.assert_allclose(a[key], m[key], rtol=1e-6)
            else:
                np.testing.assert_array_equal(a[key], m[key], err_msg=key)
        assert sa["density_histogram"] == sm["density_histogram"]


def test_sae_metrics_match_dense_reconstruction(setup, whole):
    x = setup[3]["neurons"][torch.arange(N_SEQ * T) % T != 0]  # BOS rows left out
    sae = setup[2][1].sae
    x_hat = sae(x).detach()
    m = whole[1].summary["metrics"]
    assert m["mse"] == pytest.approx(float((x_hat - x).pow(2).mean()), rel=1e-5)
    assert m["fvu"] == pytest.approx(float((x_hat - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()), rel=1e-5)
    assert m["explained_variance"] == pytest.approx(1 - m["fvu"])
    cos = torch.nn.functional.cosine_similarity(x, x_hat, dim=-1).mean()
    assert m["cossim"] == pytest.approx(float(cos), rel=1e-4)
    assert m["l2_ratio"] == pytest.approx(float((x_hat.norm(dim=-1) / x.norm(dim=-1)).mean()), rel=1e-4)
    assert whole[0].summary["metrics"]["cossim"] is None  # the neuron basis reconstructs nothing
    assert whole[0].summary["metrics"]["mse"] is None and m["loss_clean"] is None  # no loss_fn given
    hist = whole[1].summary["density_histogram"]
    assert sum(hist["counts"]) + hist["dead"] == D_SAE


def test_topk_sae_basis(setup, tmp_path):
    tokens, acts_fn, _, dense = setup
    g = torch.Generator().manual_seed(1)
    sae = SparseAutoencoder(SAEConfig(D_IN, D_SAE, architecture="topk", k=3)).init_weights(g)
    [result] = finish([analyze_shard(acts_fn, None, tokens, (0, N_SEQ), [Basis("topk", D_SAE, sae)], CFG,
                                     tmp_path)], [Basis("topk", D_SAE, sae)], tokens, CFG)
    arrays, summary = result.arrays, result.summary
    f = sae.encode(dense["neurons"]).detach().numpy()[np.arange(N_SEQ * T) % T != 0]  # BOS rows left out
    np.testing.assert_array_equal(arrays["firing_count"], (f > 0).sum(0))
    np.testing.assert_array_equal(arrays["max_activation"], f.max(0))
    assert summary["metrics"]["l0"] == pytest.approx((f > 0).sum(1).mean()) and summary["metrics"]["l0"] <= 3
