"""Pinned sampling latency (sae/steering.py through app/web/steer.py, as the API runs it): 64 tokens, one pin.

    python bench/steer.py --run runs/demo [--basis topk-4096] [--tokens 64] [--repeats 50] [--threads 2]

Loads the LM and the SAE once (as a server process does), then times `run_steering` end to end (tokenize, the
batched steered + unsteered forwards, the result) per request; prints p50 and p99. Each request uses another seed
and another feature, so nothing is cached between them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from app.read.steer_schemas import PinOut, SteerRequest
from app.web.infer import live_model
from app.web.steer import run_steering


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--basis", default="topk-4096")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    live = live_model(args.run, (args.basis,))
    torch.set_num_threads(args.threads)
    print(f"load: {time.perf_counter() - started:.2f} s")
    times = []
    for i in range(args.repeats + 3):
        pin = PinOut(basis=args.basis, index=(37 * i) % 4096, value=8.0, max_activation=8.0, label=None, url="")
        request = SteerRequest(prompt="def f(x):\n", pins=[pin.model_dump(include={"basis", "index", "value"})],
                               max_tokens=args.tokens, temperature=1.0, seed=i)
        t = time.perf_counter()
        run_steering(live, "bench", request, [pin])
        if i >= 3:  # warm-up
            times.append(time.perf_counter() - t)
    p50, p99 = np.percentile(times, [50, 99])
    print(f"{args.tokens} tokens, 1 pin, {args.threads} threads, {len(times)} requests: p50 {p50 * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms")


if __name__ == "__main__":
    main()
