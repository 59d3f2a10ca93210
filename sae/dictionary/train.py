"""SAE training: the paper's recipe (ReLU + L1, unit-norm decoder, resampling) plus TopK/BatchTopK with AuxK.

`fit_sae(cfg, source)` trains and returns the SAE with the activation scaling folded into its weights, so it works
on raw activations, resuming from a checkpoint after a kill (sae/dictionary/stage.py evaluates it and writes the
stage's folder).
Training sees activations scaled to mean norm √d_in (so λ transfers between models). Every step: loss and grads
(sae/dictionary/fast/step.py's fast path, or the plain-autograd reference in sae/dictionary/losses.py), remove
from each decoder row's gradient its component along the row, Adam, renormalise the rows. Batches depend only on (seed, token position),
so a resumed run trains on exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from sae.checkpoint import load_checkpoint, save_checkpoint
from sae.device import resolve_device
from sae.dictionary import fast, losses, metrics, resample
from sae.dictionary.architectures import Activation
from sae.dictionary.config import SAETrainConfig, resolve_precision, schedules  # noqa: F401 (re-exported)
from sae.dictionary.model import SparseAutoencoder
from sae.errors import MonoscopeError
from sae.memory import keep_freed_memory

CHECKPOINT = "checkpoint.pt"
LIVE_LOG = "log.jsonl"


@torch.no_grad()
def project_decoder_grad_(sae: SparseAutoencoder) -> None:
    """Remove from each decoder row's gradient its component parallel to the row (rows have unit norm)."""
    if sae.W_dec.grad is not None:
        w, grad = sae.W_dec.detach(), sae.W_dec.grad  # [d_sae, d_in] each
        grad.addcmul_(torch.linalg.vecdot(grad, w).unsqueeze(1), w, value=-1.0)  # no [d_sae, d_in] temporaries


def loss_and_grads(sae: SparseAutoencoder, x: torch.Tensor, cfg: SAETrainConfig, *, l1: float, precision: str,
                   dead: torch.Tensor | None) -> dict[str, Any]:
    """Set the parameters' .grad for one batch x [B, d_in] and return the detached loss parts (cfg.grad_path
    "fast": the hand-written step; "reference": plain autograd through sae/dictionary/losses.py)."""
    p = fast.loss_and_grads(
        sae, x, l1_coefficient=l1 if cfg.arch.l1_penalty else 0.0, precision=precision,
        method="auto" if cfg.grad_path == "fast" else "autograd", architecture=cfg.architecture, k=cfg.k,
        dead_mask=dead, aux_coefficient=cfg.aux_coefficient if dead is not None else 0.0, aux_k=cfg.aux_k,
        aux_normalised=cfg.aux_loss == "normalised")
    return dict(loss=p.loss, mse=p.mse, l1=p.l1, aux=p.aux, l0=p.l0, fired=p.fired)


def encoder_init_scale(cfg: SAETrainConfig, d_in: int) -> float:
    """Return the factor on W_encᵀ = W_dec at initialisation.

    For random unit rows w, E[relu(w·x) w] = x / (2·d_in): a ReLU SAE with W_enc = W_decᵀ starts by
    reconstructing x̄ · d_sae / (2·d_in) (4× too large at 512 -> 4096) and spends its first steps shrinking it.
    Scaling the encoder by 2·d_in/d_sae starts it near x̂ ≈ x. TopK keeps few latents: no such blow-up.
    """
    if cfg.encoder_init_scale is not None:
        return cfg.encoder_init_scale
    return min(1.0, 2 * d_in / cfg.d_sae) if cfg.arch.activation is Activation.RELU else 1.0


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


