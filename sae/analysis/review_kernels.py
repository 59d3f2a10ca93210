"""The review sample's clash test compiled by numba (loaded by sae.compiled.kernels; sae/analysis/review_sample.py
keeps the numpy path where numba is missing). numpy searched every query in the sorted keys of all units' open
windows and hashed every window in 33 passes over arrays of queries (2 s of a 262,144-token analysis of 4,096
features); here each query searches its own unit's few dozen open centres and text hashes, which stay in cache, and
hashes its window in one loop."""

from __future__ import annotations

import numba
import numpy as np

MULT_UNIT = np.uint64(0x9E3779B97F4A7C15)
MULT_TEXT = np.uint64(0x100000001B3)


@numba.njit(inline="always")
def _text_key(unit, center, tokens_flat, n_ctx, before, after):
    """review_sample.OpenWindows.text_keys of one window: the same hash, the same bits."""
    h = np.uint64(unit) * MULT_UNIT
    start = center // n_ctx * n_ctx
    for t in range(max(center - before, start), min(center + after + 1, start + n_ctx)):
        mixed = (h ^ (np.uint64(tokens_flat[t]) + np.uint64(1))) * MULT_TEXT
        h = mixed ^ (mixed >> np.uint64(29))
    return h


@numba.njit(parallel=True, nogil=True, cache=True)
def text_keys(units, centers, tokens_flat, n_ctx, before, after, out):
    """out[i] = the text hash of the window of units[i] around centers[i] (int64 arrays [n]; out uint64 [n])."""
    for i in numba.prange(units.shape[0]):
        out[i] = _text_key(units[i], centers[i], tokens_flat, n_ctx, before, after)


@numba.njit(inline="always")
def _first_not_below(a, lo, hi, x):
    """The first index in a[lo:hi] (sorted) whose value is >= x (hi if none): np.searchsorted's left side."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(parallel=True, nogil=True, cache=True)
def clash(unit_start, centers, text_start, texts, tokens_flat, n_ctx, before, after, units, tokens, out):
    """out[i] = whether the window of units[i] at tokens[i] shares a token with one of that unit's open windows
    (centers[unit_start[u]:unit_start[u + 1]], sorted) or shows the same text as one (texts[text_start[u]:...],
    sorted hashes). Units at or past len(unit_start) - 1 have no open window."""
    reach = before + after
    n_known = unit_start.shape[0] - 1
    for i in numba.prange(units.shape[0]):
        u, token = units[i], tokens[i]
        if u >= n_known:
            out[i] = False
            continue
        lo, hi = unit_start[u], unit_start[u + 1]
        j = _first_not_below(centers, lo, hi, token)
        hit = False
        for k in (j - 1, j):  # the nearest open centres on either side
            if lo <= k < hi and abs(centers[k] - token) <= reach and centers[k] // n_ctx == token // n_ctx:
                hit = True
        if not hit:
            h = _text_key(u, token, tokens_flat, n_ctx, before, after)
            t_lo, t_hi = text_start[u], text_start[u + 1]
            k = _first_not_below(texts, t_lo, t_hi, h)
            hit = k < t_hi and texts[k] == h
        out[i] = hit
