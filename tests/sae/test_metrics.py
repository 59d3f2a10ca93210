"""Reconstruction and loss metrics: one definition (per-element MSE, FVU against the per-dimension mean), the same
figures in training's metrics.json and log.jsonl and in the analysis's basis.json."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from sae import lm
from sae.activations import LMActivations
from sae.analysis.run import run_analysis
from sae.analysis.shard import AnalysisConfig
from sae.dictionary import SAETrainConfig, train_sae_on_run
from sae.dictionary.metrics import ReconstructionSums, loss_recovered, reconstruction_metrics
from sae.dictionary.model import SAEConfig, SparseAutoencoder
from sae.dictionary.saelens_format import load_sae, save_sae
from sae.lm.heads import MLPHead, Readout
from sae.lm.head_losses import clean_rows, head_losses, spliced_rows
from sae.lm.losses import LossSums, add_losses, keep_bos, mean_activation

QUIET = dict(progress=False, log=lambda m: None)


def brute_force(x: torch.Tensor, x_hat: torch.Tensor) -> dict:
    x, x_hat = x.double(), x_hat.double()
    err = (x_hat - x).pow(2)
    return {"mse": float(err.mean()), "fvu": float(err.sum() / (x - x.mean(0)).pow(2).sum())}


def test_streamed_and_merged_sums_equal_brute_force_even_far_from_zero():
    g = torch.Generator().manual_seed(0)
    x = 1000.0 + torch.randn(1000, 12, generator=g)  # a large mean: Σx² − (Σx)²/N would lose most digits
    x_hat = x + 0.3 * torch.randn(1000, 12, generator=g)
    cuts = [0, 1, 170, 171, 600, 1000]
    parts = []
    for a, b in zip(cuts, cuts[1:]):
        part = ReconstructionSums()
        part.add(b - a, 2.0 * (b - a), l1=0.5 * (b - a), x=x[a:b], sq_err=float((x_hat[a:b] - x[a:b]).pow(2).sum()))
        parts.append(part)
    forward, backward = parts[0], parts[-1]
    for part in parts[1:]:
        forward = forward.merge(part)
    for part in parts[-2::-1]:
        backward = part.merge(backward)
    expected = brute_force(x, x_hat)
    for sums in (forward, backward):
        m = sums.metrics()
        assert m["mse"] == pytest.approx(expected["mse"], rel=1e-6)
        assert m["fvu"] == pytest.approx(expected["fvu"], rel=1e-5)
        assert m["l0"] == pytest.approx(2.0) and m["l1"] == pytest.approx(0.5)


def test_scaled_inputs_report_mse_in_raw_units_and_the_same_fvu():
    g = torch.Generator().manual_seed(1)
    x, x_hat = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g)
    scaled = ReconstructionSums()
    scaled.add(64, 0, x=x * 3.0, sq_err=float((3.0 * (x_hat - x)).pow(2).sum()))
    expected = brute_force(x, x_hat)
    assert scaled.metrics(scale=3.0)["mse"] == pytest.approx(expected["mse"], rel=1e-6)
    assert scaled.metrics(scale=3.0)["fvu"] == pytest.approx(expected["fvu"], rel=1e-6)
    without = ReconstructionSums()
    without.add(64, 10)  # a basis without reconstruction (the neurons): no mse, no fvu
    assert without.metrics() == {"mse": None, "fvu": None, "l0": 10 / 64, "l1": 0.0}


def test_reconstruction_metrics_mse_is_the_mean_over_tokens_and_dimensions():
    g = torch.Generator().manual_seed(2)
    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=40)).init_weights(g)
    x = torch.randn(300, 16, generator=g) + 2.0
    m = reconstruction_metrics(sae, x, chunk=64)
    with torch.no_grad():
        expected = brute_force(x, sae(x))
        f = sae.encode(x)
    assert m["mse"] == pytest.approx(expected["mse"], rel=1e-5)
    assert m["fvu"] == pytest.approx(expected["fvu"], rel=1e-5)
    assert m["l0"] == pytest.approx(float((f > 0).sum(1).double().mean()))


def test_loss_recovered_is_none_without_a_gap_or_a_splice():
    def metrics(**means):  # mean losses per token over 10 tokens
        return LossSums(10, {k: v * 10 for k, v in means.items()}, {}).metrics()

    m = metrics(clean=2.0, zero=4.0, mean=3.0, spliced=2.5)
    assert m["loss_recovered"] == pytest.approx(0.75) and m["loss_recovered_mean_ablation"] == pytest.approx(0.5)
    assert m["ce_loss_score"] == m["loss_recovered"] and m["ce_loss_with_sae"] == m["loss_reconstructed"] == 2.5
    assert metrics(clean=2.0, zero=2.0, spliced=3.0)["loss_recovered"] is None  # the ablation costs nothing
    m = metrics(clean=2.0, zero=4.0)
    assert m["loss_reconstructed"] is None and m["loss_recovered"] is None and m["kl_div_score"] is None
    assert LossSums().metrics()["loss_clean"] is None


def test_loss_metrics_match_sae_lens_on_the_tiny_lm(tiny_run, tmp_path):
    """CE with the SAE spliced in, clean CE and KL to the clean model, per token, from sae_lens's own get_recons_loss
    (BOS kept out of the splice through its ignore_tokens, as our convention keeps it); zero and mean ablation by
    brute force with BOS kept."""
    import warnings

    from sae_lens import SAE
    from sae_lens.evals import get_recons_loss
    from sae_lens.training.activation_scaler import ActivationScaler

    model = lm.load_lm(tiny_run)
    heldout = np.load(tiny_run / "corpus" / "heldout.npy").astype(np.int64)
    bos = int(heldout[0, 0])
    # Rows where only position 0 holds BOS (it also separates documents), so ignore_tokens skips exactly BOS.
    tokens = torch.from_numpy(heldout[(heldout[:, 1:] != bos).all(1)][:24])
    assert len(tokens) == 24 and (tokens[:, 0] == bos).all()
    sae = SparseAutoencoder(SAEConfig(d_in=64, d_sae=96)).init_weights(torch.Generator().manual_seed(0))
    save_sae(sae, tmp_path, meta={"model_name": "tiny"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = SAE.load_from_disk(tmp_path)
    ours = loss_recovered(model, tokens, sae, batch_rows=10)  # uneven chunks, merged
    with torch.no_grad():
        t = get_recons_loss(theirs, model, ActivationScaler(), tokens, compute_kl=True, compute_ce_loss=True,
                            ignore_tokens=[bos])
        # Our KL is over the predicted positions (all but the last), like the CE; sae_lens's covers every position.
        assert ours["kl_div_with_sae"] == pytest.approx(float(t["kl_div_with_sae"][:, :-1].mean()), rel=1e-4)
        assert ours["kl_div_with_sae"] > 1e-3  # not vacuous
        assert ours["ce_loss_with_sae"] == pytest.approx(float(t["ce_loss_with_sae"].mean()), rel=1e-5)
        assert ours["ce_loss_without_sae"] == pytest.approx(float(t["ce_loss_without_sae"].mean()), rel=1e-5)
        post = lm.mlp_activations(model, tokens)
        mean = post[:, 1:].reshape(-1, 64).mean(0)
        torch.testing.assert_close(mean_activation(torch.split(post, 5)), mean)  # streamed in uneven batches
        by_mean = float(lm.lm_loss(model, tokens, lambda p: keep_bos(p, mean.expand_as(p).clone())))
        by_zero = float(lm.lm_loss(model, tokens, lambda p: keep_bos(p, torch.zeros_like(p))))
    assert ours["loss_mean_ablation"] == pytest.approx(by_mean, rel=1e-5)
    assert ours["loss_zero_ablation"] == pytest.approx(by_zero, rel=1e-5)
    assert ours["loss_recovered_mean_ablation"] == pytest.approx(
        (by_mean - ours["loss_reconstructed"]) / (by_mean - ours["loss_clean"]))
    assert ours["kl_div_score"] == pytest.approx(
        (ours["kl_div_with_ablation"] - ours["kl_div_with_sae"]) / ours["kl_div_with_ablation"])
    assert ours["kl_div_with_mean_ablation"] > 0 and ours["kl_div_with_mean_ablation"] != ours["kl_div_with_ablation"]


@pytest.mark.parametrize("compiled", [True, False], ids=["numba", "torch"])
def test_head_losses_equal_the_spliced_forwards_on_the_tiny_lm(tiny_run, compiled, monkeypatch):
    """The one-layer shortcut (each replacement one MLP output and one unembedding, no forward) gives the sums of
    running the model once per replacement, by the compiled log-softmaxes and by their torch fallback (as without
    numba), and the tiny LM takes it (so the sae_lens comparison above checks it)."""
    if not compiled:
        monkeypatch.setattr("sae.lm.head_losses.kernels", lambda *args: None)  # what numba's absence gives
    model = lm.load_lm(tiny_run)
    tokens = torch.from_numpy(np.load(tiny_run / "corpus" / "heldout.npy")[:12].astype(np.int64))
    head = lm.mlp_head(model, tokens[:2])
    assert head is not None
    sae = SparseAutoencoder(SAEConfig(d_in=64, d_sae=96)).init_weights(torch.Generator().manual_seed(0))
    mid, post = lm.mid_and_post(model, tokens)
    mean = post[:, 1:].reshape(-1, 64).mean(0)
    with torch.no_grad():
        recon = sae(post)
        fast_shared, fast_own = head_losses(head, mid, post, tokens, mean, {"s": recon})
        _, shared, own = add_losses(lambda t, replace: lm.lm_logits(model, t, replace), tokens, mean,
                                    {"s": lambda p: recon})
    assert fast_shared.tokens == shared.tokens == 12 * (tokens.shape[1] - 1)
    for fast, slow in ((fast_shared, shared), (fast_own["s"], own["s"])):
        assert fast.ce.keys() == slow.ce.keys() and fast.kl.keys() == slow.kl.keys()
        for key in fast.ce:
            assert fast.ce[key] == pytest.approx(slow.ce[key], rel=1e-5), key
        for key in fast.kl:
            assert fast.kl[key] == pytest.approx(slow.kl[key], rel=1e-3, abs=1e-3), key
            assert fast.kl[key] > 1e-2  # not vacuous
    capped = lm.load_lm(tiny_run)
    capped.cfg.output_logits_soft_cap = 2.0  # a readout the head does not reproduce: the probe finds it out
    assert lm.mlp_head(capped, tokens[:2]) is None


@pytest.mark.parametrize("compiled", [True, False], ids=["numba", "torch"])
def test_the_spliced_kl_from_the_clean_rows_equals_the_kl_of_both_distributions_in_float64(tiny_run, compiled,
                                                                                           monkeypatch):
    """A splice's KL comes from the clean rows (kappa and u = W_U p, kept between analyses) and its own log-sum-exp,
    never from the clean logits: at every predicted position it equals Σ p·(log p − log q) of the two whole
    distributions in float64, BOS (which keeps its activations) included, and so does its next-token loss."""
    if not compiled:
        monkeypatch.setattr("sae.lm.head_losses.kernels", lambda *args: None)
    model = lm.load_lm(tiny_run)
    tokens = torch.from_numpy(np.load(tiny_run / "corpus" / "heldout.npy")[:10].astype(np.int64))
    head = lm.mlp_head(model, tokens[:2])
    with torch.no_grad():
        mid, post = lm.mid_and_post(model, tokens)
        recon = post * 0.6 + 0.02  # KLs of ~0.02 nats, a good SAE's order: where a difference would show
        clean = clean_rows(head, mid, post, tokens, post[:, 1:].reshape(-1, 64).mean(0))
        logp, kl = spliced_rows(head, mid, recon, tokens, clean)
        ro = head.readout
        wide = MLPHead(head.W_out.double(), head.b_out.double(),
                       replace(ro, w=ro.w.double(), W_U=ro.W_U.double(), bias=ro.bias.double()))

        def log_probs(acts):  # [b, T, 64] -> [b·(T − 1), V] float64, through the head in float64
            out = wide.mlp_out(acts[:, :-1].double().reshape(-1, 64)).reshape(*acts[:, :-1].shape[:2], -1)
            return wide.logits((mid[:, :-1].double() + out).reshape(-1, mid.shape[-1])).log_softmax(-1)

        p_log, q_log = log_probs(post), log_probs(keep_bos(post, recon.clone()))
        want_kl = (p_log.exp() * (p_log - q_log)).sum(-1)
        want_logp = q_log.gather(-1, tokens[:, 1:].reshape(-1, 1))[:, 0]
    assert float(want_kl.mean()) > 0.01  # not vacuous
    assert float((kl.double() - want_kl).abs().max()) < 5e-6
    assert float((logp.double() - want_logp).abs().max()) < 5e-6
    assert float(clean.u.abs().max()) > 0 and clean.u.shape == (len(want_kl), mid.shape[-1])


def test_a_good_splices_kl_is_exact_to_a_part_in_ten_thousand_over_a_large_vocabulary():
    """Over 50,257 tokens the clean distribution's u = W_U p carries float32 rounding a splice's KL must not inherit
    at full size (the KL is a difference of ~10-nat terms), nor the log-sum-exps float32 sums (each off by ~1e-6
    nats at this size: the kernels sum in float64, and the logits and u share one rounding of the norm's divisor): for
    a splice that moves the LM by ~1e-3 nats, the mean KL is within 1e-4 of itself computed from both whole
    distributions in float64 (-3e-4 with float32 sums). Logits ~2.3 nats apart: where they are much steeper the
    float32 unembedding's own rounding (unbiased, ~2e-6 nats a position) dominates a mean over 126 positions."""
    g = torch.Generator().manual_seed(0)
    d_model, d_mlp, vocab, b, n_ctx = 512, 64, 50257, 2, 64
    readout = Readout(centre=True, normalised=True, w=1 + 0.1 * torch.randn(d_model, generator=g), eps=1e-5,
                      W_U=0.1 * torch.randn(d_model, vocab, generator=g), bias=0.5 * torch.randn(vocab, generator=g))
    head = MLPHead(torch.randn(d_mlp, d_model, generator=g) / 8, 0.1 * torch.randn(d_model, generator=g), readout)
    mid = torch.randn(b, n_ctx, d_model, generator=g)
    post = torch.randn(b, n_ctx, d_mlp, generator=g).relu()
    recon = post + 0.01 * torch.randn(b, n_ctx, d_mlp, generator=g)
    tokens = torch.randint(vocab, (b, n_ctx), generator=g)
    clean = clean_rows(head, mid, post, tokens, None)
    _, kl = spliced_rows(head, mid, recon, tokens, clean)
    wide = MLPHead(head.W_out.double(), head.b_out.double(),
                   Readout(True, True, readout.w.double(), readout.eps, readout.W_U.double(), readout.bias.double()))

    def log_probs(acts):  # [b, T, d_mlp] -> [b·(T − 1), V] float64
        out = wide.mlp_out(acts[:, :-1].double().reshape(-1, d_mlp)).reshape(b, n_ctx - 1, d_model)
        return wide.logits((mid[:, :-1].double() + out).reshape(-1, d_model)).log_softmax(-1)

    p_log, q_log = log_probs(post), log_probs(keep_bos(post, recon.clone()))
    want = (p_log.exp() * (p_log - q_log)).sum(-1)
    assert 1e-4 < float(want.mean()) < 1e-2  # a good splice's order
    assert float(kl.double().mean()) == pytest.approx(float(want.mean()), rel=1e-4)


@pytest.mark.usefixtures("single_thread")
def test_training_and_analysis_report_one_definition_on_the_same_heldout_tokens(tiny_run_copy):
    n_tokens = 2048  # 64 whole held-out sequences of 32: training's evaluation and the analysis read the same ones
    cfg = SAETrainConfig(d_sae=128, tokens=512 * 30, batch_size=512, l1_coefficient=1.0, lr=3e-3, precision="fp32",
                         init_sample_tokens=2000, resample_sample_tokens=1000, log_every=10, checkpoint_every=10,
                         eval_tokens=n_tokens, loss_tokens=n_tokens)
    trained = train_sae_on_run(tiny_run_copy, "s1", cfg, device="cpu", **QUIET)
    analysis_cfg = AnalysisConfig(n_tokens=n_tokens, batch_sequences=16, loss_tokens=None, loss_batch_sequences=8,
                                  top_k=4, samples_per_interval=2, logit_k=3, n_links=2)
    run_analysis(tiny_run_copy, cfg=analysis_cfg, device="cpu", include_neurons=False, **QUIET)
    analysed = json.loads((tiny_run_copy / "analysis" / "s1" / "basis.json").read_text())["metrics"]
    sae, _ = load_sae(tiny_run_copy / "saes" / "s1")
    source = LMActivations(tiny_run_copy)
    tokens = source.heldout_tokens(n_tokens)  # [64, 32]
    with torch.no_grad():
        x_all = lm.mlp_activations(source.model, tokens)  # [64, 32, d_in]
        x_eval = source.eval_activations(n_tokens)  # training's evaluation: n_tokens after BOS, from these rows on
        x_analysed = x_all[:, 1:].reshape(-1, source.d_in)  # the analysis: these rows, BOS left out
        torch.testing.assert_close(x_eval[:len(x_analysed)], x_analysed, rtol=1e-4, atol=1e-5)
        for metrics, x in ((trained, x_eval), (analysed, x_analysed)):  # both leave BOS out (sae.conventions)
            expected = brute_force(x, sae(x))
            assert metrics["mse"] == pytest.approx(expected["mse"], rel=1e-4)
            assert metrics["fvu"] == pytest.approx(expected["fvu"], rel=1e-4)
        assert analysed["n_tokens"] == len(x_analysed)
        # Zero ablation (and the splice) leave BOS alone, as everything else does.
        kept = float(lm.lm_loss(source.model, tokens, lambda post: keep_bos(post, torch.zeros_like(post))))
        everything = float(lm.lm_loss(source.model, tokens, torch.zeros_like))
    assert trained["loss_zero_ablation"] == pytest.approx(kept, rel=1e-4)
    assert abs(kept - everything) > 1e-3  # the choice is visible on this model
    assert 0 < trained["loss_recovered"] < 1
    for key in ("loss_clean", "loss_zero_ablation", "loss_reconstructed", "loss_recovered", "loss_mean_ablation",
                "loss_recovered_mean_ablation", "kl_div_with_sae", "kl_div_with_ablation", "kl_div_score"):
        assert analysed[key] == pytest.approx(trained[key], rel=1e-4), key
    assert json.loads((tiny_run_copy / "saes" / "s1" / "metrics.json").read_text())["mse"] == trained["mse"]
    last = json.loads((tiny_run_copy / "saes" / "s1" / "log.jsonl").read_text().splitlines()[-1])
    # The log's mse is per element too, in raw units (a per-token sum would be d_in = 64 times larger).
    assert abs(np.log(last["mse"] / trained["mse"])) < np.log(2) and 0 < last["fvu"] < 1


def test_saelens_named_metrics_match_sae_lens_on_the_same_reconstructions():
    from sae_lens.evals import ExplainedVarianceCalculator

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3000, 24, generator=g) * 2 + 5  # far from zero: a large mean component, as MLP outputs have
    x_hat = 0.8 * x + 0.3 * torch.randn(3000, 24, generator=g)  # shrunk, noisy reconstructions
    sums = ReconstructionSums()
    for chunk in torch.split(torch.arange(3000), 700):  # streamed in uneven batches, then merged
        xb, hb = x[chunk], x_hat[chunk]
        sums.add(len(xb), 0, x=xb, sq_err=float((xb - hb).double().pow(2).sum()), x_hat=hb)
    m = sums.metrics()
    theirs = ExplainedVarianceCalculator()  # sae_lens's own streaming explained variance
    theirs.add_batch(sae_output=x_hat, hidden_acts=x)
    assert m["explained_variance"] == pytest.approx(theirs.compute(), rel=1e-6)
    # The rest by sae_lens's published formulas (evals.get_sparsity_and_variance_metrics), over all tokens at once.
    norm_in, norm_out = x.norm(dim=-1), x_hat.norm(dim=-1)
    assert m["l2_norm_in"] == pytest.approx(float(norm_in.mean()), rel=1e-5)
    assert m["l2_norm_out"] == pytest.approx(float(norm_out.mean()), rel=1e-5)
    assert m["l2_ratio"] == pytest.approx(float((norm_out / norm_in).mean()), rel=1e-5)
    rrb = float(norm_out.pow(2).mean() / (x * x_hat).sum(-1).mean())
    assert m["relative_reconstruction_bias"] == pytest.approx(rrb, rel=1e-5) and rrb < 1  # shrinkage shows
    cos = (x / norm_in[:, None] * (x_hat / norm_out[:, None])).sum(-1).mean()
    assert m["cossim"] == pytest.approx(float(cos), rel=1e-5)
    assert ReconstructionSums().metrics().keys() == {"mse", "fvu", "l0", "l1"}  # nothing claimed without x̂


