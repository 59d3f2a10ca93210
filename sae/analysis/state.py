"""Streaming, mergeable per-unit state of the analysis: a map over shards of sequences and a reduce.

Two passes, because the paper's intervals (11 equal-width bins from 0 to the unit's max) need the *final* max:
  pass 1, `UnitStats.update`: for each batch, the positive activations of every unit (a token-ordered sparse list:
      token row, unit, value) update firing counts, min/max and the top-k (value desc, token asc); the same
      non-zeros are appended to a `Spill` (sae/analysis/spill.py: a token-ordered CSR on disk, units int32 +
      values float32, counts per token), so the LM forward and the encoder run once per token.
  merge pass-1 states of all shards -> the final max and min of every unit -> interval and histogram edges.
  pass 2, `IntervalStats.update`, streams each shard's spill: log-spaced activation histogram, interval counts,
      the activation sums, and per-interval reservoirs that keep the S smallest keys of a fixed hash of (token, unit);
      keys do not depend on the order or the sharding, so merged shards pick exactly the samples the whole would.
      The sums are the one float state here: float addition is not associative, so they are summed in pass 2, where
      one state streams every spill batch in token order, which makes them independent of the sharding.
  windows, `gather_windows`: one more read of each spill looks up every window token's activation for the chosen
      entries (top-k and interval samples, and the review sample kept apart from them: sae/analysis/review_sample.py),
      each shard filling the entries that fall in its own tokens.
All bookkeeping runs on the non-zeros of all units at once (bincount, scatter_reduce; the selections by a compiled
insertion per entry, sae/analysis/group_kernels.py, or one stable argsort of packed (group, key) integers without
numba), never per unit in Python; memory is the state (U·K + U·I·S entries) plus one batch, whatever the number of
tokens. Spills stay on disk and are read back one batch at a time.
"""

from __future__ import annotations

import numpy as np
import torch

from sae.analysis.review_sample import POOL, OpenWindows
from sae.compiled import kernels


def descending_key(values: np.ndarray) -> np.ndarray:
    """Return an int64 order key in [0, 2^31) per positive float32 value [n]: larger value, smaller key (exact)."""
    return 0x7FFFFFFF - np.ascontiguousarray(values, dtype=np.float32).view(np.int32).astype(np.int64)


class GroupSelect:
    """The k first entries per group by (key asc, token asc): top-k uses `descending_key`, reservoirs a hash.

    Arrays are [n_groups, k]; keys are in [0, 2^32) so that (group, key) packs into one int64 sort key;
    padding has token -1 and key 2^32.
    """

    PAD = 1 << 32

    def __init__(self, n_groups: int, k: int) -> None:
        self.n_groups, self.k = n_groups, k
        self.key = np.full((n_groups, k), self.PAD, dtype=np.int64)
        self.token = np.full((n_groups, k), -1, dtype=np.int64)
        self.value = np.zeros((n_groups, k), dtype=np.float32)

    def update(self, group: np.ndarray, key: np.ndarray, token: np.ndarray, value: np.ndarray) -> None:
        """Offer entries [n] in token order; tokens must come after every token already offered (stream order)."""
        compiled = kernels("sae.analysis.group_kernels")
        if compiled is not None:
            compiled.offer(self.key, self.token, self.value, group, key, token, value)
            return
        # Offer a big batch in slices: once the first slice has filled the groups, the filter below drops most of
        # the rest, instead of sorting millions of entries (a neuron basis's first batch) at once.
        step = max(2 * self.n_groups * self.k, 1 << 16)
        for start in range(0, len(group), step):
            s = slice(start, start + step)
            self._offer(group[s], key[s], token[s], value[s])

    def _offer(self, group: np.ndarray, key: np.ndarray, token: np.ndarray, value: np.ndarray) -> None:
        # A later token loses a tie with the kth entry, so a strict filter keeps the selection exact.
        keep = key < self.key[group, -1]
        if not keep.any():
            return
        group, key, token, value = group[keep], key[keep], token[keep], value[keep]
        touched = np.unique(group)
        old = self.token[touched] >= 0  # [n_touched, k]
        g = np.concatenate([np.repeat(touched, self.k)[old.reshape(-1)], group])
        p = np.concatenate([self.key[touched][old], key])
        # Old entries come first and have smaller tokens; a stable sort on (group, key) then orders ties by token.
        order = np.argsort((g << 32) | p, kind="stable")
        self._store(touched, g, p, np.concatenate([self.token[touched][old], token]),
                    np.concatenate([self.value[touched][old], value]), order)

    def merge(self, other: "GroupSelect") -> "GroupSelect":
        """Return the selection over both streams (any order): the same as selecting over their union."""
        out = GroupSelect(self.n_groups, self.k)
        real = np.concatenate([self.token.reshape(-1), other.token.reshape(-1)]) >= 0
        groups = np.tile(np.repeat(np.arange(self.n_groups), self.k), 2)[real]
        key = np.concatenate([self.key.reshape(-1), other.key.reshape(-1)])[real]
        token = np.concatenate([self.token.reshape(-1), other.token.reshape(-1)])[real]
        value = np.concatenate([self.value.reshape(-1), other.value.reshape(-1)])[real]
        out._store(np.unique(groups), groups, key, token, value, np.lexsort((token, key, groups)))
        return out

    def count(self) -> np.ndarray:
        """Return the number of real entries per group [n_groups]."""
        return (self.token >= 0).sum(axis=1)

    def _store(self, touched, group, key, token, value, order) -> None:
        """Write the k first entries of each group (entries [n], `order` sorting them) over the touched groups."""
        g = group[order]
        starts = np.flatnonzero(np.diff(g, prepend=g[:1] - 1))  # where each group's run begins in sorted order
        rank = np.arange(len(g)) - np.repeat(starts, np.diff(starts, append=len(g)))  # place within its group
        idx = order[rank < self.k]
        rank = rank[rank < self.k]
        self.key[touched], self.token[touched], self.value[touched] = self.PAD, -1, 0.0
        at = (group[idx], rank)
        self.key[at], self.token[at], self.value[at] = key[idx], token[idx], value[idx]


