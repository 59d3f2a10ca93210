"""Benchmark (not a test): LM training tokens/s (fp32 vs bf16 autocast) and MLP-activation harvest tokens/s.

Harvest is `sae.lm.mlp_activations` (forward stopped at blocks.0.mlp.hook_post) next to transformer_lens's
`run_with_cache` as the baseline, in the same run on the same batches. The demo-size model (d_model 128,
d_mlp 512, n_ctx 128, vocab 4096) on random tokens: speed does not depend on the text.
Appends a section to BENCHMARKS.md.

    python bench/lm_train.py [--rounds 10] [--threads 2] [--no-append]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sae.lm.model import HOOK_POST, LMConfig, build_model, mlp_activations  # noqa: E402
from sae.lm.train import TrainLMConfig, make_optimizer, train_step  # noqa: E402


def interleaved(candidates: dict, tokens_per_call: dict, rounds: int, calls: int = 3) -> dict:
    """Return median tokens/s per candidate, timing them in alternating rounds so shared-core load hits all alike."""
    for fn in candidates.values():  # warm-up
        fn()
    samples = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append(tokens_per_call[name] * calls / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds of 3 calls per variant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = LMConfig()
    train_cfg = TrainLMConfig()

    train_batch = torch.randint(0, cfg.d_vocab, (train_cfg.batch_size, cfg.n_ctx))  # [32, 128]
    trainers = {}
    for name, bf16 in (("train fp32", False), ("train bf16 autocast", True)):
        model = build_model(cfg)
        optimizer = make_optimizer(model, train_cfg)
        trainers[name] = (lambda m, o, b: lambda: train_step(m, o, train_batch, bf16=b, grad_clip=1.0))(
            model, optimizer, bf16)
    rows = interleaved(trainers, dict.fromkeys(trainers, train_batch.numel()), args.rounds)

    model = build_model(cfg).eval()
    harvest_batch = torch.randint(0, cfg.d_vocab, (64, cfg.n_ctx))  # [64, 128]
    ours = mlp_activations(model, harvest_batch)
    _, cache = model.run_with_cache(harvest_batch, names_filter=HOOK_POST)
    torch.testing.assert_close(ours, cache[HOOK_POST])  # same numbers, or the speed means nothing

    def baseline():
        with torch.no_grad():
            model.run_with_cache(harvest_batch, names_filter=HOOK_POST)

    harvesters = {"harvest run_with_cache (baseline)": baseline,
                  "harvest mlp_activations (stop at hook)": lambda: mlp_activations(model, harvest_batch)}
    rows |= interleaved(harvesters, dict.fromkeys(harvesters, harvest_batch.numel()), args.rounds)

    load = os.getloadavg()[0]
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS") if k in os.environ)
    command = f"{env} python bench/lm_train.py " + " ".join(sys.argv[1:])
    lines = [
        f"\n## LM training and activation harvest ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n",
        f"Command: `{command.strip()}`. Model d_model {cfg.d_model}, d_mlp {cfg.d_mlp}, n_ctx {cfg.n_ctx}, "
        f"vocab {cfg.d_vocab}; train batch {train_cfg.batch_size}x{cfg.n_ctx}, harvest batch 64x{cfg.n_ctx}; "
        f"{args.threads} threads, torch {torch.__version__}, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, {platform.machine()}, 1-min load average at the end {load:.1f} "
        f"(the cores are shared: figures are lower bounds). Median of {args.rounds} alternating rounds.\n",
        "| what | tokens/s |",
        "| --- | ---: |",
        *[f"| {name} | {value:,.0f} |" for name, value in rows.items()],
        f"\nbf16 autocast vs fp32 training: {rows['train bf16 autocast'] / rows['train fp32']:.2f}x; "
        f"stop-at-hook harvest vs run_with_cache: "
        f"{rows['harvest mlp_activations (stop at hook)'] / rows['harvest run_with_cache (baseline)']:.2f}x.\n",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
