"""SAE training speed and quality, Monoscope against SAELens, side by side in one run on the same activations.

    .venv/bin/python bench/sae_train.py [--steps 150] [--threads 2] [--precisions fp32,bf16] [--no-append]
    .venv/bin/python bench/sae_train.py --step-table     # one step per method (autograd / dense / sparse) by L0

Same shapes (d_in 512 -> d_sae 4,096, batch 4,096), same batches in the same order (one ArrayActivations stream
feeds both), same number of tokens, same lr schedule (1% warm-up, linear decay over the last 20%), for a TopK SAE
(k 32, AuxK weight 1/32, dead window 5% of the steps) and/or the paper's ReLU + L1 SAE (λ warm-up over 5%).
Monoscope: `sae.dictionary.train.fit_sae` (unit-norm decoder, Adam, resampling for ReLU; the fast step of sae/dictionary/fast/step.py).
SAELens: `SAETrainer.fit` on a `TopKTrainingSAE` / `StandardTrainingSAE`, its defaults otherwise (decoder init norm
0.1, L1 weighted by decoder norms, TopK on decoder-norm-rescaled pre-activations, grad-norm clipping at 1).
Activations: MLP activations of the demo LM when runs/demo/lm exists, else a synthetic [N, 512] non-negative array
(sparse codes over 8,192 directions, then ReLU); scaled to mean norm √512 once, so neither side rescales.
Final loss: each SAE's own encode/decode, one function, the same held-out activations: mse (Σ over d_in, mean over
tokens), plus for ReLU λ · Σ_j |f_j|·‖W_dec,j‖ (the paper's loss when decoder rows have unit norm; SAELens's
training loss otherwise). tokens/s = tokens / wall time of the whole fit call (set-up included).
Appends a section to BENCHMARKS.md unless --no-append.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
ROOT = Path(__file__).resolve().parents[1]
D_IN, D_SAE, BATCH = 512, 4096, 4096


def synthetic_activations(n: int, seed: int = 0):
    """Return [n, 512] float32 non-negative activations: ~24 Zipf-distributed active codes per token, then ReLU."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    n_codes, per_token = 8192, 24
    directions = torch.randn(n_codes, D_IN, generator=gen) / math.sqrt(D_IN) * 3  # [n_codes, d_in]
    probs = 1.0 / (torch.arange(n_codes) + 20.0) ** 0.9
    bias = -0.3 + 0.2 * torch.randn(D_IN, generator=gen)  # per-neuron threshold: ~40% of neurons fire per token
    out = np.empty((n, D_IN), dtype=np.float32)
    for start in range(0, n, 8192):
        m = min(8192, n - start)
        idx = torch.multinomial(probs, m * per_token, replacement=True, generator=gen)
        mag = torch.empty(m * per_token).exponential_(1.0, generator=gen)
        offsets = torch.arange(0, m * per_token, per_token)
        x = F.embedding_bag(idx, directions, offsets, mode="sum", per_sample_weights=mag)  # [m, d_in]
        x += bias + 0.05 * torch.randn(m, D_IN, generator=gen)
        out[start:start + m] = torch.relu(x).numpy()
    return out


def load_data(n: int, kind: str):
    """Return (array [n, 512] scaled to mean norm √512, description)."""
    import numpy as np

    lm_dir = ROOT / "runs" / "demo" / "lm"
    if kind == "lm" or (kind == "auto" and lm_dir.is_dir()):
        from sae.activations import LMActivations

        data = LMActivations(ROOT / "runs" / "demo").sample(n, seed=0).numpy()
        what = f"MLP activations of the demo LM (runs/demo, {n:,} tokens)"
    else:
        data = synthetic_activations(n)
        what = f"synthetic non-negative activations ({n:,} tokens; runs/demo/lm absent)"
    data *= math.sqrt(D_IN) / float(np.linalg.norm(data, axis=1).mean())
    return data, what


def evaluate(encode, decode, W_dec, x, l1: float) -> dict:
    """Return loss parts of one SAE on held-out x [n, d_in] (fp32; the same function for both sides).

    loss = mse + l1 · Σ_j |f_j|·‖W_dec,j‖ (l1 = 0 for TopK, whose loss is the mse alone)."""
    import torch

    with torch.no_grad():
        f = encode(x)  # [n, d_sae]
        mse = float((decode(f) - x).pow(2).sum(-1).mean())
        l1_part = float((f.abs() * W_dec.norm(dim=1)).sum(-1).mean())
        fvu = mse / float((x - x.mean(0)).pow(2).sum(-1).mean())
        return {"loss": mse + l1 * l1_part, "mse": mse, "fvu": fvu, "l0": float((f != 0).sum(-1).float().mean())}