@dataclass
class _Training:
    """The state of one training run that a checkpoint carries: SAE, optimiser, firing history, progress."""

    sae: SparseAutoencoder
    scale: float  # training sees x · scale
    optimizer: torch.optim.Optimizer
    tracker: metrics.FiringTracker
    step: int = 0
    records: list[dict] = field(default_factory=list)
    resamples: list[dict] = field(default_factory=list)
    elapsed: float = 0.0  # seconds spent before this process resumed

    def state(self, started: float) -> dict:
        return {"sae": self.sae.state_dict(), "optimizer": self.optimizer.state_dict(),
                "tracker": self.tracker.state_dict(), "step": self.step, "scale": self.scale,
                "records": self.records, "resamples": self.resamples, "elapsed": self.elapsed + time.time() - started}

    def load(self, state: dict) -> None:
        self.sae.load_state_dict(state["sae"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.tracker.load_state_dict(state["tracker"])
        self.step, self.scale, self.records = state["step"], state["scale"], state["records"]
        self.resamples, self.elapsed = state["resamples"], state["elapsed"]


@dataclass
class _LogWindow:
    """What the steps since the last log record add up to."""

    first_step: int
    started: float
    sums: dict[str, float] = field(default_factory=lambda: {"loss": 0.0, "aux": 0.0})
    recon: metrics.ReconstructionSums = field(default_factory=metrics.ReconstructionSums)

    def add(self, parts: dict, x: torch.Tensor) -> None:
        for name in self.sums:
            self.sums[name] += float(parts[name])
        # parts["mse"] is the objective's term, Σ_d err² averaged over the batch: reported only as mse and fvu.
        n = len(x)
        self.recon.add(n, float(parts["l0"]) * n, l1=float(parts["l1"]) * n, x=x, sq_err=float(parts["mse"]) * n)


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
    keep_freed_memory()  # each step frees and allocates the same MB-sized temporaries (sae/memory.py)
    run = _start(cfg, source, dev, checkpoint, log)
    if live_log is not None:
        live_log.write_text("".join(json.dumps(r) + "\n" for r in run.records))
    window = max(1, round(cfg.steps * cfg.dead_window_frac))
    resample_steps = {max(1, round(f * cfg.steps)) for f in cfg.resample_at}
    needs_dead = cfg.arch.auxk and cfg.aux_coefficient > 0
    key = _checkpoint_key(cfg, source)

    bar = tqdm(total=cfg.steps, initial=run.step, desc="train-sae", unit="step", disable=not progress)
    stream = source.stream(cfg.batch_size, start_token=run.step * cfg.batch_size)
    started = time.time()
    logged = _LogWindow(run.step, started)
    while run.step < cfg.steps:
        x = next(stream).to(dev, torch.float32)  # [B, d_in]
        if run.scale != 1.0:
            x = x * run.scale
        lr, l1 = schedules(run.step, cfg)
        parts = _optimiser_step(run, x, cfg, lr=lr, l1=l1, precision=precision,
                                dead=run.tracker.dead(run.step, window) if needs_dead else None, checkpoint=checkpoint)
        logged.add(parts, x)
        if run.step in resample_steps:
            _resample(run, cfg, source, l1, window, log)
        if run.step % cfg.log_every == 0 or run.step == cfg.steps:
            record = _log_record(run, logged, cfg, lr, l1, window)
            if live_log is not None:
                with live_log.open("a") as f:
                    f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record['loss']:.3g}", L0=f"{record['l0']:.1f}", dead=record["dead"])
            logged = _LogWindow(run.step, time.time())
        bar.update(1)
        if checkpoint is not None and run.step % cfg.checkpoint_every == 0 and run.step < cfg.steps:
            save_checkpoint(checkpoint, key, run.state(started))
        if on_step is not None:
            on_step(run.step, run.sae)
    bar.close()
    run.elapsed += time.time() - started
    return _finish(run, cfg, source, dev, precision, window)


def _checkpoint_key(cfg: SAETrainConfig, source) -> dict:
    return {"cfg": asdict(cfg), "source": source.name, "d_in": source.d_in}


def _start(cfg: SAETrainConfig, source, dev: torch.device, checkpoint: Path | None,
           log: Callable[[str], None]) -> _Training:
    """Return a freshly initialised run, or the checkpointed one when it belongs to this config and source."""
    sae, scale = initial_sae(cfg, source.sample(cfg.init_sample_tokens, seed=cfg.seed), dev)
    params = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec]  # a jumprelu threshold is set after training
    optimizer = fast.adam(params, lr=cfg.lr, betas=(0.9, 0.999))  # fused where available: 4x faster here
    run = _Training(sae, scale, optimizer, metrics.FiringTracker(cfg.d_sae, dev))
    saved = None if checkpoint is None else load_checkpoint(checkpoint, _checkpoint_key(cfg, source), dev)
    if saved is not None:
        run.load(saved)
        log(f"train-sae: resuming from step {run.step}/{cfg.steps}")
    return run


