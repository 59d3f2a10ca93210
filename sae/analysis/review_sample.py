"""The review sample: windows kept for blind reviews, apart from the ones the open unit pages show.

A blind review item must not be findable on the open pages (DESIGN.md section 7), so the windows it shows share no
token with any window the unit's page shows, and none shows the same text as one of those (the corpus repeats itself:
a file and its copy, generated code): for each unit,
  - review top examples: the `review_top_k` largest activations whose windows clash with none of the unit's open
    windows (its top-k and its interval samples), largest first;
  - review interval samples: per interval, `review_samples_per_interval` tokens drawn by the same fixed hash of
    (token, unit) as the open samples, from the tokens after those the open page shows (the reservoir keeps a pool
    of the S + POOL·S' smallest keys: its S first are the open sample, and the S' first of the rest whose windows
    clash with no open one are the review's). Given the open sample, that is a uniform draw of the remaining
    tokens, found in the same pass.
Two windows [c - before, c + after] of one sequence share a token when their centres are at most before + after
apart; two show the same text when the token ids they show (inside their sequences) are the same (a 64-bit hash). Every
choice depends only on global tokens, the tokens' ids and the hash, so a sharded analysis picks exactly what one pass
does. The top examples' exclusion of the open top windows happens while pass 2 streams (`IntervalStats`); the rest
once pass 2 has chosen the open interval samples (`select`), from pools POOL times the size asked for (a pool
can run short where the open windows cover most of a unit's firing tokens: the unit then has fewer review windows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sae.compiled import kernels

SPAN = 1 << 40  # (unit, global token) packs into unit * SPAN + token
POOL = 4  # candidates kept per review window asked for


class OpenWindows:
    """The windows a unit's open page shows: tells which (unit, token) windows would share a token with one of them,
    or show the same text as one (the corpus repeats itself: a file and its copy, generated code)."""

    def __init__(self, units: np.ndarray, centers: np.ndarray, tokens_flat: np.ndarray, n_ctx: int, before: int,
                 after: int) -> None:
        """units, centers [E] (centres < 0: empty slots); tokens_flat: the analysed tokens the centres index."""
        real = centers >= 0
        units, centers = units[real].astype(np.int64), centers[real].astype(np.int64)
        self.keys = np.sort(units * SPAN + centers)
        self.tokens_flat, self.n_ctx, self.before, self.after = tokens_flat, n_ctx, before, after
        self.reach = before + after
        self.compiled = kernels("sae.analysis.review_kernels")
        texts = self.text_keys(units, centers)
        self.texts = np.unique(texts)
        if self.compiled is not None:  # per unit: its open centres and text hashes, sorted (CSR by unit)
            bounds = np.arange(int(units.max(initial=-1)) + 2)
            self.unit_start = np.searchsorted(self.keys // SPAN, bounds)
            self.centers = self.keys % SPAN
            order = np.lexsort((texts, units))
            self.unit_texts, self.text_start = texts[order], np.searchsorted(units[order], bounds)

    def text_keys(self, units: np.ndarray, centers: np.ndarray) -> np.ndarray:
        """Return a 64-bit hash [n] of (unit, the token ids the window around each centre shows): its tokens inside
        its sequence, as a page shows them, wherever the centre sits among them."""
        if self.compiled is not None:
            out = np.empty(len(units), np.uint64)
            self.compiled.text_keys(np.ascontiguousarray(units, np.int64), np.ascontiguousarray(centers, np.int64),
                                    self.tokens_flat, self.n_ctx, self.before, self.after, out)
            return out
        h = units.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        start = centers // self.n_ctx * self.n_ctx
        with np.errstate(over="ignore"):
            for offset in range(-self.before, self.after + 1):
                t = centers + offset
                inside = (t >= start) & (t < start + self.n_ctx)
                ids = self.tokens_flat[np.clip(t, 0, len(self.tokens_flat) - 1)].astype(np.uint64) + np.uint64(1)
                mixed = (h ^ ids) * np.uint64(0x100000001B3)
                h = np.where(inside, mixed ^ (mixed >> np.uint64(29)), h)  # outside the sequence: nothing shown
        return h

    def clash(self, units: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Return [n] bool: whether the window at each (unit, global token) shares a token with one of the unit's
        open windows, or shows the same text as one of them."""
        units, tokens = units.astype(np.int64), tokens.astype(np.int64)
        if self.compiled is not None:
            out = np.empty(len(units), bool)
            self.compiled.clash(self.unit_start, self.centers, self.text_start, self.unit_texts, self.tokens_flat,
                                self.n_ctx, self.before, self.after, units, tokens, out)
            return out
        clash = self.near(units, tokens)
        rest = np.nonzero(~clash)[0]
        clash[rest] = np.isin(self.text_keys(units[rest], tokens[rest]), self.texts)
        return clash

    def near(self, units: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Return [n] bool: whether the window at each (unit, global token) shares a token with one of the unit's
        open windows (the nearest open centre on either side, in the same sequence, is at most `reach` away)."""
        near = np.zeros(len(units), dtype=bool)
        if not len(self.keys) or not len(units):
            return near
        units, tokens = units.astype(np.int64), tokens.astype(np.int64)
        at = np.searchsorted(self.keys, units * SPAN + tokens)
        for j in (at - 1, at):
            inside = (j >= 0) & (j < len(self.keys))
            key = self.keys[np.clip(j, 0, len(self.keys) - 1)]
            unit, center = key // SPAN, key % SPAN
            near |= (inside & (unit == units) & (np.abs(center - tokens) <= self.reach)
                     & (center // self.n_ctx == tokens // self.n_ctx))
        return near


def first_kept(kept: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (column [G, n] of each group's first n kept entries in a pool [G, P], real [G, n])."""
    rank = np.cumsum(kept, axis=1) - 1
    g, p = np.nonzero(kept & (rank < n))
    column = np.zeros((kept.shape[0], n), dtype=np.int64)
    real = np.zeros((kept.shape[0], n), dtype=bool)
    column[g, rank[g, p]] = p
    real[g, rank[g, p]] = True
    return column, real


@dataclass(frozen=True)
class ReviewSample:
    """The chosen review entries: global tokens (-1: none) and activations."""

    top_token: np.ndarray  # [U, K'] largest first
    top_value: np.ndarray  # [U, K']
    interval_token: np.ndarray  # [U * I, S'] in key order
    interval_value: np.ndarray  # [U * I, S']


def select(open_windows: OpenWindows, top_pool, reservoir, n_intervals: int, n_open_samples: int, top_k: int,
           samples: int) -> ReviewSample:
    """Return the review sample from the pools of pass 2 (`GroupSelect`s): top_pool [U, POOL·K'] (already clear of
    the open top windows) and the reservoir [U·I, S + POOL·S'] whose first S columns are the open interval samples.

    open_windows holds every open window of every unit: the top-k and the open interval samples."""
    n_units = top_pool.n_groups
    group_unit = np.arange(reservoir.n_groups) // n_intervals
    pool = reservoir.token[:, n_open_samples:]
    units = np.broadcast_to(group_unit[:, None], pool.shape)
    kept = (pool >= 0) & ~open_windows.clash(units.reshape(-1), pool.reshape(-1)).reshape(pool.shape)
    column, real = first_kept(kept, samples)
    interval_token = np.where(real, np.take_along_axis(pool, column, 1), -1)
    interval_value = np.where(real, np.take_along_axis(reservoir.value[:, n_open_samples:], column, 1), 0.0)
    pool = top_pool.token
    units = np.broadcast_to(np.arange(n_units)[:, None], pool.shape)
    kept = (pool >= 0) & ~open_windows.clash(units.reshape(-1), pool.reshape(-1)).reshape(pool.shape)
    column, real = first_kept(kept, top_k)
    top_token = np.where(real, np.take_along_axis(pool, column, 1), -1)
    top_value = np.where(real, np.take_along_axis(top_pool.value, column, 1), 0.0)
    return ReviewSample(top_token, top_value.astype(np.float32), interval_token, interval_value.astype(np.float32))
