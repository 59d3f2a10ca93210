"""Softmax sums over the vocabulary compiled by numba (loaded by sae.compiled.kernels): the analysis's ablation
effects and LM-loss metrics take a log-softmax over 4,096+ logits for every (token, unit) pair and every replaced
distribution, and torch spends six or more passes over memory on each (index_select, addcmul, mul, exp2, matvec);
here it is one pass over rows that stay in cache.

`exp2f` is 2^y in float32 by a degree-7 polynomial on [-1/2, 1/2] and an exponent built from bits: LLVM vectorises
it, where numba's math.exp2 calls libm one value at a time (it has no vector math library without SVML). Its
relative error is at most 6e-8 over the float32 range (torch's own exp2 6.8e-8; tests/sae/test_softmax_kernels.py),
and it clamps to [2^-126, 2^127]: a sum that could leave that range is redone the plain way by the caller.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_C = [np.float32(math.log(2.0) ** k / math.factorial(k)) for k in range(8)]  # 2^f = Σ (f ln 2)^k / k!
C1, C2, C3, C4, C5, C6, C7 = _C[1:]
LOG2E = np.float32(1.0 / math.log(2.0))


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the int32 `bits` (a register move, which vectorises)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@numba.njit(inline="always", fastmath={"contract"})
def exp2f(y):
    """2^y for float32 y, clamped to [2^-126, 2^127]."""
    y = min(max(y, np.float32(-126.0)), np.float32(127.0))
    n = math.floor(y + np.float32(0.5))
    f = y - n  # [-1/2, 1/2]
    p = np.float32(1.0) + f * (C1 + f * (C2 + f * (C3 + f * (C4 + f * (C5 + f * (C6 + f * C7))))))
    return p * _float32_from_bits(np.int32(n + np.float32(127.0)) << 23)


SUM_RANGE = (2.0**-60, 2.0**100)  # a sum outside: a term may have been clamped, or the sum is imprecise


def out_of_range(sums):
    """Which of the kernels' sums (an array or tensor) leave SUM_RANGE: the caller redoes those the plain way."""
    return ~((sums >= SUM_RANGE[0]) & (sums <= SUM_RANGE[1]))


@numba.njit(parallel=True, nogil=True, cache=True, fastmath={"reassoc", "contract"})
def exp_sums(rows, row_of, deltas, delta_of, coef, scale, log2_weights, out):
    """out[p] = Σ_v 2^((rows[row_of[p], v] − coef[p]·deltas[delta_of[p], v])·scale[p] + log2_weights[v]) for every p:
    the ablation effects' Σ exp(logits / norm scale + bias) with logits P_t − a·E_u (scale and the weights carry
    log2 e). Where out[p] is inside SUM_RANGE no term was clamped (each is below 2^100; a clamped low term adds
    at most 2^-114 to a sum of at least 2^-60); outside it the caller redoes p the plain way."""
    n_vocab = rows.shape[1]
    for p in numba.prange(out.shape[0]):
        r, d, a, s = row_of[p], delta_of[p], coef[p], scale[p]
        total = np.float32(0.0)
        for v in range(n_vocab):
            total += exp2f((rows[r, v] - a * deltas[d, v]) * s + log2_weights[v])
        out[p] = total