@pytest.mark.usefixtures("single_thread")
def test_analysis_with_the_head_equals_the_analysis_with_a_forward_per_replacement(tiny_run, tmp_path):
    """The whole analysis of the tiny run, its LM-loss metrics from the head (today's path) and from the forwards
    that ran before it (kept for LMs without a head): every array the same to the bit, the metrics to 1e-6."""
    from sae.lm.head_losses import HeadLosses, loss_model
    from sae.lm.losses import SplicedLosses
    from sae.analysis.reduce import finish
    from sae.analysis.shard import Basis, analyze_shard
    from sae.corpus.build import load_heldout

    model = lm.load_lm(tiny_run)
    tokens = load_heldout(tiny_run, 1024)
    sae = SparseAutoencoder(SAEConfig(d_in=64, d_sae=96)).init_weights(torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_enc.fill_(-0.05)
    bases = [Basis("neurons", 64), Basis("s", 96, sae.requires_grad_(False))]
    cfg = AnalysisConfig(n_tokens=tokens.size, batch_sequences=8, loss_tokens=None, top_k=4, samples_per_interval=2,
                         review_top_k=2, review_samples_per_interval=1, proxies=())
    dev = torch.device("cpu")
    fast = loss_model(model, dev, tokens, 4)
    assert isinstance(fast, HeadLosses)

    def analyse(losses, folder):
        folder.mkdir()
        return finish([analyze_shard(lambda b: lm.mlp_activations(model, b), losses, tokens, (0, len(tokens)),
                                     bases, cfg, folder)], bases, tokens, cfg)

    for ours, theirs in zip(analyse(fast, tmp_path / "head"), analyse(SplicedLosses(model, dev, 4), tmp_path / "fwd")):
        assert ours.arrays.keys() == theirs.arrays.keys()
        for key in ours.arrays:
            np.testing.assert_array_equal(ours.arrays[key], theirs.arrays[key], err_msg=key)
        a, b = ours.summary["metrics"], theirs.summary["metrics"]
        assert a.keys() == b.keys() and a["loss_tokens"] == b["loss_tokens"] > 0
        for key, value in a.items():  # None where a metric does not apply (the neurons reconstruct nothing)
            assert value == b[key] if value is None else value == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
    assert ours.summary["metrics"]["kl_div_with_sae"] > 1e-3  # the SAE changes the LM's predictions


def test_head_losses_redo_the_positions_whose_sums_leave_the_kernels_range(tiny_run, monkeypatch):
    """A readout 300x steeper puts replaced logits hundreds of nats from the clean row's maximum, which the kernel's
    shifted sums cannot hold: those (distribution, position) pairs are redone the plain way, and the sums equal the
    torch fallback's."""
    model = lm.load_lm(tiny_run)
    tokens = torch.from_numpy(np.load(tiny_run / "corpus" / "heldout.npy")[:6].astype(np.int64))
    head = lm.mlp_head(model, tokens[:2])
    steep = MLPHead(head.W_out, head.b_out, replace(head.readout, w=head.readout.w * 300))
    mid, post = lm.mid_and_post(model, tokens)
    mean = post[:, 1:].reshape(-1, 64).mean(0)
    with torch.no_grad():
        logits = steep.logits(mid.reshape(-1, mid.shape[-1]))  # zero ablation's, up to the constant b_out
        clean = steep.logits((mid + steep.mlp_out(post.reshape(-1, 64)).reshape(*mid.shape[:2], -1))
                             .reshape(-1, mid.shape[-1]))
        assert (logits.amax(-1) - clean.amax(-1)).abs().max() > 100  # out of the kernel's range somewhere
        fast = head_losses(steep, mid, post, tokens, mean, {"s": post * 0.5})
        monkeypatch.setattr("sae.lm.head_losses.kernels", lambda *args: None)
        plain = head_losses(steep, mid, post, tokens, mean, {"s": post * 0.5})
    for got, want in ((fast[0], plain[0]), (fast[1]["s"], plain[1]["s"])):
        for key in want.ce:
            assert got.ce[key] == pytest.approx(want.ce[key], rel=1e-5), key
        for key in want.kl:
            assert got.kl[key] == pytest.approx(want.kl[key], rel=1e-4), key
