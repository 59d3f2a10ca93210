"""The fast step's kernels compiled by numba (imported lazily by sae.dictionary.fast.select.kernels: importing numba
takes ~0.5 s; torch ops stand in where numba is missing).

`rows_topk`: the k largest integer keys of each row, TopK's selection on a bf16 pre-activation read as int16
(sae/dictionary/fast/select.py says why; the analysis reads fp32 as int32: sae/analysis/shard.py), without torch.topk's
per-row sort of (key, index) pairs. Per row: the maxima of LANES interleaved lanes (lane j holds entries j, j + LANES,
...: a pass over the row that vectorises), then the k-th largest of those maxima, a bound no larger than the row's k-th
largest entry (k lanes each hold an entry at least that large); only entries of lanes whose maximum reaches the bound
can pass it, so a strided scan of those lanes collects the few candidates (~40 of 4,096 for k 32 on real
pre-activations), and a quickselect of them gives the k largest. Ties at the k-th value are broken by scan order
(torch.topk breaks them in its own order: the keys match, the columns may differ).

`group_by_latent`: the active entries in latent order, a counting sort (0.3 against ~3 ms for torch.argsort and
three gathers of 131,072 entries). `entry_grads`: dL/dpre at the active entries only (sae/dictionary/fast/
gradients.py), one dot product per entry: 3.5 against 5.5 ms for torch.sparse.sampled_addmm on 131,072 entries of
[4,096, 512] (2 threads).
"""

from __future__ import annotations

import numba
import numpy as np

LANES = 128  # a row's width must be a multiple; k at most this


@numba.njit(nogil=True, cache=True)
def _kth_largest(buf, n, k):
    """Return the k-th largest of buf[:n] (1 <= k <= n), reordering buf in place (quickselect: no allocation)."""
    lo, hi, target = 0, n - 1, k - 1  # the index the value would have in descending order
    while lo < hi:
        pivot = buf[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while buf[i] > pivot:
                i += 1
            while buf[j] < pivot:
                j -= 1
            if i <= j:
                buf[i], buf[j] = buf[j], buf[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            break
    return buf[target]


@numba.njit(parallel=True, nogil=True, cache=True)
def rows_topk(keys, k, out_keys, out_cols, tied, n_chunks):
    """Write each row's k largest keys [B, k] (any order) and their columns into out_keys, out_cols, and into tied [B]
    whether the row had more entries equal to its k-th largest key than places left for them (a choice was made)."""
    n_rows, width = keys.shape
    per = (n_rows + n_chunks - 1) // n_chunks
    for chunk in numba.prange(n_chunks):
        lane_max = np.empty(LANES, keys.dtype)
        scratch = np.empty(max(width, LANES), keys.dtype)
        cand_keys = np.empty(width, keys.dtype)
        cand_cols = np.empty(width, np.int64)
        for r in range(chunk * per, min(n_rows, (chunk + 1) * per)):
            row = keys[r]
            for j in range(LANES):
                lane_max[j] = row[j]
            for q in range(1, width // LANES):  # (a stepped range here stops the loop vectorising: 12 ms, not 1)
                base = q * LANES
                for j in range(LANES):
                    v = row[base + j]
                    lane_max[j] = v if v > lane_max[j] else lane_max[j]
            scratch[:LANES] = lane_max
            bound = _kth_largest(scratch, LANES, k)
            n = 0
            for j in range(LANES):
                if lane_max[j] >= bound:
                    for q in range(width // LANES):
                        t = q * LANES + j
                        if row[t] >= bound:
                            cand_keys[n] = row[t]
                            cand_cols[n] = t
                            n += 1
            scratch[:n] = cand_keys[:n]
            kth = _kth_largest(scratch, n, k)  # the row's k-th largest key (n >= k)
            m = 0
            for i in range(n):
                if cand_keys[i] > kth:
                    out_keys[r, m] = cand_keys[i]
                    out_cols[r, m] = cand_cols[i]
                    m += 1
            tied[r] = False
            for i in range(n):
                if cand_keys[i] == kth:
                    if m == k:
                        tied[r] = True
                        break
                    out_keys[r, m] = cand_keys[i]
                    out_cols[r, m] = cand_cols[i]
                    m += 1


@numba.njit(parallel=True, nogil=True, fastmath=True, cache=True)
def entry_grads(starts, counts, rows, values, W, g, shift, out):
    """For each latent j and each of its entries n (by-latent order, from starts[j], counts[j] of them): out[n] =
    W[j]·g[rows[n]] + shift where values[n] > 0, else 0 (the ReLU's gradient)."""
    d = W.shape[1]
    for j in numba.prange(counts.shape[0]):
        for n in range(starts[j], starts[j] + counts[j]):
            if values[n] > 0:
                r = rows[n]
                dot = np.float32(0.0)
                for c in range(d):
                    dot += W[j, c] * g[r, c]
                out[n] = dot + shift
            else:
                out[n] = 0.0


@numba.njit(nogil=True, cache=True)
def group_by_latent(cols, rows, values, counts, lat_rows, lat_cols, lat_values):
    """Write the entries (cols, rows, values) grouped by latent, in their order within a latent (a stable counting
    sort: one pass to count, one to place), and each latent's count into counts [n_latents]."""
    counts[:] = 0
    for n in range(cols.shape[0]):
        counts[cols[n]] += 1
    place = np.empty(counts.shape[0], np.int64)
    total = 0
    for j in range(counts.shape[0]):
        place[j] = total
        total += counts[j]
    for n in range(cols.shape[0]):
        j = cols[n]
        p = place[j]
        lat_rows[p], lat_cols[p], lat_values[p] = rows[n], j, values[n]
        place[j] = p + 1