@numba.njit(parallel=True, nogil=True, cache=True, fastmath={"reassoc", "contract"})
def replaced_logprobs(proj, add_of, inv_scale, bias, target, logp, kl, sums, probs, lse_clean, n_chunks):
    """The LM-loss metrics' log-softmaxes of one chunk of positions (sae.lm.head_losses.clean_rows), without forming a
    log-probability row. Position i's logits under distribution d are (proj[i] + proj[add_of[d, i]])·inv_scale[d, i]
    + bias: the projection of the residual before the MLP plus that of an MLP output (d = 0: the clean one), over the
    norm's divisor. Writes logp[d, i], the log-probability of target[i]; kl[d, i] = KL(clean || d) at i (0 for
    d = 0); sums[d, i], the sum of exponentials shifted by the clean row's maximum: outside SUM_RANGE the caller
    redoes (d, i) the plain way (2^100 above: a term may have been clamped; 2^-60 below: imprecise). And of the clean
    distribution: probs[i], its probabilities, and lse_clean[i] (float64), its logits' log-sum-exp, what a later
    splice's KL needs of it (sae.lm.head_losses.clean_rows). Sums are float64: a splice's KL is a difference of two
    log-sum-exps of ~10 nats, and float32 sums put ~1e-6 nats of error in each."""
    n_dist, n_rows = add_of.shape
    n_vocab = proj.shape[1]
    per = (n_rows + n_chunks - 1) // n_chunks
    for chunk in numba.prange(n_chunks):
        for i in range(chunk * per, min(n_rows, (chunk + 1) * per)):
            e = probs[i]  # the clean row's exponentials, shifted by its maximum, until they are divided by the sum
            a0, s0, t = add_of[0, i], inv_scale[0, i], target[i]
            top = np.float32(-np.inf)
            for v in range(n_vocab):
                top = max(top, (proj[i, v] + proj[a0, v]) * s0 + bias[v])
            total = 0.0  # float64: summed in float32, 50,257 terms put ~1e-6 nats of error in a log-sum-exp
            for v in range(n_vocab):
                x = exp2f(((proj[i, v] + proj[a0, v]) * s0 + bias[v] - top) * LOG2E)
                e[v] = x
                total += x
            lse = top + np.log(total)
            logp[0, i] = (proj[i, t] + proj[a0, t]) * s0 + bias[t] - lse
            kl[0, i], sums[0, i], lse_clean[i] = 0.0, total, lse
            for d in range(1, n_dist):
                ad, sd = add_of[d, i], inv_scale[d, i]
                other, cross = 0.0, 0.0
                for v in range(n_vocab):
                    clean = (proj[i, v] + proj[a0, v]) * s0 + bias[v]
                    x = (proj[i, v] + proj[ad, v]) * sd + bias[v]
                    other += exp2f((x - top) * LOG2E)
                    cross += e[v] * (clean - x)  # Σ p·(log p − log q) = Σ p·(x_clean − x) − lse + lse_d
                lse_d = top + np.log(other)
                logp[d, i] = (proj[i, t] + proj[ad, t]) * sd + bias[t] - lse_d
                kl[d, i], sums[d, i] = cross / total - lse + lse_d, other
            inv_total = np.float32(1.0 / total)
            for v in range(n_vocab):
                e[v] *= inv_total


@numba.njit(parallel=True, nogil=True, cache=True, fastmath={"reassoc", "contract"})
def spliced_logprobs(proj, inv_scale, bias, target, logp, lse, n_chunks):
    """The log-softmax of one chunk of spliced positions (sae.lm.head_losses.spliced_rows) without forming its row:
    row i's logits are proj[i]·inv_scale[i] + bias. Writes logp[i], the log-probability of target[i], and lse[i]
    (float64, summed as in replaced_logprobs), the logits' log-sum-exp. Shifted by the row's own maximum, the sum
    lies in [1, d_vocab]: no term that matters is clamped, and nothing needs redoing."""
    n_rows, n_vocab = proj.shape
    per = (n_rows + n_chunks - 1) // n_chunks
    for chunk in numba.prange(n_chunks):
        for i in range(chunk * per, min(n_rows, (chunk + 1) * per)):
            s = inv_scale[i]
            top = np.float32(-np.inf)
            for v in range(n_vocab):
                top = max(top, proj[i, v] * s + bias[v])
            total = 0.0  # float64, as in replaced_logprobs
            for v in range(n_vocab):
                total += exp2f((proj[i, v] * s + bias[v] - top) * LOG2E)
            lse[i] = top + np.log(total)
            logp[i] = proj[i, target[i]] * s + bias[target[i]] - lse[i]