def run_monoscope(data, steps: int, arch: str, precision: str, args) -> tuple[float, dict]:
    from sae.activations import ArrayActivations
    from sae.dictionary.config import SAETrainConfig
    from sae.dictionary.train import fit_sae

    source = ArrayActivations(data, seed=0, name="bench")
    cfg = SAETrainConfig(architecture=arch, k=args.k if arch == "topk" else None, d_sae=D_SAE,
                         l1_coefficient=args.l1, lr=args.lr, tokens=steps * BATCH,
                         batch_size=BATCH, precision=precision, scale_activations=False, log_every=max(1, steps),
                         checkpoint_every=10 ** 9,  # resampling for ReLU only: TopK has AuxK (and SAELens none)
                         **({"resample_at": ()} if args.no_resample or arch != "relu" else {}))
    started = time.perf_counter()
    sae, summary, _ = fit_sae(cfg, source, device="cpu", progress=False, log=lambda message: None)
    seconds = time.perf_counter() - started
    heldout = source.eval_activations(args.eval_tokens)
    l1 = args.l1 if arch == "relu" else 0.0
    return seconds, evaluate(sae.encode, sae.decode, sae.W_dec.detach(), heldout, l1)


def run_saelens(data, steps: int, arch: str, precision: str, args) -> tuple[float, dict]:
    from sae_lens import (
        StandardTrainingSAE,
        StandardTrainingSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    from sae.activations import ArrayActivations

    source = ArrayActivations(data, seed=0, name="bench")
    common = dict(d_in=D_IN, d_sae=D_SAE, dtype="float32", device="cpu", normalize_activations="none")
    if arch == "relu":
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(
            l1_coefficient=args.l1, l1_warm_up_steps=int(steps * 0.05), **common))
    else:  # AuxK weight as ours (its default is 1.0)
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(k=args.k, aux_loss_coefficient=1 / 32, **common))
    cfg = SAETrainerConfig(
        total_training_samples=steps * BATCH, train_batch_size_samples=BATCH, lr=args.lr, lr_end=args.lr,
        lr_warm_up_steps=max(1, int(steps * 0.01)), lr_decay_steps=int(steps * 0.2), device="cpu",
        dead_feature_window=max(1, round(steps * 0.05)),  # as ours (dead_window_frac), for AuxK
        autocast=precision == "bf16", checkpoint_path=None, n_checkpoints=0, save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False))
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=source.stream(BATCH))
    started = time.perf_counter()
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar
        trainer.fit()
    seconds = time.perf_counter() - started
    heldout = source.eval_activations(args.eval_tokens)
    sae.eval()
    l1 = args.l1 if arch == "relu" else 0.0
    return seconds, evaluate(sae.encode, sae.decode, sae.W_dec.detach(), heldout, l1)


def encoder_floor(precision: str, steps: int = 30) -> float:
    """Tokens/s of the encoder matmul alone (x [BATCH, D_IN] @ W_enc [D_IN, D_SAE] + b_enc, into a reused output, in
    the step's precision): the one cost of a step that no sparsity removes, so a fit at half this rate spends half its
    time in it."""
    import torch

    dt = torch.bfloat16 if precision == "bf16" else torch.float32
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(BATCH, D_IN, generator=gen).to(dt), torch.randn(D_IN, D_SAE, generator=gen).to(dt)
    b, out = torch.zeros(D_SAE, dtype=dt), torch.empty(BATCH, D_SAE, dtype=dt)
    for _ in range(3):
        torch.addmm(b, x, w, out=out)
    started = time.perf_counter()
    for _ in range(steps):
        torch.addmm(b, x, w, out=out)
    return steps * BATCH / (time.perf_counter() - started)


