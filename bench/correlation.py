"""Streaming activation correlations (sae/analysis/correlation.py): time and peak memory for two dictionaries.

    python bench/correlation.py [--tokens 1048576] [--d 4096] [--k 32] [--chunk 8192] [--baseline-tokens 65536]

Synthetic SAE codes (k non-zeros per token among d, gamma-distributed values, a shared latent so correlations are
not all noise); only `CorrelationSums.update` and `best_matches` are timed, not the code generation. Baseline in the
same run: the plain dense product a.T @ b (float32 BLAS) on the first --baseline-tokens, per token.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from sae.analysis.correlation import CorrelationSums


def codes(rng: np.random.Generator, n: int, d: int, k: int, shared: np.ndarray) -> np.ndarray:
    scores = rng.random((n, d), dtype=np.float32)
    scores[:, : shared.shape[1]] += shared  # the first units follow a shared cause
    idx = np.argpartition(-scores, k, axis=1)[:, :k]
    out = np.zeros((n, d), np.float32)
    np.put_along_axis(out, idx, rng.gamma(2.0, 1.0, (n, k)).astype(np.float32), axis=1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=1 << 20)
    parser.add_argument("--d", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=8192)
    parser.add_argument("--baseline-tokens", type=int, default=1 << 16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    sums = CorrelationSums.zeros(args.d, args.d)
    timed = dense = 0.0
    for start in range(0, args.tokens, args.chunk):
        n = min(args.chunk, args.tokens - start)
        cause = (rng.random((n, 1), dtype=np.float32) < 0.01).astype(np.float32) * 2
        a, b = codes(rng, n, args.d, args.k, cause), codes(rng, n, args.d, args.k, cause)
        t = time.perf_counter()
        sums.update(a, b)
        timed += time.perf_counter() - t
        if start < args.baseline_tokens:
            t = time.perf_counter()
            _ = a.T @ b
            dense += time.perf_counter() - t
    t = time.perf_counter()
    a_best, a_corr, _, _ = sums.best_matches()
    matching = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base_n = min(args.baseline_tokens, args.tokens)
    print(f"{args.d} x {args.d} units, k {args.k}, {args.tokens:,} tokens, chunks of {args.chunk}, "
          f"threads {args.threads}")
    print(f"streamed sums: {timed:.1f} s ({args.tokens / timed:,.0f} tokens/s); best matches: {matching:.1f} s; "
          f"peak RSS {peak:,.0f} MiB (the cross sums alone: {args.d * args.d * 8 / 2**20:,.0f} MiB)")
    print(f"baseline dense a.T @ b: {dense:.1f} s for {base_n:,} tokens ({base_n / dense:,.0f} tokens/s, "
          f"{args.tokens / (base_n / dense):,.0f} s projected for all)")
    print(f"median best-match correlation {np.nanmedian(a_corr):.3f}; shared units matched to themselves: "
          f"{int((a_best[:1] == 0).sum())} of 1")


if __name__ == "__main__":
    main()