def reservoir_keys(token: np.ndarray, unit: np.ndarray, seed: int) -> np.ndarray:
    """Return a pseudo-random int64 key in [0, 2^32) per (global token, unit) [n] (splitmix64 finaliser)."""
    with np.errstate(over="ignore"):
        h = token.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h ^= (unit.astype(np.uint64) + np.uint64(seed) * np.uint64(0x632BE59BD9B4E019)) * np.uint64(0xC2B2AE3D27D4EB4F)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(32)).astype(np.int64)


class UnitStats:
    """Pass-1 state of one basis: counts, min/max and the top-k per unit (integers and selections: exact merges)."""

    def __init__(self, n_units: int, top_k: int) -> None:
        self.n_units, self.n_tokens = n_units, 0
        self.firing = np.zeros(n_units, dtype=np.int64)
        self.act_min = torch.full((n_units,), float("inf"))
        self.top = GroupSelect(n_units, top_k)

    def update(self, rows: np.ndarray, units: np.ndarray, values: np.ndarray, n_tokens: int, token_offset: int) -> None:
        """Add one batch of non-zeros: rows, units [nnz] int64 (rows local to the batch), values [nnz] float32 > 0."""
        self.n_tokens += n_tokens
        self.firing += np.bincount(units, minlength=self.n_units)  # numpy's bincount is ~20x torch's here
        self.act_min.scatter_reduce_(0, torch.from_numpy(units), torch.from_numpy(values), reduce="amin")
        kth = np.where(self.top.token[:, -1] >= 0, self.top.value[:, -1], 0.0)  # [U]; values are > 0
        cand = np.nonzero(values > kth[units])[0]  # only values above the unit's current kth can enter
        self.top.update(units[cand], descending_key(values[cand]), rows[cand] + token_offset, values[cand])

    def merge(self, other: "UnitStats") -> "UnitStats":
        """Return the state of both shards together."""
        out = UnitStats(self.n_units, self.top.k)
        out.n_tokens = self.n_tokens + other.n_tokens
        out.firing = self.firing + other.firing
        out.act_min = torch.minimum(self.act_min, other.act_min)
        out.top = self.top.merge(other.top)
        return out

    def max_activation(self) -> np.ndarray:
        """Return each unit's max activation [U] float32 (0 for units that never fire)."""
        return np.where(self.top.token[:, 0] >= 0, self.top.value[:, 0], 0.0).astype(np.float32)

    def min_activation(self) -> np.ndarray:
        """Return each unit's smallest positive activation [U] float32 (0 for units that never fire)."""
        m = self.act_min.numpy()
        return np.where(np.isfinite(m), m, 0.0).astype(np.float32)


