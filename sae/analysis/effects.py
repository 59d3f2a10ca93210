"""Per-token ablation effects of every stored context window, as the paper's visualiser colours them.

For a unit u firing with activation a at window position t: the change in log-probability of the actual next token
when u is ablated there (a feature: x <- x - a·d_u at hook_post; a neuron: x_u <- 0; both remove a·v_u from the MLP
output, v_u the unit's direction in the residual stream). Effect = log p_ablated - log p_clean, so a negative effect
means the unit was helping to predict the next token.

In a one-layer model the MLP output at position t reaches the logits at t only (attention reads the residual stream
before the MLP), so ablating u at every position of a window at once (the visualiser's one forward with and one
without) gives each position's own effect, and the ablated logits need only the final residual r_t: they are
readout(r_t − a·v_u). Pass 1 keeps every r_t (sae/analysis/residuals.py). Through the final norm that is
(P_t − a·E_u) / scale + bias with P_t = c(r_t)·w @ W_U per distinct token and E_u = c(v_u)·w @ W_U per unit
(sae.lm.heads.Readout), so each distinct (token, unit) pair, shared by every window and basis that holds it, costs
O(d_vocab) instead of a d_model × d_vocab product (exact, not an approximation; for the demo's 1.38M pairs
85 s against 139 s, BENCHMARKS.md).
Where u does not fire the effect is 0 exactly; positions without a next token (the last of a sequence), BOS (never
ablated, sae.conventions) and padding outside the sequence have none (NaN). Only stored non-zero activations are
ablated: neurons with negative (GELU) activations are shown as firing only where positive, and so ablated there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from sae import compiled
from sae.conventions import BOS_POSITION
from sae.memory import give_back_freed_memory

if TYPE_CHECKING:  # sae.lm imports transformer_lens: not needed to define this module
    from sae.lm.heads import Readout

ResidFn = Callable[[int, int], torch.Tensor]  # sequences s0..s1 -> their final residual [(s1 - s0)·T, d_model]
# float32 (kept by pass 1: sae/analysis/residuals.py, or a forward)
TOKENS_PER_CHUNK = 512  # distinct tokens projected at once ([chunk, d_vocab] float32: 8 MB at d_vocab 4,096)
PAIRS_PER_CHUNK = 4096  # pairs per call: bounds the [pairs, d_vocab] rows of E made when E is not kept whole
TORCH_ROWS = 128  # rows of the torch fallback's sums at a time
LOG2E = 1.0 / math.log(2.0)  # exp(y) = 2^(y·LOG2E)
MAX_UNIT_LOGITS_BYTES = 1 << 30  # E [units, d_vocab] kept whole up to this size, else its rows are made per chunk


@dataclass(frozen=True)
class Windows:
    """One basis's stored context windows: whose they are, where they sit, and the unit's residual directions."""

    units: np.ndarray  # [E] unit of each window (-1: empty slot)
    centers: np.ndarray  # [E] global token (sequence * T + position) at the window's max token
    acts: np.ndarray  # [E, W] activations, 0 where the unit is silent or outside the sequence
    directions: torch.Tensor  # [U, d_model] what one unit of activation adds to the residual stream
    before: int  # window positions before the center


@torch.no_grad()
def ablation_effects(resid_fn: ResidFn, readout: Readout, tokens: np.ndarray, bases: list[Windows],
                     batch_sequences: int = 64, progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Return the effect [E, W] float32 of every window slot of every basis (see the module docstring).

    tokens [n_seq, T]: the analysed tokens the centers index into. progress gets the pairs done per chunk.
    """
    n_seq, n_ctx = tokens.shape
    tokens_flat = tokens.reshape(-1)
    offsets = np.cumsum([0] + [b.directions.shape[0] for b in bases])
    n_units_total = int(offsets[-1])
    out, keys, acts = [], [], []
    for b, windows in enumerate(bases):
        effect, slot_keys, slot_acts = _slots(windows, n_ctx, int(offsets[b]), n_units_total)
        out.append(effect)
        keys.append(slot_keys)
        acts.append(slot_acts)
    n_slots = [len(k) for k in keys]
    unique, first, inverse = np.unique(np.concatenate(keys), return_index=True, return_inverse=True)
    pair_act = torch.from_numpy(np.concatenate(acts)[first])  # [P]
    del keys, acts, first
    give_back_freed_memory()  # the slots' keys and temporaries (~0.1 GiB at 4,096 units), before the forwards
    pair_token, pair_unit = unique // n_units_total, torch.from_numpy(unique % n_units_total)  # [P], token-sorted
    directions = torch.cat([w.directions.float().cpu() for w in bases])  # [sum U, d_model]
    unit_centred, unit_logits = _unit_terms(readout, directions)
    softmax = _Softmax(readout.bias)
    delta = np.zeros(len(unique), np.float32)
    pair_seq = pair_token // n_ctx
    for s0 in range(0, n_seq, batch_sequences):
        lo, hi = np.searchsorted(pair_seq, [s0, s0 + batch_sequences])
        if hi == lo:
            continue
        s1 = min(s0 + batch_sequences, n_seq)
        resid = resid_fn(s0, s1).reshape(-1, directions.shape[1])
        # Pairs are token-sorted: each distinct token owns a run of them, and a chunk of tokens is projected once
        # for all the pairs that read it.
        token, first_pair = np.unique(pair_token[lo:hi], return_index=True)
        bounds = np.append(first_pair, hi - lo) + lo  # pairs of token i: bounds[i]:bounds[i + 1]
        for t0 in range(0, len(token), TOKENS_PER_CHUNK):
            t1 = min(t0 + TOKENS_PER_CHUNK, len(token))
            centred, projected = readout.project(resid[torch.from_numpy(token[t0:t1] - s0 * n_ctx)])  # [c, d], [c, V]
            next_ids = torch.from_numpy(tokens_flat[token[t0:t1] + 1].astype(np.int64))
            projected.sub_(projected.amax(-1, keepdim=True))  # the shift cancels in the log-softmax
            rows = torch.arange(t1 - t0)
            clean = softmax.logprob(projected, rows, projected, rows, torch.zeros(t1 - t0),
                                    readout.scale(centred)[:, 0], next_ids)  # [c]
            owner = np.repeat(np.arange(t1 - t0), np.diff(bounds[t0:t1 + 1]))  # chunk-local token of each pair
            for p0 in range(bounds[t0], bounds[t1], PAIRS_PER_CHUNK):
                p1 = min(p0 + PAIRS_PER_CHUNK, bounds[t1])
                r = torch.from_numpy(owner[p0 - bounds[t0]:p1 - bounds[t0]])
                u, a = pair_unit[p0:p1], pair_act[p0:p1]
                if unit_logits is not None:
                    table, of = unit_logits, u
                else:
                    table, of = (unit_centred[u] * readout.w) @ readout.W_U, torch.arange(p1 - p0)
                scale = readout.scale(centred[r] - a[:, None] * unit_centred[u])[:, 0]
                ablated = softmax.logprob(projected, r, table, of, a, scale, next_ids[r])  # log softmax(P_t − a·E_u)
                delta[p0:p1] = (ablated - clean[r]).numpy()
                if progress is not None:
                    progress(p1 - p0)
    start = 0
    for effect, n in zip(out, n_slots):
        slots = np.nonzero(effect.reshape(-1) == _PENDING)[0]
        effect.reshape(-1)[slots] = delta[inverse[start:start + n]]
        start += n
    return out


