"""`monoscope analyze` on the tiny run: contract files, brute force with the real LM, logit effects, links, CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from sae import lm, rundir
from sae.analysis.run import run_analysis
from sae.analysis.shard import AnalysisConfig
from sae.corpus.build import load_heldout
from sae.lm.losses import keep_bos
from sae.dictionary.model import SAEConfig, SparseAutoencoder
from sae.dictionary.saelens_format import save_sae

CFG = AnalysisConfig(n_tokens=2000, batch_sequences=16, loss_batch_sequences=5, top_k=6, context_before=4,
                     context_after=2, samples_per_interval=3, act_hist_bins=9, logit_k=4, logit_hist_bins=7, n_links=3)
D_SAE = 96
# The analysis output contract (docs/architecture.md, "Analysis output"): each basis's analysis/<basis>/units.npz holds
# exactly these arrays, one row per unit, with these dtypes (`monoscope ingest` and the web app read them by name).
UNIT_DTYPES = {
    "firing_count": "int64", "density": "float64", "max_activation": "float32", "mean_activation": "float32",
    "act_hist_edges": "float32", "act_hist_counts": "int64", "top_count": "int32", "top_values": "float32",
    "top_token_ids": "int32", "top_acts": "float32", "top_sequence": "int64", "top_position": "int32",
    "interval_edges": "float32", "interval_counts": "int64", "interval_sample_count": "int32",
    "interval_values": "float32", "interval_token_ids": "int32", "interval_acts": "float32",
    "logit_top_ids": "int32", "logit_top_values": "float32", "logit_bottom_ids": "int32",
    "logit_bottom_values": "float32", "logit_hist_edges": "float32", "logit_hist_counts": "int64",
    "top_token_entropy": "float32", "top_effects": "float32", "interval_effects": "float32",
    "review_top_count": "int32", "review_top_values": "float32", "review_top_token_ids": "int32",
    "review_top_acts": "float32", "review_interval_sample_count": "int32", "review_interval_values": "float32",
    "review_interval_token_ids": "int32", "review_interval_acts": "float32",
    "proxy_names": "<U14", "proxy_corr": "float32", "proxy_corr_pos": "float32", "proxy_fire_share": "float32",
    "proxy_act_share": "float32", "proxy_recall": "float32", "proxy_hist_counts": "int32", "proxy_hist_acts": "float32",
}


def add_sae(run_dir, name="tiny", seed=0):
    """Write a random SAE stage into run_dir/saes/<name> through the run-directory contract."""
    g = torch.Generator().manual_seed(seed)
    sae = SparseAutoencoder(SAEConfig(d_in=64, d_sae=D_SAE)).init_weights(g)
    with torch.no_grad():
        sae.b_enc.fill_(-0.3)
    with rundir.write_stage(run_dir / "saes" / name, stage="sae", config={"seed": seed}, inputs={}) as tmp:
        save_sae(sae, tmp)
    return sae


@pytest.fixture(scope="module")
def analysed(tiny_run, tmp_path_factory):
    import shutil

    run_dir = tmp_path_factory.mktemp("analysed") / "run"
    shutil.copytree(tiny_run, run_dir)
    sae = add_sae(run_dir)
    metrics = run_analysis(run_dir, cfg=CFG, device="cpu", progress=False, log=lambda m: None)
    return run_dir, sae, metrics


def load(run_dir, basis):
    folder = run_dir / "analysis" / basis
    return json.loads((folder / "basis.json").read_text()), dict(np.load(folder / "units.npz"))


def test_writes_the_contract_files_and_matches_brute_force(analysed):
    run_dir, sae, metrics = analysed
    assert set(metrics) == {"neurons", "tiny"}
    model = lm.load_lm(run_dir)
    tokens = torch.from_numpy(load_heldout(run_dir, CFG.n_tokens).astype(np.int64))  # the analysed rows, in order
    x = lm.mlp_activations(model, tokens)[:, 1:].reshape(-1, 64)  # statistics leave BOS (position 0) out
    for name, f, kind in (("neurons", x, "neuron"), ("tiny", sae.encode(x).detach(), "sae")):
        meta, units = load(run_dir, name)
        assert meta["kind"] == kind and meta["hook_name"] == lm.HOOK_POST
        assert meta["n_tokens"] == tokens.numel() and meta["metrics"]["n_tokens"] == len(x) == tokens.numel() - len(tokens)
        assert {k: str(v.dtype) for k, v in units.items()} == UNIT_DTYPES
        n_units = f.shape[1]
        assert units["top_token_ids"].shape == (n_units, CFG.top_k, 7)
        assert units["interval_acts"].shape == (n_units, 11, CFG.samples_per_interval, 7)
        f = f.numpy()
        np.testing.assert_array_equal(units["firing_count"], (f > 0).sum(0))
        np.testing.assert_array_equal(units["max_activation"], np.maximum(f.max(0), 0))
        top = -np.sort(-f, axis=0)[: CFG.top_k].T  # [U, K]
        real = units["top_count"][:, None] > np.arange(CFG.top_k)
        np.testing.assert_array_equal(units["top_values"][real], top[real])
        np.testing.assert_array_equal(units["act_hist_counts"].sum(1), units["firing_count"])
        m = meta["metrics"]
        assert m["l0"] == pytest.approx((f > 0).sum() / len(f))
        with torch.no_grad():
            assert m["loss_clean"] == pytest.approx(float(lm.lm_loss(model, tokens)), rel=1e-5)
            zeroed = float(lm.lm_loss(model, tokens, lambda post: keep_bos(post, torch.zeros_like(post))))
            assert m["loss_zero_ablation"] == pytest.approx(zeroed, rel=1e-5)
    m = load(run_dir, "tiny")[0]["metrics"]
    with torch.no_grad():
        spliced = float(lm.lm_loss(model, tokens, lambda post: keep_bos(post, sae(post))))
        assert m["loss_reconstructed"] == pytest.approx(spliced, rel=1e-4)
    assert m["loss_recovered"] == pytest.approx(
        (m["loss_zero_ablation"] - m["loss_reconstructed"]) / (m["loss_zero_ablation"] - m["loss_clean"]))
    assert load(run_dir, "neurons")[0]["metrics"]["loss_reconstructed"] is None


def test_logit_effects_equal_the_direct_matrix_product(analysed):
    run_dir, sae, _ = analysed
    W_out, W_U = lm.unembed_directions(lm.load_lm(run_dir))
    for name, direct in (("neurons", W_out @ W_U), ("tiny", sae.W_dec.detach() @ W_out @ W_U)):
        units = load(run_dir, name)[1]
        top = direct.topk(CFG.logit_k, dim=1)
        np.testing.assert_allclose(units["logit_top_values"], top.values.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(units["logit_top_ids"], top.indices.numpy())
        bottom = direct.topk(CFG.logit_k, dim=1, largest=False)
        np.testing.assert_allclose(units["logit_bottom_values"], bottom.values.numpy(), rtol=1e-5, atol=1e-6)
        assert (units["logit_hist_counts"].sum(1) == direct.shape[1]).all()


def _ablated_logprob_change(model, tokens, seq, pos, ablate) -> float:
    """Brute force: the full model, the unit ablated at (seq, pos) only; Δ log p of the actual next token."""
    row = tokens[seq: seq + 1]

    def hook(post, hook):  # post [1, T, d_mlp]
        post = post.clone()
        post[0, pos] = ablate(post[0, pos])
        return post

    with torch.no_grad():
        clean = model(row).log_softmax(-1)[0, pos, row[0, pos + 1]]
        with model.hooks(fwd_hooks=[(lm.HOOK_POST, hook)]):
            ablated = model(row).log_softmax(-1)[0, pos, row[0, pos + 1]]
    return float(ablated - clean)


def test_ablation_effects_equal_ablating_one_position_in_the_full_model(analysed):
    run_dir, sae, _ = analysed
    model = lm.load_lm(run_dir)
    tokens = torch.from_numpy(load_heldout(run_dir).astype(np.int64))  # top_sequence indexes these rows
    n_ctx, before = tokens.shape[1], CFG.context_before
    checked = 0
    for name in ("neurons", "tiny"):
        meta, units = load(run_dir, name)
        assert meta["ablation_effects"] is True
        effects, acts = units["top_effects"], units["top_acts"]
        assert effects.shape == acts.shape
        silent = (acts == 0) & np.isfinite(effects)
        assert (effects[silent] == 0).all()  # ablating a silent unit changes nothing
        for u in range(0, acts.shape[0], max(1, acts.shape[0] // 6)):
            for k in range(int(units["top_count"][u])):
                seq, center = int(units["top_sequence"][u, k]), int(units["top_position"][u, k])
                for j in np.nonzero(acts[u, k])[0][:3]:
                    pos = center - before + int(j)
                    if pos in (0, n_ctx - 1):
                        assert np.isnan(effects[u, k, j])  # BOS is never ablated; the last token has no next one
                        continue
                    if name == "neurons":
                        fn = lambda v, u=u: torch.where(torch.arange(len(v)) == u, 0.0, v)  # noqa: E731
                    else:
                        fn = lambda v, u=u: v - sae.encode(v[None])[0, u] * sae.W_dec[u]  # noqa: E731
                    expected = _ablated_logprob_change(model, tokens, seq, pos, fn)
                    assert effects[u, k, j] == pytest.approx(expected, abs=2e-5, rel=1e-3), (name, u, k, j)
                    checked += 1
        assert np.isnan(units["interval_effects"]).any() and (units["interval_effects"][np.isfinite(
            units["interval_effects"])] != 0).any()
    assert checked > 20  # not vacuous


def test_links_match_the_decoder(analysed):
    run_dir, sae, _ = analysed
    links = dict(np.load(run_dir / "analysis" / "tiny" / "links.npz"))
    W = sae.W_dec.detach()
    u = 5
    best = W[u].abs().argsort(descending=True)[: CFG.n_links]
    np.testing.assert_array_equal(links["feature_neuron_ids"][u], best.numpy())
    np.testing.assert_allclose(links["feature_neuron_weights"][u], W[u, best].numpy())
    cos = torch.nn.functional.normalize(W, dim=1) @ torch.nn.functional.normalize(W, dim=1).T
    cos.fill_diagonal_(-2)
    np.testing.assert_array_equal(links["feature_feature_ids"][u], cos[u].topk(CFG.n_links).indices.numpy())
    np.testing.assert_array_equal(links["neuron_feature_ids"][7], W[:, 7].abs().topk(CFG.n_links).indices.numpy())


def test_up_to_date_bases_are_skipped_and_force_redoes(analysed):
    run_dir, _, _ = analysed
    before = rundir.fingerprint(run_dir / "analysis" / "tiny")
    assert run_analysis(run_dir, cfg=CFG, device="cpu", progress=False, log=lambda m: None) == {}
    redone = run_analysis(run_dir, sae_names=["tiny"], cfg=CFG, force=True, device="cpu", progress=False,
                          log=lambda m: None)
    assert set(redone) == {"neurons", "tiny"}
    assert rundir.fingerprint(run_dir / "analysis" / "tiny") == before  # deterministic: same files, same digest


def test_cli_refuses_an_unknown_sae_in_one_line(analysed):
    run_dir, _, _ = analysed
    out = subprocess.run([sys.executable, "-m", "app.cli", "analyze", "--run", str(run_dir), "--sae", "nope"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "no trained SAE 'nope'" in out.stderr


@pytest.mark.parametrize("compiled", [True, False], ids=["numba", "torch"])
def test_the_fast_log_softmax_equals_torch_and_falls_back_out_of_range(compiled):
    """The effects' log-softmax of rows[i] − coef·deltas[j] (exp(x / scale) against exp(bias), never forming x)
    agrees with torch's, by the compiled kernel and by its torch fallback, also for rows whose sum overflows (a logit
    200 above the shift) or vanishes (every logit 200 below it)."""
    from sae.analysis.effects import _Softmax

    gen = torch.Generator().manual_seed(0)
    bias, rows, deltas = torch.randn(50, generator=gen), torch.randn(3, 50, generator=gen) - 3, torch.randn(2, 50)
    rows[1, 7] += 200.0
    rows[2] -= 200.0
    row_of, delta_of = torch.tensor([0, 1, 2, 0, 2]), torch.tensor([0, 1, 0, 1, 1])
    coef, scale, ids = torch.tensor([0.0, 0.5, 0.0, 2.0, -1.5]), torch.tensor([1.0, 0.5, 0.25, 2.0, 1.0]), \
        torch.tensor([0, 7, 3, 49, 11])
    x = rows[row_of] - coef[:, None] * deltas[delta_of]
    expected = torch.log_softmax(x / scale[:, None] + bias, -1).gather(1, ids[:, None])[:, 0]
    softmax = _Softmax(bias)
    assert softmax.kernels is not None, "numba is a dependency: the compiled sums must load"
    if not compiled:
        softmax.kernels = None
    got = softmax.logprob(rows, row_of, deltas, delta_of, coef, scale, ids)
    assert torch.allclose(got, expected, atol=1e-5)
