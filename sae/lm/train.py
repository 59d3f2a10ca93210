"""Language-model stage: train the one-layer model on the corpus rows, report held-out loss vs a unigram baseline.

AdamW with linear warm-up then cosine decay; bf16 autocast on CPUs with bf16 instructions (AVX512_BF16/AMX:
measured 24k vs 13.5k tokens/s here). A checkpoint (model, optimiser, step) goes to the stage's work folder
every `checkpoint_every_s` seconds, and a re-run with the same config resumes from it; batch order depends
only on (seed, step), so a resumed run sees the same batches it would have seen.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from sae import rundir
from sae.checkpoint import load_checkpoint, save_checkpoint
from sae.corpus.build import load_corpus_meta, load_heldout, load_tokens
from sae.device import bf16_is_fast, resolve_device
from sae.errors import MonoscopeError
from sae.lm.config import AUTOCASTS, LMConfig, TrainLMConfig
from sae.lm.model import build_model, lm_loss, save_lm

CHECKPOINT = "checkpoint.pt"


def use_bf16(device: torch.device, autocast: str, d_model: int = 128) -> bool:
    """Return whether to train under bf16 autocast: asked for, or "auto" where it is faster.

    On CPU, bf16 pays off only with bf16 matmul instructions (AVX512_BF16/AMX; AVX-512 alone emulates them, 4x
    slower than fp32) and matrices big enough to amortise the casts: at d_model 32 it was slower than fp32 here.
    """
    if autocast not in AUTOCASTS:
        raise MonoscopeError(f"autocast must be auto, bf16 or fp32, got {autocast!r}")
    if autocast != "auto":
        return autocast == "bf16"
    return bf16_is_fast(device) and (device.type == "cuda" or d_model >= 128)


def lr_at(step: int, total: int, cfg: TrainLMConfig) -> float:
    """Return the learning rate at `step`: linear warm-up, then cosine from lr to lr * min_lr_frac."""
    warmup = max(1, int(total * cfg.warmup_frac))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def batch_rows(step: int, n_rows: int, batch_size: int, seed: int) -> np.ndarray:
    """Return the row indices [batch_size] of `step`: a seeded permutation per pass over the rows."""
    per_epoch = max(1, n_rows // batch_size)
    epoch, index = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_rows)
    if n_rows < batch_size:
        return np.resize(order, batch_size)
    return order[index * batch_size : (index + 1) * batch_size]


def unigram_loss(train: np.ndarray, heldout: np.ndarray, d_vocab: int) -> float:
    """Return held-out cross-entropy (nats) of next tokens under train unigram frequencies (add-one smoothed)."""
    counts = np.bincount(np.asarray(train[:, 1:]).ravel(), minlength=d_vocab).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(-log_p[np.asarray(heldout[:, 1:]).ravel()].mean())


@torch.no_grad()
def heldout_loss(model, heldout: np.ndarray, batch_size: int = 32) -> float:
    """Return the mean next-token loss of the model over held-out rows [n, T] (token-weighted)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(heldout), batch_size):
        batch = torch.from_numpy(np.asarray(heldout[start : start + batch_size], dtype=np.int64))
        total += float(lm_loss(model, batch)) * len(batch)
        count += len(batch)
    return total / max(1, count)


def train_step(model, optimizer, batch: torch.Tensor, *, bf16: bool, grad_clip: float) -> float:
    """Return the loss of one AdamW step on tokens [B, T] (bf16 autocast for the forward when asked)."""
    with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = lm_loss(model, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


def make_optimizer(model, cfg: TrainLMConfig) -> torch.optim.Optimizer:
    """Return AdamW over every parameter (betas 0.9/0.99, the schedule sets the lr each step)."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)


@dataclass(frozen=True)
class LMPlan:
    """What one train-lm run does: the model's config (fitted to the corpus), the stage's config and inputs."""

    lm_cfg: LMConfig
    cfg: TrainLMConfig
    config: dict  # the stage's config, recorded in its manifest
    inputs: dict[str, str]  # fingerprints of the stages read (the corpus)

    @property
    def total_steps(self) -> int:
        return self.cfg.tokens // (self.cfg.batch_size * self.lm_cfg.n_ctx)


def train_lm(
    run_dir: Path, lm_cfg: LMConfig, cfg: TrainLMConfig, *, device: str = "auto", force: bool = False,
    progress: bool = True, checkpoint_every_s: float = 60.0, log: Callable[[str], None] = print,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Return runs/<run>/lm, training it unless it is up to date with the configs and corpus (or `force`).

    `on_step(step, loss)` is called after every optimiser step (progress reporting; raising stops the run,
    leaving the last checkpoint to resume from).
    """
    run_dir = rundir.check_run_dir(run_dir)
    out_dir = run_dir / "lm"
    plan = _plan(run_dir, lm_cfg, cfg)
    if not force and rundir.is_current(out_dir, config=plan.config, inputs=plan.inputs):
        log(f"train-lm: up to date at {out_dir} (use --force to retrain)")
        return out_dir
    dev = resolve_device(device)
    train = load_tokens(run_dir, "train")
    model = build_model(plan.lm_cfg, run_dir / "corpus", device=dev)
    ckpt_path = rundir.work_dir(out_dir) / CHECKPOINT
    if force:
        ckpt_path.unlink(missing_ok=True)
    metrics = _optimise(model, train, plan, dev, ckpt_path, checkpoint_every_s, progress, log, on_step)
    heldout = load_heldout(run_dir, cfg.heldout_tokens)
    metrics = {"heldout_loss": heldout_loss(model, heldout),
               "unigram_loss": unigram_loss(train, heldout, plan.lm_cfg.d_vocab),
               **metrics, "heldout_tokens_evaluated": int(heldout.size), "device": str(dev)}
    with rundir.write_stage(out_dir, stage="lm", config=plan.config, inputs=plan.inputs) as tmp:
        save_lm(model, tmp)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))
    log(f"train-lm: held-out loss {metrics['heldout_loss']:.3f} nats vs unigram {metrics['unigram_loss']:.3f} "
        f"({metrics['tokens']:,} tokens, {metrics['tokens_per_s']:,} tokens/s) at {out_dir}")
    return out_dir


