"""SAE training: the paper's recipe (ReLU + L1, unit-norm decoder, resampling) plus TopK/BatchTopK with AuxK.

`fit_sae(cfg, source)` trains and returns the SAE with the activation scaling folded into its weights, so it works
on raw activations; `train_sae(cfg, source, out_dir)` also evaluates it and writes the SAELens-format stage
(runs/<run>/saes/<name>/) atomically, resuming from the checkpoint in the stage's work folder after a kill.
Training sees activations scaled to mean norm √d_in (so λ transfers between models). Every step: loss and grads
(sae/dictionary/fast/step.py's fast path, or the plain-autograd reference in sae/dictionary/losses.py), remove from each decoder row's
gradient its component along the row, Adam, renormalise the rows. Batches depend only on (seed, token position),
so a resumed run trains on exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from sae.conventions import DENSE_DENSITY
from sae.device import resolve_device
from sae.dictionary import fast, losses, metrics, resample
from sae.dictionary.config import SAETrainConfig, resolve_precision, schedules  # noqa: F401 (re-exported)
from sae.dictionary.model import SparseAutoencoder
from sae.errors import MonoscopeError

CHECKPOINT = "checkpoint.pt"
LIVE_LOG = "log.jsonl"


@torch.no_grad()
def project_decoder_grad_(sae: SparseAutoencoder) -> None:
    """Remove from each decoder row's gradient its component parallel to the row (rows have unit norm)."""
    if sae.W_dec.grad is not None:
        w = sae.W_dec  # [d_sae, d_in]
        sae.W_dec.grad -= (sae.W_dec.grad * w).sum(1, keepdim=True) * w


def loss_and_grads(sae: SparseAutoencoder, x: torch.Tensor, cfg: SAETrainConfig, *, l1: float, precision: str,
                   dead: torch.Tensor | None) -> dict[str, Any]:
    """Set the parameters' .grad for one batch x [B, d_in] and return the detached loss parts."""
    aux = dict(dead_mask=dead, aux_coefficient=cfg.aux_coefficient if dead is not None else 0.0, aux_k=cfg.aux_k)
    if cfg.grad_path == "fast":
        p = fast.loss_and_grads(sae, x, l1_coefficient=l1 if cfg.architecture == "relu" else 0.0, precision=precision,
                 architecture=cfg.architecture, k=cfg.k, **aux)
        return dict(loss=p.loss, mse=p.mse, l1=p.l1, aux=p.aux, l0=p.l0, fired=p.fired)
    for param in sae.parameters():
        param.grad = None
    loss, parts = losses.sae_loss(
        sae, x, architecture=cfg.architecture, k=cfg.k, l1_coefficient=l1 if cfg.architecture == "relu" else 0.0,
        dead=dead, aux_coefficient=aux["aux_coefficient"], aux_k=cfg.aux_k, precision=precision)
    loss.backward()
    return dict(loss=loss.detach(), **parts)


def encoder_init_scale(cfg: SAETrainConfig, d_in: int) -> float:
    """Return the factor on W_encᵀ = W_dec at initialisation.

    For random unit rows w, E[relu(w·x) w] = x / (2·d_in): a ReLU SAE with W_enc = W_decᵀ starts by
    reconstructing x̄ · d_sae / (2·d_in) (4× too large at 512 -> 4096) and spends its first steps shrinking it.
    Scaling the encoder by 2·d_in/d_sae starts it near x̂ ≈ x. TopK keeps few latents: no such blow-up.
    """
    if cfg.encoder_init_scale is not None:
        return cfg.encoder_init_scale
    return min(1.0, 2 * d_in / cfg.d_sae) if cfg.architecture == "relu" else 1.0


@torch.no_grad()
def initial_sae(cfg: SAETrainConfig, sample: torch.Tensor, device: torch.device) -> tuple[SparseAutoencoder, float]:
    """Return (initialised SAE, activation scale) from a sample [N, d_in] of raw activations.

    Scale = √d_in / mean‖x‖; b_dec = geometric median (or mean) of the scaled sample; decoder rows random unit
    vectors, encoder = decoder transposed.
    """
    d_in = sample.shape[1]
    mean_norm = float(sample.norm(dim=1).mean())
    scale = math.sqrt(d_in) / mean_norm if cfg.scale_activations and mean_norm > 0 else 1.0
    scaled = sample * scale
    sae = SparseAutoencoder(cfg.sae_config(d_in))
    sae.init_weights(torch.Generator().manual_seed(cfg.seed))
    sae.W_enc.mul_(encoder_init_scale(cfg, d_in))
    sae.b_dec.copy_(metrics.geometric_median(scaled) if cfg.b_dec_init == "geometric_median" else scaled.mean(0))
    return sae.to(device), scale


