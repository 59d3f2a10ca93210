"""`GroupSelect`'s offer compiled by numba (loaded by sae.compiled.kernels; sae/analysis/state.py keeps the numpy
path where numba is missing): each entry, in stream order, goes into its group's row of the k smallest (key, token)
by insertion, where numpy sorted every batch's candidates with the kept entries (2.6 s of a 262,144-token analysis's
passes against ~0.1 s here)."""

from __future__ import annotations

import numba


@numba.njit(nogil=True, cache=True)
def offer(kept_key, kept_token, kept_value, group, key, token, value):
    """Offer entries [n] (in token order, after every token kept) to rows kept_* [n_groups, k] sorted by
    (key, token): an entry enters when its key is below the row's kth, after the kept entries of equal key (their
    tokens are earlier), so the rows end as a stable sort of everything offered would leave them."""
    k = kept_key.shape[1]
    for n in range(group.shape[0]):
        g, x = group[n], key[n]
        if k == 0 or x >= kept_key[g, k - 1]:
            continue
        j = k - 1
        while j > 0 and kept_key[g, j - 1] > x:
            kept_key[g, j], kept_token[g, j], kept_value[g, j] = kept_key[g, j - 1], kept_token[g, j - 1], \
                kept_value[g, j - 1]
            j -= 1
        kept_key[g, j], kept_token[g, j], kept_value[g, j] = x, token[n], value[n]