def _plan(run_dir: Path, lm_cfg: LMConfig, cfg: TrainLMConfig) -> LMPlan:
    """Return the run's plan: the model's context and vocabulary are the corpus's; refuse less than one batch."""
    meta = load_corpus_meta(run_dir)
    if (lm_cfg.n_ctx, lm_cfg.d_vocab) != (meta["n_ctx"], meta["vocab_size"]):
        lm_cfg = replace(lm_cfg, n_ctx=meta["n_ctx"], d_vocab=meta["vocab_size"])
    if cfg.tokens < cfg.batch_size * lm_cfg.n_ctx:
        raise MonoscopeError(f"--tokens must be at least one batch ({cfg.batch_size * lm_cfg.n_ctx}), got {cfg.tokens}")
    return LMPlan(lm_cfg, cfg, config={"lm": asdict(lm_cfg), "train": asdict(cfg)},
                  inputs={"corpus": rundir.fingerprint(run_dir / "corpus", "corpus")})


def _optimise(model, train: np.ndarray, plan: LMPlan, dev: torch.device, ckpt_path: Path, checkpoint_every_s: float,
              progress: bool, log: Callable[[str], None], on_step: Callable[[int, float], None] | None) -> dict:
    """Train `model` in place on rows of `train` [n, T] (resuming a matching checkpoint); return the run's figures."""
    cfg, total_steps = plan.cfg, plan.total_steps
    optimizer = make_optimizer(model, cfg)
    bf16 = use_bf16(dev, cfg.autocast, plan.lm_cfg.d_model)
    key = {**plan.config, "inputs": plan.inputs}
    step = 0
    saved = load_checkpoint(ckpt_path, key, dev)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        step = int(saved["step"])
        log(f"train-lm: resuming from step {step}/{total_steps}")
    log(f"train-lm: {sum(p.numel() for p in model.parameters()):,} parameters, {total_steps} steps of "
        f"{cfg.batch_size}x{plan.lm_cfg.n_ctx} tokens on {dev}{' (bf16 autocast)' if bf16 else ''}")
    model.train()
    started = last_ckpt = time.time()
    first_step, ema = step, None
    bar = tqdm(total=total_steps, initial=step, desc="train-lm", unit="step", disable=not progress)
    while step < total_steps:
        rows = batch_rows(step, len(train), cfg.batch_size, plan.lm_cfg.seed)
        batch = torch.from_numpy(np.asarray(train[np.sort(rows)], dtype=np.int64)).to(dev)  # [B, T]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, cfg)
        value = train_step(model, optimizer, batch, bf16=bf16, grad_clip=cfg.grad_clip)
        step += 1
        if not math.isfinite(value):
            raise MonoscopeError(f"training diverged at step {step} (loss {value}); try a lower --lr")
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.3f}")
        if time.time() - last_ckpt > checkpoint_every_s and step < total_steps:
            save_checkpoint(ckpt_path, key, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                             "step": step})
            last_ckpt = time.time()
        if on_step is not None:
            on_step(step, value)
    bar.close()
    seconds = time.time() - started
    tokens_per_step = cfg.batch_size * plan.lm_cfg.n_ctx
    return {"train_loss_ema": ema, "tokens": total_steps * tokens_per_step, "steps": total_steps,
            "seconds": round(seconds, 2),
            "tokens_per_s": round((total_steps - first_step) * tokens_per_step / max(seconds, 1e-9)),
            "bf16_autocast": bf16}


def use_pretrained(
    run_dir: Path, name: str, *, device: str = "auto", force: bool = False, log: Callable[[str], None] = print,
) -> Path:
    """Return runs/<run>/lm pointing at a cached transformer_lens model (no weights copied), with its losses."""
    from sae.lm.model import load_pretrained

    run_dir = rundir.check_run_dir(run_dir)
    out_dir = run_dir / "lm"
    config = {"pretrained": name}
    corpus_done = rundir.read_manifest(run_dir / "corpus") is not None
    inputs = {"corpus": rundir.fingerprint(run_dir / "corpus", "corpus")} if corpus_done else {}
    if not force and rundir.is_current(out_dir, config=config, inputs=inputs):
        log(f"train-lm: up to date at {out_dir} (use --force to redo)")
        return out_dir
    model = load_pretrained(name, resolve_device(device))
    metrics: dict = {"pretrained": name}
    if corpus_done:
        meta = load_corpus_meta(run_dir)
        if meta["vocab_size"] > model.cfg.d_vocab:
            raise MonoscopeError(
                f"corpus vocabulary ({meta['vocab_size']}) does not fit {name} ({model.cfg.d_vocab}): "
                f"rebuild it with `monoscope corpus --tokenizer` set to the model's tokenizer"
            )
        train, heldout = load_tokens(run_dir, "train"), load_heldout(run_dir, TrainLMConfig.heldout_tokens)
        metrics |= {"heldout_loss": heldout_loss(model, heldout),
                    "unigram_loss": unigram_loss(train, heldout, model.cfg.d_vocab)}
    with rundir.write_stage(out_dir, stage="lm", config=config, inputs=inputs) as tmp:
        save_lm(model, tmp, pretrained=name)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))
    log(f"train-lm: using pretrained {name} at {out_dir} " + json.dumps(metrics))
    return out_dir