class IntervalStats:
    """Pass-2 state of one basis: activation histogram, interval counts, activation sums and per-interval reservoirs.

    `act_sum` is a float64 sum, added one spill batch at a time: streaming every shard's spill through one state, in
    token order, adds the same batch sums in the same order whatever the sharding (`sae.analysis.reduce.finish`).
    """

    def __init__(self, max_act: np.ndarray, min_act: np.ndarray, n_intervals: int, samples: int, hist_bins: int,
                 seed: int, review_samples: int = 0, review_top: int = 0, open_top: OpenWindows | None = None) -> None:
        """Edges from the merged pass 1: max_act, min_act [U] (0 for dead units).

        The review sample (sae/analysis/review_sample.py): the reservoirs keep `samples + POOL * review_samples`
        keys, and with `open_top` (the open top-k windows) a pool of the POOL * review_top largest activations whose
        windows share no token with those is kept too."""
        self.n_units, self.n_intervals, self.hist_bins, self.seed = len(max_act), n_intervals, hist_bins, seed
        fractions = np.arange(n_intervals + 1, dtype=np.float32) / np.float32(n_intervals)  # last is exactly 1
        self.interval_edges = (max_act[:, None] * fractions[None, :]).astype(np.float32)  # [U, I+1]
        live = max_act > 0
        lo = np.log(np.where(live, min_act, 1.0)).astype(np.float64)
        hi = np.log(np.where(live, max_act, 1.0)).astype(np.float64)
        span = np.maximum(hi - lo, 0.0)
        edges = np.exp(lo[:, None] + span[:, None] * np.linspace(0, 1, hist_bins + 1)[None, :])
        # float32 per-unit affine map log(v) -> bin: bins = log(v) * hist_scale + hist_shift
        self.hist_scale = (hist_bins / np.where(span > 0, span, 1.0)).astype(np.float32)
        self.hist_shift = (-lo * self.hist_scale).astype(np.float32)
        # float32 like the edges; finite where max_act is subnormal (its quotient would overflow: FLT_MAX still puts
        # every value in [0, max_act] in range, and the edge tests below place it)
        with np.errstate(over="ignore"):
            scale = np.float32(n_intervals) / np.where(live, max_act, 1.0).astype(np.float32)
        self.interval_scale = np.minimum(scale, np.finfo(np.float32).max)
        self._flat_edges = self.interval_edges.reshape(-1)
        self.hist_edges = np.where(live[:, None], edges, 0.0).astype(np.float32)  # [U, H+1]
        self.hist_counts = np.zeros(self.n_units * hist_bins, dtype=np.int64)
        self.interval_counts = np.zeros(self.n_units * n_intervals, dtype=np.int64)
        self.act_sum = np.zeros(self.n_units, dtype=np.float64)  # [U] the sum of each unit's positive activations
        self.reservoir = GroupSelect(self.n_units * n_intervals, samples + POOL * review_samples)
        self.open_top = open_top
        self.review_top = GroupSelect(self.n_units, POOL * review_top) if open_top is not None and review_top else None

    def intervals_of(self, units: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Return the interval index [nnz] of each (unit, value), consistent with the stored float32 edges."""
        n = self.n_intervals
        b = np.minimum((values * self.interval_scale[units]).astype(np.int64), n - 1)  # values > 0: no floor needed
        # Float rounding may put a value an interval off (several where max_act is subnormal): step to the edges.
        for step, off in ((-1, lambda b: (values < self._flat_edges[units * (n + 1) + b]) & (b > 0)),
                          (1, lambda b: (values >= self._flat_edges[units * (n + 1) + b + 1]) & (b < n - 1))):
            while (move := off(b)).any():
                b += step * move
        return b

    def update(self, rows: np.ndarray, units: np.ndarray, values: np.ndarray, token_offset: int) -> np.ndarray:
        """Add non-zeros of the spill: rows local to token_offset, units [nnz] int64, values [nnz] float32; return
        each one's group [nnz] (unit * n_intervals + its interval)."""
        h = self.hist_bins
        tokens = rows + token_offset
        compiled = kernels("sae.analysis.interval_kernels")
        if compiled is not None:
            group, key, batch_sum = np.empty_like(units), np.empty_like(units), np.zeros(self.n_units)
            compiled.interval_update(units, values, np.log(values), tokens, self.seed, self.hist_scale,
                                     self.hist_shift, h, self.interval_scale, self._flat_edges, self.n_intervals,
                                     self.hist_counts, batch_sum, self.interval_counts, group, key)
            self.act_sum += batch_sum
        else:
            hb = np.clip(np.log(values) * self.hist_scale[units] + self.hist_shift[units], 0, h - 1).astype(np.int64)
            self.hist_counts += np.bincount(units * h + hb, minlength=self.n_units * h)
            self.act_sum += np.bincount(units, weights=values, minlength=self.n_units)
            group = units * self.n_intervals + self.intervals_of(units, values)
            self.interval_counts += np.bincount(group, minlength=self.n_units * self.n_intervals)
            key = reservoir_keys(tokens, units, self.seed)
        self.reservoir.update(group, key, tokens, values)
        if self.review_top is not None:
            top = self.review_top  # a strict filter: a later token loses a tie with the kth entry (as in UnitStats)
            kth = np.where(top.token[:, -1] >= 0, top.value[:, -1], 0.0)
            cand = np.nonzero(values > kth[units])[0]
            cand = cand[~self.open_top.clash(units[cand], tokens[cand])]
            top.update(units[cand], descending_key(values[cand]), tokens[cand], values[cand])
        return group

    def merge(self, other: "IntervalStats") -> "IntervalStats":
        """Return the state of both shards together (both built from the same merged pass-1 edges); act_sum is
        then equal to the streamed one up to float rounding."""
        out = object.__new__(IntervalStats)
        out.__dict__.update(self.__dict__)
        out.hist_counts = self.hist_counts + other.hist_counts
        out.interval_counts = self.interval_counts + other.interval_counts
        out.act_sum = self.act_sum + other.act_sum
        out.reservoir = self.reservoir.merge(other.reservoir)
        if self.review_top is not None:
            out.review_top = self.review_top.merge(other.review_top)
        return out
