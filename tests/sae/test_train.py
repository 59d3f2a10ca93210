"""SAE training loop: losses and constraints, scaling fold, resume after a kill, NaN stop, stage output, CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from sae.activations import ArrayActivations, LMActivations
from sae.dictionary import losses
from sae.dictionary.metrics import geometric_median, reconstruction_metrics
from sae.lm.losses import keep_bos
from sae.dictionary.model import SAEConfig, SparseAutoencoder
from sae.dictionary.saelens_format import load_density, load_sae
from sae.dictionary.stage import train_sae, train_sae_on_run
from sae.dictionary.train import (
    SAETrainConfig,
    fit_sae,
    fold_scale_,
    initial_sae,
    loss_and_grads,
    project_decoder_grad_,
    schedules,
)
from sae.errors import MonoscopeError
from sae.lm.model import lm_loss, load_lm

QUIET = dict(progress=False, log=lambda m: None)


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny matmuls: one thread is faster


def sparse_data(n=6000, d=16, n_true=24, seed=0, scale=5.0):
    """Sparse non-negative combinations of unit directions plus an offset: what an SAE should take apart."""
    g = np.random.default_rng(seed)
    dirs = g.standard_normal((n_true, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    coef = (g.random((n, n_true)) < 0.08) * g.random((n, n_true))  # ~2 active per row
    return (scale * (coef @ dirs + 0.5) + 0.01 * g.standard_normal((n, d))).astype(np.float32)


def tiny_cfg(**overrides):
    base = dict(d_sae=32, tokens=256 * 40, batch_size=256, l1_coefficient=0.2, lr=3e-3, precision="fp32",
                init_sample_tokens=2000, resample_sample_tokens=1000, log_every=10, checkpoint_every=10,
                eval_tokens=500)
    return SAETrainConfig(**{**base, **overrides})


@pytest.mark.parametrize("bad", [dict(architecture="gated"), dict(architecture="topk"), dict(lr=0),
                                 dict(resample_at=(1.5,)), dict(precision="fp8"), dict(tokens=0)])
def test_config_refuses_bad_values_in_one_line(bad):
    with pytest.raises(MonoscopeError) as info:
        SAETrainConfig(**bad)
    assert "\n" not in str(info.value)


def test_reference_loss_is_the_papers_formula():
    sae = SparseAutoencoder(SAEConfig(d_in=6, d_sae=10)).init_weights(torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_dec.fill_(0.3)
        sae.b_enc.fill_(0.1)
    x = torch.randn(20, 6)
    loss, parts = losses.sae_loss(sae, x, architecture="relu", l1_coefficient=0.7)
    f = torch.relu((x - 0.3) @ sae.W_enc + 0.1)
    x_hat = f @ sae.W_dec + 0.3
    mse = ((x_hat - x) ** 2).sum(1).mean()
    torch.testing.assert_close(parts["mse"], mse)
    torch.testing.assert_close(loss, mse + 0.7 * f.abs().sum(1).mean())
    assert torch.equal(parts["fired"], (f > 0).sum(0))


def test_batchtopk_keeps_k_per_token_on_average_across_the_batch():
    pre = torch.randn(8, 50)
    f = losses.batchtopk_activate(pre, k=3)
    assert int((f > 0).sum()) == 24
    assert (f > 0).sum(1).float().std() > 0  # tokens differ: it is not per-token top-k
    kept = f[f > 0]
    assert float(kept.min()) >= float(torch.relu(pre)[f == 0].max())


@pytest.mark.parametrize("arch, k", [("relu", None), ("topk", 4)])
def test_fast_and_reference_steps_give_the_same_gradients(arch, k):
    x = torch.from_numpy(sparse_data(n=256))
    dead = torch.zeros(32, dtype=torch.bool)
    dead[::3] = True
    grads = {}
    for path in ("fast", "reference"):
        cfg = tiny_cfg(architecture=arch, k=k, grad_path=path)
        sae = SparseAutoencoder(cfg.sae_config(16)).init_weights(torch.Generator().manual_seed(0))
        parts = loss_and_grads(sae, x, cfg, l1=0.3, precision="fp32", dead=dead if arch == "topk" else None)
        grads[path] = (parts, {n: p.grad.clone() for n, p in sae.named_parameters()})
    for name, grad in grads["reference"][1].items():
        torch.testing.assert_close(grads["fast"][1][name], grad, rtol=1e-4, atol=1e-5)
    for key in ("loss", "mse", "aux", "l0"):
        torch.testing.assert_close(grads["fast"][0][key], grads["reference"][0][key], rtol=1e-5, atol=1e-6)
    if arch == "topk":
        assert float(grads["reference"][0]["aux"]) > 0
        assert grads["reference"][1]["W_enc"][:, dead].abs().sum() > 0  # AuxK trains the dead latents


def test_decoder_gradient_is_projected_and_rows_stay_unit_norm():
    sae = SparseAutoencoder(SAEConfig(d_in=8, d_sae=12)).init_weights(torch.Generator().manual_seed(1))
    sae.W_dec.grad = torch.randn(12, 8)
    project_decoder_grad_(sae)
    torch.testing.assert_close((sae.W_dec.grad * sae.W_dec).sum(1), torch.zeros(12), atol=1e-6, rtol=0)
    trained, _, _ = fit_sae(tiny_cfg(tokens=256 * 5, scale_activations=False), ArrayActivations(sparse_data()),
                            device="cpu", **QUIET)
    torch.testing.assert_close(trained.W_dec.norm(dim=1), torch.ones(32))


def test_geometric_median_resists_outliers_and_is_a_stationary_point():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(300, 4, generator=g), torch.full((30, 4), 100.0)])
    median = geometric_median(x, iterations=50)
    assert float(median.norm()) < 1.0 < float(x.mean(0).norm())
    unit = (x - median) / (x - median).norm(dim=1, keepdim=True)
    assert float(unit.sum(0).norm()) < 0.01 * len(x)  # the objective's gradient vanishes there


def test_schedules_warm_up_and_decay_to_zero():
    cfg = tiny_cfg(tokens=256 * 100, lr_warmup_frac=0.1, lr_decay_frac=0.2, l1_warmup_frac=0.5)
    assert schedules(0, cfg) == pytest.approx((3e-4, 0.2 / 50))
    assert schedules(50, cfg) == pytest.approx((3e-3, 0.2))
    assert schedules(99, cfg)[0] == pytest.approx(3e-3 / 20)


def test_folding_the_scale_gives_the_same_features_on_raw_activations():
    sae = SparseAutoencoder(SAEConfig(d_in=8, d_sae=12)).init_weights(torch.Generator().manual_seed(2))
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    x, scale = torch.randn(5, 8) * 7, 0.37
    f_scaled, x_hat_scaled = sae.encode(x * scale), sae(x * scale)
    fold_scale_(sae, scale)
    torch.testing.assert_close(sae.encode(x), f_scaled)
    torch.testing.assert_close(sae(x), x_hat_scaled / scale)


@pytest.mark.parametrize("arch, k", [("relu", None), ("topk", 3), ("batchtopk", 3)])
def test_training_learns_a_sparse_code(arch, k):
    data = sparse_data()
    cfg = tiny_cfg(architecture=arch, k=k, l1_coefficient=0.3, tokens=256 * 400, lr=5e-3)
    sae, summary, records = fit_sae(cfg, ArrayActivations(data), device="cpu", **QUIET)
    m = reconstruction_metrics(sae, torch.from_numpy(data[-500:]))
    assert m["fvu"] < 0.12, m
    assert records[-1]["loss"] < records[0]["loss"] / 2
    if arch == "relu":
        assert m["l0"] < 8  # of 32 latents; without the L1 term about 23
    elif arch == "topk":
        assert k - 0.5 < m["l0"] <= k  # at most k (a kept pre-activation can be <= 0)
    else:
        assert m["l0"] == pytest.approx(k, rel=0.1)  # the global threshold keeps k on average
    if arch == "batchtopk":
        assert sae.cfg.architecture == "jumprelu" and sae.threshold.detach().unique().numel() == 1  # global
    assert {"loss", "mse", "l1", "l0", "dead", "dense", "lr", "fvu", "tokens_per_s"} <= set(records[-1])


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    source, cfg = ArrayActivations(sparse_data()), tiny_cfg(resample_at=(0.5,), dead_window_frac=0.1)
    reference, ref_summary, ref_records = fit_sae(cfg, source, device="cpu", **QUIET)

    def kill(step, sae):
        if step == 27:
            raise KeyboardInterrupt

    checkpoint, live = tmp_path / "checkpoint.pt", tmp_path / "log.jsonl"
    with pytest.raises(KeyboardInterrupt):
        fit_sae(cfg, source, device="cpu", checkpoint=checkpoint, live_log=live, on_step=kill, **QUIET)
    assert torch.load(checkpoint, weights_only=True)["state"]["step"] == 20
    messages = []
    resumed, summary, records = fit_sae(cfg, source, device="cpu", checkpoint=checkpoint, live_log=live,
                                        progress=False, log=messages.append)
    assert "resuming from step 20/40" in messages[0]
    for a, b in zip(reference.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert summary["resamples"] == ref_summary["resamples"]
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    assert [json.loads(line)["step"] for line in live.read_text().splitlines()] == [10, 20, 30, 40]


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    source, cfg, checkpoint = ArrayActivations(sparse_data()), tiny_cfg(), tmp_path / "checkpoint.pt"

    def poison(step, sae):
        if step == 25:
            with torch.no_grad():
                sae.W_enc[0, 0] = float("nan")

    with pytest.raises(MonoscopeError, match=r"loss became nan at step 26; stopped; the last good checkpoint "
                                             r"\(step 20\)") as info:
        fit_sae(cfg, source, device="cpu", checkpoint=checkpoint, on_step=poison, **QUIET)
    assert "\n" not in str(info.value)
    good = torch.load(checkpoint, weights_only=True)["state"]
    assert good["step"] == 20 and all(torch.isfinite(t).all() for t in good["sae"].values())
    sae, _, _ = fit_sae(cfg, source, device="cpu", checkpoint=checkpoint, **QUIET)
    assert all(torch.isfinite(p).all() for p in sae.parameters())


def test_array_stage_writes_a_saelens_folder_on_raw_activations(tmp_path):
    data = sparse_data()
    out = tmp_path / "sae"
    result = train_sae(tiny_cfg(), ArrayActivations(data, name="acts"), out, inputs={"activations": "x"},
                       device="cpu", **QUIET)
    assert {p.name for p in out.iterdir()} == {"cfg.json", "sae_weights.safetensors", "sparsity.safetensors",
                                               "log.jsonl", "metrics.json", "manifest.json"}
    sae, meta = load_sae(out)
    assert meta["training"]["d_sae"] == 32
    assert json.loads((out / "cfg.json").read_text())["normalize_activations"] == "none"
    held = torch.from_numpy(data[-300:])  # the held-out tail, in raw units: folding must make this match
    m = reconstruction_metrics(sae, held)
    assert m["fvu"] == pytest.approx(result["fvu"], rel=1e-4) and m["l0"] == pytest.approx(result["l0"], rel=1e-4)
    np.testing.assert_allclose(load_density(out), m["density"].numpy(), atol=1e-6)
    assert result["scale_factor"] == pytest.approx(4.0 / np.linalg.norm(data[:2000], axis=1).mean(), rel=0.05)
    assert len((out / "log.jsonl").read_text().splitlines()) == 4
    again = train_sae(tiny_cfg(), ArrayActivations(data, name="acts"), out, inputs={"activations": "x"},
                      device="cpu", progress=False, log=(said := []).append)
    assert again == result and "up to date" in said[0]


def test_run_stage_reports_loss_recovered_with_the_saved_sae(tiny_run_copy):
    cfg = tiny_cfg(d_sae=128, tokens=512 * 30, batch_size=512, l1_coefficient=1.0, eval_tokens=2048,
                   loss_tokens=2048)
    result = train_sae_on_run(tiny_run_copy, "s1", cfg, device="cpu", **QUIET)
    out = tiny_run_copy / "saes" / "s1"
    assert json.loads((out / "manifest.json").read_text())["inputs"].keys() == {"corpus", "lm"}
    sae, meta = load_sae(out)
    assert meta["hook_name"] == "blocks.0.mlp.hook_post" and meta["context_size"] == 32
    model = load_lm(tiny_run_copy)
    tokens = LMActivations(tiny_run_copy).heldout_tokens(2048)
    with torch.no_grad():
        spliced = float(lm_loss(model, tokens, replace_mlp_post=lambda post: keep_bos(post, sae(post))))  # BOS kept
    assert result["loss_reconstructed"] == pytest.approx(spliced, rel=1e-4)
    assert result["loss_clean"] < result["loss_reconstructed"] < result["loss_zero_ablation"]
    assert 0 < result["loss_recovered"] < 1


def test_cli_trains_on_an_activations_file(tmp_path):
    acts = tmp_path / "acts.npy"
    np.save(acts, sparse_data(n=3000))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "app.cli", "train-sae", "--activations", str(acts), "--out", str(out),
           "--architecture", "topk", "--k", "4", "--d-sae", "32", "--tokens", "20000", "--batch-size", "500"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((out / "cfg.json").read_text())
    assert "l0 4.0" in proc.stdout and cfg["k"] == 4
    assert cfg["monoscope"]["training"]["resample_at"] == list(SAETrainConfig().resample_at)  # the paper's default
    proc = subprocess.run(cmd + ["--resample-at", "none", "--force"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr  # the demo's TopK recipe: AuxK alone, no resampling
    assert json.loads((out / "cfg.json").read_text())["monoscope"]["training"]["resample_at"] == []
    proc = subprocess.run(cmd[:8] + ["--architecture", "relu", "--l1", "-1"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "non-negative" in proc.stderr
    for bad, says in (("1.5", "resample_at"), ("0.5,x", "--resample-at")):
        proc = subprocess.run(cmd + ["--resample-at", bad], capture_output=True, text=True)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr


def test_scaled_encoder_init_starts_near_the_input_instead_of_overshooting():
    data = sparse_data(n=4000, d=16)
    x = torch.from_numpy(data[:2000])
    start = {}
    for scale in (None, 1.0):
        cfg = tiny_cfg(d_sae=256, encoder_init_scale=scale, scale_activations=False)
        sae, _ = initial_sae(cfg, x, torch.device("cpu"))
        start[scale] = reconstruction_metrics(sae, x)["fvu"]
    assert start[None] < 1.0, start  # the scaled init already beats predicting the mean (FVU 1)
    assert start[1.0] > 4.0, start  # 256 / (2·16) = 8× overshoot: FVU ≈ 7² without the scale


@pytest.mark.parametrize("seed", range(4))
def test_fast_batch_top_is_exactly_topk(seed):
    g = torch.Generator().manual_seed(seed)
    flat = torch.relu(torch.randn(64 * 300, generator=g) * torch.rand(64 * 300, generator=g) * 4)
    flat[:50] = 100.0  # a cluster the strided subsample can miss
    for n in (1, 37, 640, 5000):
        values, indices = losses.batch_top(flat, n)
        expected = flat.topk(n)
        assert torch.equal(values.sort().values, expected.values.sort().values)
        assert torch.equal(flat[indices], values) and indices.unique().numel() == n


def test_config_aux_loss_normalised_reaches_both_gradient_paths():
    x = torch.from_numpy(sparse_data(n=256))
    dead = torch.zeros(32, dtype=torch.bool)
    dead[::3] = True
    aux = {}
    for path in ("fast", "reference"):
        for form in ("sae_lens", "normalised"):
            cfg = tiny_cfg(architecture="topk", k=4, grad_path=path, aux_loss=form)
            sae = SparseAutoencoder(cfg.sae_config(16)).init_weights(torch.Generator().manual_seed(0))
            aux[path, form] = float(loss_and_grads(sae, x, cfg, l1=0.0, precision="fp32", dead=dead)["aux"])
    assert aux["fast", "normalised"] == pytest.approx(aux["reference", "normalised"], rel=1e-5)
    assert aux["fast", "normalised"] != pytest.approx(aux["fast", "sae_lens"], rel=1e-3)
    with pytest.raises(MonoscopeError, match="aux_loss"):
        SAETrainConfig(aux_loss="openai")


def test_demo_topk_config_does_not_resample():
    """AuxK alone measured as well as AuxK + resampling at the demo budget (BENCHMARKS.md, issue 10 §1)."""
    from sae.dictionary.config import demo_config

    cfg = demo_config()
    assert cfg.architecture == "topk" and cfg.resample_at == ()
    assert demo_config(resample_at=(0.5,)).resample_at == (0.5,)
