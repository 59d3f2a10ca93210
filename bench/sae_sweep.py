"""Sweep SAE hyper-parameters on a run's LM activations; one JSON line per SAE (for BENCHMARKS.md).

    python bench/sae_sweep.py --run runs/demo --tokens 1000000 relu:l1=2,lr=1e-3 relu:l1=3 topk:k=32 batchtopk:k=32

Each spec is `architecture:key=value,...` with SAETrainConfig field names (l1 = l1_coefficient). SAEs are
written to runs/<run>/saes/sweep-<i>; metrics (L0, FVU, dead, dense, loss recovered) come from held-out tokens.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sae.dictionary import SAETrainConfig, train_sae_on_run

ALIASES = {"l1": "l1_coefficient"}
STRINGS = ("precision", "b_dec_init", "grad_path", "resample_from", "aux_loss")
FLOAT_OR_NONE = ("encoder_init_scale",)  # default None, value a float (aux_k, k: ints)


def parse_spec(spec: str, base: dict) -> dict:
    """Return SAETrainConfig keyword arguments for `arch:key=value,...`."""
    arch, _, rest = spec.partition(":")
    out = {**base, "architecture": arch}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        key = ALIASES.get(key, key)
        if key == "resample_at":
            out[key] = tuple(float(v) for v in value.split("/") if v)
        elif key in STRINGS:
            out[key] = value
        else:
            default = getattr(SAETrainConfig(), key)
            out[key] = (float if key in FLOAT_OR_NONE else type(default) if default is not None else int)(float(value))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--d-sae", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prefix", default="sweep")
    parser.add_argument("specs", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for i, spec in enumerate(args.specs):
        kwargs = parse_spec(spec, {"tokens": args.tokens, "d_sae": args.d_sae})
        cfg = SAETrainConfig(**kwargs)
        started = time.time()
        m = train_sae_on_run(args.run, f"{args.prefix}-{i}", cfg, device="cpu", progress=False, log=lambda s: None)
        row = {"spec": spec, "tokens": cfg.tokens, "l0": round(m["l0"], 2), "fvu": round(m["fvu"], 4),
               "dead": m["dead"], "dead_pct": round(100 * m["dead"] / cfg.d_sae, 2), "dense": m["dense"],
               "loss_recovered": round(m["loss_recovered"], 4), "resampled": m["resampled_total"],
               "train_s": m["seconds"], "tokens_per_s": m["tokens_per_s"], "wall_s": round(time.time() - started, 1)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
