"""Streaming activation correlations between two sets of units over the same tokens, in bounded memory: what
universality (a feature's best match in another model) and feature splitting (a large dictionary's features
against a small one's) are measured by.

Pearson correlation of unit i of A and unit j of B over N tokens, from running sums updated one chunk of tokens at
a time and mergeable across shards:
    corr_ij = (N·Σ a_i b_j − Σa_i Σb_j) / sqrt((N·Σa_i² − (Σa_i)²) (N·Σb_j² − (Σb_j)²)).
The only large state is Σ a bᵀ, d_A × d_B float64 (128 MiB at 4,096 × 4,096), whatever N. Each chunk's cross
product takes the cheap form for each side's sparsity: SAE codes (tens of non-zeros among thousands) as CSR
matrices, whose product costs one multiply per pair of co-active units; dense activations (neurons) through BLAS.
A unit that never varies (dead) has no correlation: NaN, and no best match (-1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

SPARSE_BELOW = 0.05  # a chunk whose share of non-zeros is below this goes through the sparse product


def _as_operand(x: np.ndarray) -> np.ndarray | sp.csr_matrix:
    """Return x [n, d] in float64 (the cross sums cancel n·Σab against ΣaΣb: dense activations with a large mean
    need the digits), as CSR when sparse enough, else dense."""
    x = np.asarray(x, dtype=np.float64)
    return sp.csr_matrix(x) if np.count_nonzero(x) < SPARSE_BELOW * x.size else x


@dataclass
class CorrelationSums:
    """Mergeable sums behind the d_A × d_B correlation matrix of two unit sets over the same tokens."""

    n: int
    sum_a: np.ndarray  # [d_A] float64
    sumsq_a: np.ndarray
    sum_b: np.ndarray  # [d_B] float64
    sumsq_b: np.ndarray
    cross: np.ndarray  # [d_A, d_B] float64: Σ over tokens of a bᵀ

    @classmethod
    def zeros(cls, d_a: int, d_b: int) -> "CorrelationSums":
        return cls(0, np.zeros(d_a), np.zeros(d_a), np.zeros(d_b), np.zeros(d_b), np.zeros((d_a, d_b)))

    def update(self, a: np.ndarray, b: np.ndarray) -> None:
        """Add one chunk: the activations a [n, d_A] and b [n, d_B] of the same n tokens (float32 or float64)."""
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"a and b must cover the same tokens, got {a.shape[0]} and {b.shape[0]} rows")
        a, b = np.asarray(a), np.asarray(b)
        self.n += a.shape[0]
        self.sum_a += a.sum(0, dtype=np.float64)
        self.sumsq_a += np.einsum("nd,nd->d", a, a, dtype=np.float64)
        self.sum_b += b.sum(0, dtype=np.float64)
        self.sumsq_b += np.einsum("nd,nd->d", b, b, dtype=np.float64)
        left, right = _as_operand(a), _as_operand(b)
        if sp.issparse(left):
            product = left.T.tocsr() @ right  # [d_A, d_B]: sparse × (sparse or dense)
        elif sp.issparse(right):
            product = (right.T.tocsr() @ left).T  # dense a, sparse b
        else:
            product = left.T @ right  # BLAS, float64
        if sp.issparse(product):
            product = product.toarray()
        self.cross += product

    def merge(self, other: "CorrelationSums") -> "CorrelationSums":
        """Return the sums over both token sets (shards of the same units)."""
        return CorrelationSums(self.n + other.n, self.sum_a + other.sum_a, self.sumsq_a + other.sumsq_a,
                               self.sum_b + other.sum_b, self.sumsq_b + other.sumsq_b, self.cross + other.cross)

    def correlation(self) -> np.ndarray:
        """Return corr [d_A, d_B] float32; NaN where a unit never varied."""
        n = self.n
        var_a = n * self.sumsq_a - self.sum_a ** 2  # [d_A], N² times the variance
        var_b = n * self.sumsq_b - self.sum_b ** 2
        scale_a = _inverse_sd(var_a, n * self.sumsq_a)
        scale_b = _inverse_sd(var_b, n * self.sumsq_b)
        corr = n * self.cross - np.outer(self.sum_a, self.sum_b)
        corr *= scale_a[:, None]
        corr *= scale_b[None, :]
        return np.clip(corr, -1.0, 1.0).astype(np.float32)

    def best_matches(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return, for every unit of A, its most correlated unit of B and that correlation, and the same for every
        unit of B against A: (a_best [d_A] int64, a_corr [d_A], b_best [d_B], b_corr [d_B]); -1 and NaN for a unit
        without any correlation (never varied, or nothing in the other set did)."""
        corr = self.correlation()
        return (*_best(corr), *_best(corr.T))


def _inverse_sd(var: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """1 / sqrt(var) where the unit varied (var above rounding of `scale`), NaN elsewhere; computed only where it
    varied, so a dead unit (var 0) divides nothing by zero (`monoscope match` printed numpy's warning)."""
    varied = var > 1e-12 * np.maximum(scale, 1e-300)
    return np.divide(1.0, np.sqrt(np.abs(var)), out=np.full(var.shape, np.nan), where=varied)


def _best(corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (argmax, max) over each row of corr, ignoring NaN; -1 and NaN for an all-NaN row."""
    filled = np.where(np.isnan(corr), -np.inf, corr)
    best = filled.argmax(1)
    value = filled[np.arange(len(corr)), best]
    missing = ~np.isfinite(value)
    return np.where(missing, -1, best).astype(np.int64), np.where(missing, np.nan, value).astype(np.float32)