def batchtopk_threshold(sae: SparseAutoencoder, x: torch.Tensor, k: int, batch_size: int) -> float:
    """Return the global jumprelu threshold under which scaled x [N, d_in] keeps k latents per token on average:
    the (k·N)-th largest relu pre-activation of the whole sample, so L0 = k exactly there (held-out files of the
    demo corpus fired about 4% more). Each chunk keeps its 4·k·chunk largest values, which hold the answer
    unless one chunk holds over 4x its share of it."""
    kept = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            pre = torch.relu(sae.pre_activations(x[start: start + batch_size])).flatten()  # [b * d_sae]
            kept.append(losses.batch_top(pre, min(4 * k * (pre.numel() // sae.cfg.d_sae), pre.numel()))[0])
        values = torch.cat(kept)
        return float(values.topk(min(k * len(x), values.numel())).values[-1])


@torch.no_grad()
def fold_scale_(sae: SparseAutoencoder, scale: float) -> None:
    """Make an SAE trained on x·scale work on raw x with identical feature activations."""
    sae.W_enc.mul_(scale)
    sae.W_dec.div_(scale)
    sae.b_dec.div_(scale)


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill during the save leaves the previous checkpoint whole


def fit_sae(
    cfg: SAETrainConfig, source, *, device: str | torch.device = "auto", checkpoint: Path | None = None,
    live_log: Path | None = None, progress: bool = True, log: Callable[[str], None] = print,
    on_step: Callable[[int, SparseAutoencoder], None] | None = None,
) -> tuple[SparseAutoencoder, dict[str, Any], list[dict]]:
    """Train an SAE on `source` (sae.activations); return (SAE on raw activations, summary, log records).

    With `checkpoint`, state is saved there every cfg.checkpoint_every steps and a matching one is resumed from.
    `on_step(step, sae)` runs after each step (progress hooks; raising stops training, the checkpoint stays).
    """
    dev = resolve_device(device) if isinstance(device, str) else device
    precision = resolve_precision(cfg.precision, dev)
    key = json.loads(json.dumps({"cfg": asdict(cfg), "source": source.name, "d_in": source.d_in}))
    total, window = cfg.steps, max(1, round(cfg.steps * cfg.dead_window_frac))
    resample_steps = sorted({max(1, round(f * total)) for f in cfg.resample_at})
    sae, scale = initial_sae(cfg, source.sample(cfg.init_sample_tokens, seed=cfg.seed), dev)
    params = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec]  # a jumprelu threshold is set after training
    optimizer = fast.adam(params, lr=cfg.lr, betas=(0.9, 0.999))  # fused where available: 4x faster here
    tracker = metrics.FiringTracker(cfg.d_sae, dev)
    step, records, resamples, elapsed = 0, [], [], 0.0
    if checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, map_location=dev, weights_only=False)
        if saved.get("key") == key:
            sae.load_state_dict(saved["sae"])
            optimizer.load_state_dict(saved["optimizer"])
            tracker.load_state_dict(saved["tracker"])
            step, scale, records = saved["step"], saved["scale"], saved["records"]
            resamples, elapsed = saved["resamples"], saved["elapsed"]
            log(f"train-sae: resuming from step {step}/{total}")
    if live_log is not None:
        live_log.write_text("".join(json.dumps(r) + "\n" for r in records))
    needs_dead = cfg.architecture != "relu" and cfg.aux_coefficient > 0

    bar = tqdm(total=total, initial=step, desc="train-sae", unit="step", disable=not progress)
    stream = source.stream(cfg.batch_size, start_token=step * cfg.batch_size)
    started = last_time = time.time()
    last_step, sums, recon = step, {"loss": 0.0, "aux": 0.0}, metrics.ReconstructionSums()
    while step < total:
        x = next(stream).to(dev, torch.float32) * scale  # [B, d_in]
        lr, l1 = schedules(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        parts = loss_and_grads(sae, x, cfg, l1=l1, precision=precision,
                               dead=tracker.dead(step, window) if needs_dead else None)
        loss = float(parts["loss"])
        if not math.isfinite(loss):
            kept = f"; the last good checkpoint (step {(step // cfg.checkpoint_every) * cfg.checkpoint_every}) " \
                   f"is kept at {checkpoint}" if checkpoint is not None and checkpoint.is_file() else ""
            raise MonoscopeError(f"SAE loss became {loss} at step {step + 1}; stopped{kept}; try a lower --lr")
        project_decoder_grad_(sae)
        optimizer.step()
        sae.normalize_decoder_()
        step += 1
        tracker.update(step, parts["fired"], len(x))
        for name in sums:
            sums[name] += float(parts[name])
        # parts["mse"] is the objective's term, Σ_d err² averaged over the batch: reported only as mse and fvu.
        recon.add(len(x), float(parts["l0"]) * len(x), l1=float(parts["l1"]) * len(x), x=x,
                  sq_err=float(parts["mse"]) * len(x))
        if step in resample_steps:
            dead = tracker.dead(step, window)
            n_dead = int(dead.sum())
            if n_dead:
                sample = source.sample(cfg.resample_sample_tokens, seed=cfg.seed * 7919 + step).to(dev) * scale
                input_loss = losses.per_input_loss(sae, sample, architecture=cfg.architecture, k=cfg.k,
                                                   l1_coefficient=l1 if cfg.architecture == "relu" else 0.0)
                index = resample.resample_dead(sae, optimizer, dead, sample, input_loss,
                                               torch.Generator().manual_seed(cfg.seed * 7919 + step))
                tracker.last_fired[index] = step  # a fresh latent gets a full window before it can be dead again
            resamples.append({"step": step, "count": n_dead})
            log(f"train-sae: step {step}: resampled {n_dead} dead latents")
        if step % cfg.log_every == 0 or step == total:
            now = time.time()
            n = step - last_step
            density, dense = tracker.report()
            record = {"step": step, "tokens": step * cfg.batch_size, "lr": lr, "l1_coefficient": l1,
                      **{k: v / n for k, v in sums.items()}, **recon.metrics(scale),
                      "dead": int(tracker.dead(step, window).sum()), "dense": dense,
                      "resampled": sum(r["count"] for r in resamples if r["step"] > last_step),
                      "tokens_per_s": n * cfg.batch_size / max(now - last_time, 1e-9)}
            records.append(record)
            if live_log is not None:
                with live_log.open("a") as f:
                    f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record['loss']:.3g}", L0=f"{record['l0']:.1f}", dead=record["dead"])
            last_step, last_time, sums, recon = step, now, dict.fromkeys(sums, 0.0), metrics.ReconstructionSums()
        bar.update(1)
        if checkpoint is not None and step % cfg.checkpoint_every == 0 and step < total:
            _save_checkpoint(checkpoint, {
                "key": key, "sae": sae.state_dict(), "optimizer": optimizer.state_dict(),
                "tracker": tracker.state_dict(), "step": step, "scale": scale, "records": records,
                "resamples": resamples, "elapsed": elapsed + time.time() - started})
        if on_step is not None:
            on_step(step, sae)
    bar.close()
    elapsed += time.time() - started

    if cfg.architecture == "batchtopk":
        sample = source.sample(min(cfg.init_sample_tokens, 16 * cfg.batch_size), seed=cfg.seed + 1).to(dev) * scale
        with torch.no_grad():
            sae.threshold.fill_(batchtopk_threshold(sae, sample, cfg.k, cfg.batch_size))
    final_dead = int(tracker.dead(step, window).sum())
    fold_scale_(sae, scale)
    summary = {"steps": total, "tokens": total * cfg.batch_size, "seconds": round(elapsed, 2),
               "tokens_per_s": round(total * cfg.batch_size / max(elapsed, 1e-9)), "scale_factor": scale,
               "precision": precision, "dead": final_dead, "dead_window_steps": window,
               "resamples": resamples, "resampled_total": sum(r["count"] for r in resamples)}
    return sae.cpu().float(), summary, records


def evaluate(sae: SparseAutoencoder, source, n_tokens: int, device: torch.device,
             loss_tokens: int = 16_384) -> tuple[dict, torch.Tensor]:
    """Return (metrics on held-out activations, density [d_sae]); plus loss recovered for an LM source."""
    sae = sae.to(device)
    heldout = source.eval_activations(n_tokens)  # [n, d_in]
    result = metrics.reconstruction_metrics(sae, heldout)
    density = result.pop("density")
    result["dense"] = int((density > DENSE_DENSITY).sum())
    result["dead_heldout"] = int((density == 0).sum())
    result["heldout_tokens"] = len(heldout)
    if hasattr(source, "heldout_tokens"):
        tokens = source.heldout_tokens(loss_tokens)
        with torch.no_grad():
            result |= metrics.loss_recovered(source.model, tokens, sae)
        result["loss_tokens"] = int(tokens.numel())
    sae.cpu()
    return result, density


def train_sae(
    cfg: SAETrainConfig, source, out_dir: Path, *, meta: dict | None = None, inputs: dict[str, str] | None = None,
    device: str = "auto", force: bool = False, progress: bool = True, log: Callable[[str], None] = print,
    on_step: Callable[[int, SparseAutoencoder], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) an SAE on `source` and write it to out_dir (SAELens format + log.jsonl + metrics.json).

    Skipped when out_dir is up to date with this config and these inputs (upstream stage fingerprints) unless
    `force`. Returns the metrics written to metrics.json.
    """
    from sae import rundir
    from sae.dictionary.saelens_format import save_sae

    out_dir = Path(out_dir)
    config = {"train": asdict(cfg), "source": source.name, "d_in": source.d_in}
    inputs = dict(inputs or {})
    if not force and rundir.is_current(out_dir, config=config, inputs=inputs):
        log(f"train-sae: up to date at {out_dir} (use --force to retrain)")
        return json.loads((out_dir / "metrics.json").read_text())
    work = rundir.work_dir(out_dir)
    checkpoint = work / CHECKPOINT
    if force and checkpoint.exists():
        checkpoint.unlink()
    dev = resolve_device(device)
    log(f"train-sae: {cfg.architecture} SAE {source.d_in} -> {cfg.d_sae}, {cfg.steps} steps of {cfg.batch_size} "
        f"activations on {dev} ({resolve_precision(cfg.precision, dev)})")
    sae, summary, records = fit_sae(cfg, source, device=dev, checkpoint=checkpoint, live_log=work / LIVE_LOG,
                                    progress=progress, log=log, on_step=on_step)
    result, density = evaluate(sae, source, cfg.eval_tokens, dev, cfg.loss_tokens)
    result = {"architecture": cfg.architecture, "d_in": source.d_in, "d_sae": cfg.d_sae, "k": cfg.k,
              "l1_coefficient": cfg.l1_coefficient, "lr": cfg.lr, **result, **summary}
    with rundir.write_stage(out_dir, stage="sae", config=config, inputs=inputs) as tmp:
        save_sae(sae, tmp, meta={**(meta or {}), "training": asdict(cfg), "metrics": _short(result)},
                 density=density)
        (tmp / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        (tmp / "metrics.json").write_text(json.dumps(result, indent=1))
    shown = ", ".join(f"{k} {_fmt(result[k])}" for k in ("l0", "fvu", "mse", "dead", "dense", "loss_recovered")
                      if result.get(k) is not None)
    log(f"train-sae: {shown} at {out_dir}")
    return result


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _short(result: dict) -> dict:
    """Return the headline metrics to keep in cfg.json (SAELens ignores the `monoscope` key)."""
    return {k: result.get(k) for k in ("l0", "fvu", "mse", "dead", "dense", "loss_recovered", "tokens")}


def train_sae_on_run(run_dir: Path, name: str, cfg: SAETrainConfig, *, device: str = "auto", force: bool = False,
                     progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train runs/<run>/saes/<name> on the run's LM activations (training split; metrics on held-out tokens)."""
    from sae import rundir
    from sae.activations import LM_SOURCE_NAME, LMActivations
    from sae.lm.model import HOOK_POST

    run_dir = Path(run_dir)
    if not name or "/" in name or name.startswith("."):
        raise MonoscopeError(f"--name must be a plain folder name, got {name!r}")
    inputs = {stage: rundir.fingerprint(run_dir / stage, stage) for stage in ("corpus", "lm")}
    out_dir = run_dir / "saes" / name
    if not force and rundir.is_current(out_dir, config={"train": asdict(cfg), "source": LM_SOURCE_NAME,
                                                        "d_in": _d_mlp(run_dir)}, inputs=inputs):
        log(f"train-sae: up to date at {out_dir} (use --force to retrain)")
        return json.loads((out_dir / "metrics.json").read_text())
    source = LMActivations(run_dir, seed=cfg.seed, device=resolve_device(device))
    meta = {"model_name": run_dir.name, "hook_name": HOOK_POST, "context_size": source.n_ctx,
            "dataset_path": str(run_dir / "corpus"), "prepend_bos": True}
    return train_sae(cfg, source, out_dir, meta=meta, inputs=inputs, device=device, force=force,
                     progress=progress, log=log)


def _d_mlp(run_dir: Path) -> int:
    try:
        return int(json.loads((Path(run_dir) / "lm" / "config.json").read_text())["d_mlp"])
    except (OSError, ValueError, KeyError):
        return -1