def _unit_terms(readout: Readout, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return (c(v) [U, d_model], E = c(v)·w @ W_U [U, d_vocab], or None when E would pass MAX_UNIT_LOGITS_BYTES)."""
    centred = directions - directions.mean(-1, keepdim=True) if readout.centre else directions
    if directions.shape[0] * readout.W_U.shape[1] * 4 > MAX_UNIT_LOGITS_BYTES:
        return centred, None
    return centred, (centred * readout.w) @ readout.W_U


class _Softmax:
    """log-softmax(x / scale + bias)[id] for rows x = rows[i] − coef·deltas[j] of two tables (the ablation's
    P_t − a·E_u, which is never formed): sae.softmax_kernels.exp_sums takes Σ_v exp(x_v / scale + bias_v) in one
    pass over both rows (torch ops where numba is missing: six passes). Rows may come shifted by any constant
    (projected minus its maximum keeps the exponentials in range); the shift cancels. A row whose sum leaves
    floating range (an ablation that moves the logits by tens of nats) is done again the plain way."""

    def __init__(self, bias: torch.Tensor) -> None:
        self.bias, self.bias_max = bias, float(bias.max())
        self.log2_weights = (bias - self.bias_max) * LOG2E  # [V] exp(bias − bias_max) as a power of 2
        self.kernels = compiled.kernels("sae.softmax_kernels")

    def logprob(self, rows: torch.Tensor, row_of: torch.Tensor, deltas: torch.Tensor, delta_of: torch.Tensor,
                coef: torch.Tensor, scale: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Return [N]: log-softmax((rows[row_of] − coef[:, None]·deltas[delta_of]) / scale[:, None] + bias)
        at ids, for tables rows [R, V], deltas [D, V] and indexes row_of, delta_of [N], coef, scale [N]."""
        own = (rows[row_of, ids] - coef * deltas[delta_of, ids]) / scale + self.bias[ids]
        total = torch.empty(len(own))
        if self.kernels is not None:
            self.kernels.exp_sums(rows.numpy(), row_of.numpy(), deltas.numpy(), delta_of.numpy(), coef.numpy(),
                                  (LOG2E / scale).numpy(), self.log2_weights.numpy(), total.numpy())
        else:
            for c0 in range(0, len(own), TORCH_ROWS):
                c = slice(c0, c0 + TORCH_ROWS)
                x = torch.index_select(rows, 0, row_of[c]).addcmul_(coef[c, None], deltas[delta_of[c]], value=-1.0)
                total[c] = x.mul_((LOG2E / scale[c])[:, None]).add_(self.log2_weights).exp2_().sum(-1)
        out = own - total.log() - self.bias_max
        bad = ~torch.isfinite(out)  # the sum overflowed or vanished; the kernel's also where a term was clamped
        if self.kernels is not None:
            bad |= self.kernels.out_of_range(total)
        if bad.any():
            x = rows[row_of[bad]] - coef[bad, None] * deltas[delta_of[bad]]
            out[bad] = own[bad] - torch.logsumexp(x / scale[bad, None] + self.bias, -1)
        return out


_PENDING = np.float32(np.inf)  # marks a slot whose effect the forward passes fill in


def _slots(windows: Windows, n_ctx: int, unit_offset: int, n_units_total: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (effect [E, W]: NaN where none, 0 where silent, _PENDING where the unit fires; the (token, unit) key
    of each pending slot in row-major order; its activation)."""
    offsets = np.arange(windows.acts.shape[1], dtype=np.int32) - windows.before  # [W]
    position = (windows.centers % n_ctx).astype(np.int32)[:, None] + offsets  # [E, W] within the center's sequence
    defined = ((windows.units[:, None] >= 0) & (position >= 0) & (position != BOS_POSITION)
               & (position < n_ctx - 1))
    effect = np.full(defined.shape, np.nan, np.float32)
    effect[defined] = 0
    firing = np.not_equal(windows.acts, 0, out=defined, where=defined)  # defined & firing, in defined's memory
    effect[firing] = _PENDING
    ei, wi = np.nonzero(firing)  # row-major, the order the pending slots are filled in
    unit = windows.units[ei].astype(np.int64) + unit_offset
    token = windows.centers[ei].astype(np.int64) + offsets[wi]  # global tokens of the pending slots
    return effect, token * n_units_total + unit, windows.acts[ei, wi].astype(np.float32)