def step_table(args) -> list[str]:
    """Time one loss_and_grads call per (SAE, precision, method) on a fixed batch; return markdown table lines.

    ReLU SAEs get a uniform encoder bias chosen to land near a target L0 (speed depends on sizes and L0 only)."""
    import torch

    from sae.dictionary.fast.step import loss_and_grads
    from sae.dictionary.model import SAEConfig, SparseAutoencoder

    x = torch.from_numpy(load_data(BATCH, "synthetic")[0])  # [B, d_in]
    cases = [("topk k=32", SAEConfig(D_IN, D_SAE, "topk", k=32), 0.0)]
    cases += [(f"relu, bias {b}", SAEConfig(D_IN, D_SAE), b) for b in (-3.0, -2.0, -0.5)]
    lines = ["| SAE | L0 | precision | autograd ms | dense ms | sparse ms | best tokens/s |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for name, cfg, bias in cases:
        sae = SparseAutoencoder(cfg).init_weights(torch.Generator().manual_seed(0))
        with torch.no_grad():
            sae.b_enc.fill_(bias)
        for precision in args.precisions.split(","):
            times, l0 = {}, 0.0
            for method in ("autograd", "dense", "sparse"):
                call = lambda: loss_and_grads(sae, x, l1_coefficient=args.l1, precision=precision, method=method)  # noqa: E731
                l0 = float(call().l0)
                started = time.perf_counter()
                for _ in range(args.repeats):
                    call()
                times[method] = (time.perf_counter() - started) / args.repeats * 1e3
            best = min(times.values())
            lines.append(f"| {name} | {l0:.0f} | {precision} | {times['autograd']:.0f} | {times['dense']:.0f} | "
                         f"{times['sparse']:.0f} | {BATCH / best * 1e3:,.0f} |")
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--archs", default="topk,relu", help="topk (k latents, AuxK) and/or relu (L1, the paper's)")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--l1", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--data", choices=["auto", "lm", "synthetic"], default="auto")
    parser.add_argument("--data-tokens", type=int, default=262_144)
    parser.add_argument("--eval-tokens", type=int, default=8192)
    parser.add_argument("--no-resample", action="store_true", help="Monoscope's ReLU without dead-latent resampling")
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--step-table", action="store_true", help="time single steps per method instead")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    import sae.dictionary.fast.step  # noqa: F401  (loaded now: edits made while the bench runs do not leak into it)
    import sae.dictionary.train  # noqa: F401

    torch.set_num_threads(args.threads)
    if args.step_table:
        lines = step_table(args)
        if not args.no_append:
            append_lines([
                "", f"## SAE training step by method ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
                f"Command: `{_command()}`", "",
                f"One `sae.dictionary.fast.step.loss_and_grads` call (loss + all grads) on a batch of {BATCH} synthetic activations, "
                f"{D_IN} -> {D_SAE}, mean of {args.repeats} after a warm-up call, threads {args.threads}, load average "
                f"{os.getloadavg()[0]:.1f}. autograd = the dense reference (torch.autocast for bf16); dense = "
                "hand-written, buffers reused; sparse = active latents only. Adam not included.", "", *lines])
        return
    data, what = load_data(args.data_tokens + args.eval_tokens, args.data)
    tokens = args.steps * BATCH
    print(f"data: {what}; {args.steps} steps x {BATCH} = {tokens:,} tokens per run; threads {args.threads}")
    rows = []
    for arch in args.archs.split(","):
        for precision in args.precisions.split(","):
            result = {}
            for side, fn in (("SAELens", run_saelens), ("Monoscope", run_monoscope)):
                gc.collect()
                seconds, parts = fn(data, args.steps, arch, precision, args)
                result[side] = (tokens / seconds, parts)
                print(f"{arch:4s} {precision:5s} {side:9s} {tokens / seconds:8.0f} tokens/s  ({seconds:6.1f} s)  "
                      f"final loss {parts['loss']:.4g}  mse {parts['mse']:.4g}  FVU {parts['fvu']:.3f}  "
                      f"L0 {parts['l0']:.1f}", flush=True)
            (ts, ps), (tm, pm) = result["SAELens"], result["Monoscope"]
            floor = encoder_floor(precision)
            print(f"{arch:4s} {precision:5s} ratio Monoscope/SAELens: speed {tm / ts:.2f}x, "
                  f"final loss {pm['loss'] / ps['loss']:.3f}; encoder matmul alone {floor:,.0f} tokens/s "
                  f"(Monoscope {tm / floor:.0%} of it)", flush=True)
            rows.append((arch, precision, ts, ps, tm, pm, floor))
    if not args.no_append:
        append_section(rows, what, args)


def _command() -> str:
    return ("WANDB_MODE=disabled .venv/bin/python bench/sae_train.py " + " ".join(sys.argv[1:])).strip()


def append_lines(lines: list[str]) -> None:
    with open(ROOT / "BENCHMARKS.md", "a") as f:
        f.write("\n".join(lines) + "\n")
    print("appended to BENCHMARKS.md")


def append_section(rows, what: str, args) -> None:
    command = _command()
    load = os.getloadavg()[0]
    lines = [
        "", f"## SAE training: Monoscope vs SAELens ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
        f"Command: `{command.strip()}`", "",
        f"d_in {D_IN} -> d_sae {D_SAE}, batch {BATCH}, {args.steps} steps ({args.steps * BATCH:,} tokens) per run, "
        f"lr {args.lr}, threads {args.threads}, load average {load:.1f} at the end. "
        f"Data: {what}. Monoscope: `sae.dictionary.train.fit_sae` (fast step of sae/dictionary/fast/step.py"
        f"{', no resampling' if args.no_resample else ', resampling for ReLU'}); SAELens {_saelens_version()}: "
        "`SAETrainer.fit`. Final loss on the same held-out activations: the mse for TopK, mse + λ·Σ|f|·‖W_dec‖ "
        "for ReLU.", "",
        "| SAE | precision | SAELens tokens/s | Monoscope tokens/s | speed ratio | encoder matmul alone (Monoscope's "
        "share) | SAELens final loss (L0, FVU) | Monoscope final loss (L0, FVU) | loss ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for arch, precision, ts, ps, tm, pm, floor in rows:
        name = f"topk k={args.k}" if arch == "topk" else f"relu λ={args.l1}"
        lines.append(f"| {name} | {precision} | {ts:,.0f} | {tm:,.0f} | {tm / ts:.2f}x | "
                     f"{floor:,.0f} ({tm / floor:.0%}) | {ps['loss']:.4g} ({ps['l0']:.0f}, {ps['fvu']:.3f}) | "
                     f"{pm['loss']:.4g} ({pm['l0']:.0f}, {pm['fvu']:.3f}) | {pm['loss'] / ps['loss']:.3f} |")
    append_lines(lines)


def _saelens_version() -> str:
    import sae_lens

    return sae_lens.__version__


if __name__ == "__main__":
    main()
