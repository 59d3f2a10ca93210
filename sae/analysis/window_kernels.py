"""The context windows' activations looked up in a spill batch, compiled by numba (loaded by sae.compiled.kernels;
sae/analysis/spill.py keeps the numpy path where numba is missing): numpy searched every window token's
(token, unit) key among all the batch's non-zeros and built [windows, 33] index arrays (1.7 s of a 262,144-token
analysis of 4,096 features); here a window token's unit is searched among its own token's few firing units."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, nogil=True, cache=True)
def fill_windows(acts, entry, center, unit, token0, counts, units, values, n_ctx, before):
    """acts[entry[m], w] = unit[m]'s activation at the local token center[m] - before + w, for the window tokens that
    lie in this batch (tokens token0 .. token0 + len(counts), non-zeros counts per token, units ascending within a
    token, values) and in the centre's sequence (a shard starts on a sequence boundary: a local token's position is
    token % n_ctx); 0 where the unit is silent, the other slots left as they are."""
    n_tokens, width = counts.shape[0], acts.shape[1]
    starts = np.zeros(n_tokens + 1, np.int64)
    for r in range(n_tokens):
        starts[r + 1] = starts[r] + counts[r]
    for m in numba.prange(entry.shape[0]):
        c, u, e = center[m], unit[m], entry[m]
        first = c - c % n_ctx
        for t in range(max(c - before, first, token0), min(c - before + width, first + n_ctx, token0 + n_tokens)):
            lo, hi = starts[t - token0], starts[t - token0 + 1]
            while lo < hi:  # the first of the token's units >= u
                mid = (lo + hi) >> 1
                if units[mid] < u:
                    lo = mid + 1
                else:
                    hi = mid
            found = lo < starts[t - token0 + 1] and units[lo] == u
            acts[e, t - c + before] = values[lo] if found else np.float32(0.0)