def _optimiser_step(run: _Training, x: torch.Tensor, cfg: SAETrainConfig, *, lr: float, l1: float, precision: str,
                    dead: torch.Tensor | None, checkpoint: Path | None) -> dict:
    """Take one step on x [B, d_in] (gradients, decoder-parallel part removed, Adam, unit-norm rows); return the
    loss parts. A non-finite loss stops training with the last good checkpoint named."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    parts = loss_and_grads(run.sae, x, cfg, l1=l1, precision=precision, dead=dead)
    loss = float(parts["loss"])
    if not math.isfinite(loss):
        last = (run.step // cfg.checkpoint_every) * cfg.checkpoint_every
        kept = f"; the last good checkpoint (step {last}) is kept at {checkpoint}" \
            if checkpoint is not None and checkpoint.is_file() else ""
        raise MonoscopeError(f"SAE loss became {loss} at step {run.step + 1}; stopped{kept}; try a lower --lr")
    project_decoder_grad_(run.sae)
    run.optimizer.step()
    run.sae.normalize_decoder_()
    run.step += 1
    run.tracker.update(run.step, parts["fired"], len(x))
    return parts


def _resample(run: _Training, cfg: SAETrainConfig, source, l1: float, window: int, log: Callable[[str], None]) -> None:
    """Resample the latents dead over the last `window` steps, as the paper's appendix does."""
    dead = run.tracker.dead(run.step, window)
    n_dead = int(dead.sum())
    if n_dead:
        seed = cfg.seed * 7919 + run.step
        sample = source.sample(cfg.resample_sample_tokens, seed=seed).to(run.sae.W_enc.device) * run.scale
        input_loss = losses.per_input_loss(run.sae, sample, architecture=cfg.architecture, k=cfg.k,
                                           l1_coefficient=l1 if cfg.arch.l1_penalty else 0.0)
        index = resample.resample_dead(run.sae, run.optimizer, dead, sample, input_loss,
                                       torch.Generator().manual_seed(seed),
                                       centre=run.sae.b_dec.detach() if cfg.resample_from == "x_minus_b_dec" else None)
        run.tracker.last_fired[index] = run.step  # a fresh latent gets a full window before it can be dead again
    run.resamples.append({"step": run.step, "count": n_dead})
    log(f"train-sae: step {run.step}: resampled {n_dead} dead latents")


def _log_record(run: _Training, logged: _LogWindow, cfg: SAETrainConfig, lr: float, l1: float, window: int) -> dict:
    """Return (and keep) the log.jsonl record of the steps since the last one."""
    n = run.step - logged.first_step
    _, dense = run.tracker.report()
    record = {"step": run.step, "tokens": run.step * cfg.batch_size, "lr": lr, "l1_coefficient": l1,
              **{k: v / n for k, v in logged.sums.items()}, **logged.recon.metrics(run.scale),
              "dead": int(run.tracker.dead(run.step, window).sum()), "dense": dense,
              "resampled": sum(r["count"] for r in run.resamples if r["step"] > logged.first_step),
              "tokens_per_s": n * cfg.batch_size / max(time.time() - logged.started, 1e-9)}
    run.records.append(record)
    return record


def _finish(run: _Training, cfg: SAETrainConfig, source, dev: torch.device, precision: str,
            window: int) -> tuple[SparseAutoencoder, dict[str, Any], list[dict]]:
    """Set a batchtopk SAE's global threshold, fold the scaling into the weights; return (SAE, summary, records)."""
    sae, scale = run.sae, run.scale
    if cfg.arch.fits_threshold:
        sample = source.sample(min(cfg.init_sample_tokens, 16 * cfg.batch_size), seed=cfg.seed + 1).to(dev) * scale
        with torch.no_grad():
            sae.threshold.fill_(batchtopk_threshold(sae, sample, cfg.k, cfg.batch_size))
    final_dead = int(run.tracker.dead(run.step, window).sum())
    fold_scale_(sae, scale)
    total = cfg.steps
    summary = {"steps": total, "tokens": total * cfg.batch_size, "seconds": round(run.elapsed, 2),
               "tokens_per_s": round(total * cfg.batch_size / max(run.elapsed, 1e-9)), "scale_factor": scale,
               "precision": precision, "dead": final_dead, "dead_window_steps": window,
               "resamples": run.resamples, "resampled_total": sum(r["count"] for r in run.resamples)}
    return sae.cpu().float(), summary, run.records
