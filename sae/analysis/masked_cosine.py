"""Feature families the paper's way: the masked cosine similarity of two features' activations, streamed over the
same tokens as the correlations (sae/analysis/correlation.py) and mergeable across shards.

For feature i of dictionary A and j of B, over the tokens where i fires,
    cos_i(i, j) = Σ a_i b_j / sqrt(Σ a_i² · Σ_{a_i > 0} b_j²),
the same over the tokens where j fires (Σ a_i² over b_j > 0, Σ b_j²), and the masked cosine is the larger of the two.
SAE activations are ≥ 0 and a_i is 0 where i does not fire, so Σ_{a_i>0} a_i b_j is the plain cross sum Σ a_i b_j
that the correlations keep already; the masks add two d_A × d_B sums, Σ 1[a_i > 0] b_j² and Σ a_i² 1[b_j > 0], each
one sparse product per chunk like the cross sum. They are non-negative (no cancellation), so float32 holds them.

An edge joins i and j when their masked cosine is at least a threshold (the paper drew one at about 0.4); ultralow
features (density below ULTRALOW_DENSITY over these tokens) have none, as in the paper's figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from sae.conventions import ULTRALOW_DENSITY

ROW_BLOCK = 512  # rows of A per block when the edges are read off the sums (bounded temporaries)


def _sparse(x: np.ndarray) -> sp.csr_matrix:
    return sp.csr_matrix(np.asarray(x, dtype=np.float64))


@dataclass
class MaskedSums:
    """Mergeable sums behind the masked cosines of two non-negative unit sets over the same tokens (the cross sum
    Σ a bᵀ is the correlations' own, `CorrelationSums.cross`)."""

    n: int
    fired_a: np.ndarray  # [d_A] int64: tokens where each unit of A fires
    fired_b: np.ndarray  # [d_B]
    b2_where_a: np.ndarray  # [d_A, d_B] float32: Σ over tokens where a_i fires of b_j²
    a2_where_b: np.ndarray  # [d_A, d_B] float32: Σ over tokens where b_j fires of a_i²

    @classmethod
    def zeros(cls, d_a: int, d_b: int) -> "MaskedSums":
        return cls(0, np.zeros(d_a, np.int64), np.zeros(d_b, np.int64), np.zeros((d_a, d_b), np.float32),
                   np.zeros((d_a, d_b), np.float32))

    def update(self, a: np.ndarray, b: np.ndarray) -> None:
        """Add one chunk: the activations a [n, d_A] and b [n, d_B] (≥ 0) of the same n tokens."""
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"a and b must cover the same tokens, got {a.shape[0]} and {b.shape[0]} rows")
        fires_a, fires_b = _sparse(a > 0), _sparse(b > 0)
        self.n += a.shape[0]
        self.fired_a += np.asarray(fires_a.sum(0), dtype=np.int64).ravel()
        self.fired_b += np.asarray(fires_b.sum(0), dtype=np.int64).ravel()
        self.b2_where_a += (fires_a.T.tocsr() @ _sparse(np.square(b, dtype=np.float64))).toarray()
        self.a2_where_b += (_sparse(np.square(a, dtype=np.float64)).T.tocsr() @ fires_b).toarray()

    def merge(self, other: "MaskedSums") -> "MaskedSums":
        """Return the sums over both token sets (shards of the same units)."""
        return MaskedSums(self.n + other.n, self.fired_a + other.fired_a, self.fired_b + other.fired_b,
                          self.b2_where_a + other.b2_where_a, self.a2_where_b + other.a2_where_b)

    def kept(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (A's, B's) [d] bool: units dense enough to take part in families (not dead, not ultralow)."""
        n = max(self.n, 1)
        return (self.fired_a > 0) & (self.fired_a / n >= ULTRALOW_DENSITY), \
            (self.fired_b > 0) & (self.fired_b / n >= ULTRALOW_DENSITY)

    def masked_cosine(self, cross: np.ndarray, sumsq_a: np.ndarray, sumsq_b: np.ndarray,
                      rows: slice = slice(None)) -> np.ndarray:
        """Return the masked cosines [rows of A, d_B] float32 from the cross sums Σ a bᵀ and Σ a², Σ b² (0 where
        a unit never fired)."""
        c = cross[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            over_a = c / np.sqrt(sumsq_a[rows, None] * self.b2_where_a[rows])
            over_b = c / np.sqrt(self.a2_where_b[rows] * sumsq_b[None, :])
        out = np.fmax(over_a, over_b)  # fmax: NaN (0/0, a unit silent on the other's tokens) gives way to a number
        return np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0).astype(np.float32)

    def edges(self, cross: np.ndarray, sumsq_a: np.ndarray, sumsq_b: np.ndarray,
              threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the family edges (i of A [E], j of B [E], masked cosine [E]) at or above `threshold`, between
        units that are neither dead nor ultralow, by A then score descending."""
        keep_a, keep_b = self.kept()
        found = [(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))]  # none: empty arrays
        for start in range(0, len(keep_a), ROW_BLOCK):
            rows = slice(start, min(start + ROW_BLOCK, len(keep_a)))
            score = self.masked_cosine(cross, sumsq_a, sumsq_b, rows)
            score[~keep_a[rows]] = 0.0
            score[:, ~keep_b] = 0.0
            i, j = np.nonzero(score >= threshold)
            found.append((i + start, j, score[i, j]))
        i, j, s = (np.concatenate(parts) for parts in zip(*found))
        order = np.lexsort((-s, i))
        return i[order].astype(np.int64), j[order].astype(np.int64), s[order].astype(np.float32)
