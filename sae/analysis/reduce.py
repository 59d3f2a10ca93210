"""The reduce of the analysis: merge pass-1 shard states, run pass 2 over each shard's spill, return contract arrays.

Order: merge every shard's `UnitStats` (final max/min) -> one `IntervalStats` streamed over the shards' spills in
token order -> the review sample (sae/analysis/review_sample.py) -> per shard windows for the globally chosen top-k,
interval and review entries (each entry lives in exactly one shard).

The result does not depend on how the sequences were sharded, to the bit, when every shard starts on a multiple of
`batch_sequences` (as `sae.analysis.executor.shard_ranges` cuts them): counts, extrema and selections merge exactly,
and every float sum is added in one fixed order, the order of the batches over the whole token array: the per-batch
`BasisSums` of all shards are folded in that order, and the activation sums come from pass 2's single stream. (A
shard cut inside a batch changes the batches, so its float sums differ in the last bits.)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from typing import Iterator

import numpy as np

from sae.analysis.proxy_stats import ProxyHist
from sae.analysis.shard import AnalysisConfig, Basis, BasisSums, ShardState
from sae.analysis.spill import gather_windows
from sae.analysis.review_sample import OpenWindows, ReviewSample, select
from sae.analysis.state import GroupSelect, IntervalStats
from sae.conventions import BOS_POSITION
from sae.dictionary.metrics import SAELENS_RECONSTRUCTION_METRICS
from sae.memory import give_back_freed_memory


WINDOW_KINDS = ("top", "interval", "review_top", "review_interval")  # the order of a basis's windows
WINDOW_ROWS = 1 << 13  # windows whose token ids are looked up at a time (bounds the [rows, W] index arrays)


@dataclass(frozen=True)
class BasisResult:
    """The reduce's output for one basis (the arrays dict is filled further with the weight-based views and the
    ablation effects; the windows' token ids are made when written: `token_ids`)."""

    arrays: dict[str, np.ndarray]  # units.npz, without the logit and ablation effects and the windows' token ids
    summary: dict  # basis.json's {metrics, density_histogram}
    units: np.ndarray  # [E] the unit of every window, in WINDOW_KINDS order (-1: an empty slot)
    centers: np.ndarray  # [E] the global token at each window's center
    acts: np.ndarray  # [E, W] the windows' activations (the *_acts arrays are views of it)
    n_open: int  # the first n_open windows are the open ones (top windows, then interval samples): ablation effects

    def token_ids(self, tokens: np.ndarray, before: int) -> Iterator[tuple[str, np.ndarray]]:
        """Yield each kind's (name, *_token_ids [..., W] int32: -1 outside the window's sequence), looked up in the
        tokens [n_seq, T] one kind at a time when written (sae.analysis.npz), rather than held since pass 2: all four
        are 81 MB at 4,096 units."""
        n_ctx, flat = tokens.shape[1], tokens.reshape(-1)
        offsets = np.arange(self.acts.shape[1], dtype=np.int32) - before  # [W]
        start = 0
        for kind in WINDOW_KINDS:
            shape = self.arrays[f"{kind}_acts"].shape
            stop = start + int(np.prod(shape[:-1]))
            ids = np.full((stop - start, shape[-1]), -1, np.int32)
            for r0 in range(start, stop, WINDOW_ROWS):
                rows = slice(r0, min(r0 + WINDOW_ROWS, stop))
                position = (self.centers[rows] % n_ctx).astype(np.int32)[:, None] + offsets  # [r, W] in the sequence
                e, w = np.nonzero((self.units[rows, None] >= 0) & (position >= 0) & (position < n_ctx))
                ids[e + (r0 - start), w] = flat[self.centers[rows][e] + offsets[w]]
            yield f"{kind}_token_ids", ids.reshape(shape)
            start = stop


def finish(shards: list[list[ShardState]], bases: list[Basis], tokens: np.ndarray, cfg: AnalysisConfig,
           proxy_buckets: np.ndarray | None = None) -> list[BasisResult]:
    """Return the units.npz arrays and basis summary {metrics, density_histogram} per basis from shards[shard][basis].

    tokens [n_seq, T]: the analysed token array the shards index into (global token = seq * T + position).
    proxy_buckets [n_seq, T, K]: each token's stacked-plot bucket per proxy (sae/analysis/proxy_scores.py), or None.
    """
    n_ctx = tokens.shape[1]
    tokens_flat = tokens.reshape(-1)
    results = []
    for b, basis in enumerate(bases):
        parts = sorted((shard[b] for shard in shards), key=lambda p: p.seq_start)  # token order: see the docstring
        stats = reduce(lambda a, o: a.merge(o), [p.stats for p in parts])
        sums: BasisSums = reduce(lambda a, o: a.merge(o), [s for p in parts for s in p.batch_sums], BasisSums())
        before, after = cfg.context_before, cfg.context_after
        open_top = OpenWindows(np.repeat(np.arange(basis.n_units), cfg.top_k), stats.top.token.reshape(-1),
                               tokens_flat, n_ctx, before, after)
        intervals = IntervalStats(stats.max_activation(), stats.min_activation(), cfg.n_intervals,
                                  cfg.samples_per_interval, cfg.act_hist_bins, cfg.seed,
                                  cfg.review_samples_per_interval, cfg.review_top_k, open_top)
        hist = None if proxy_buckets is None else ProxyHist(basis.n_units, proxy_buckets.shape[-1], cfg.n_intervals,
                                                             proxy_buckets.reshape(-1, proxy_buckets.shape[-1]))
        for p in parts:
            for batch in p.spill:  # shards start at a sequence boundary: a local row's position is row % n_ctx
                keep = batch.rows % n_ctx != BOS_POSITION
                rows, units, values = batch.rows[keep], batch.units[keep], batch.values[keep]
                group = intervals.update(rows, units, values, p.seq_start * n_ctx)
                if hist is not None:
                    hist.update(units, group % cfg.n_intervals, values, rows + p.seq_start * n_ctx)
        give_back_freed_memory()  # the spill batches' temporaries, before the windows' arrays
        arrays = _unit_arrays(stats, intervals, cfg)
        if hist is not None:
            proxy_sums = reduce(lambda a, o: a.merge(o), [p.proxies for p in parts])
            arrays.update(proxy_sums.arrays(stats.firing), **hist.arrays())
            del hist  # its float64 sums (20 MB at 4,096 units) before the windows
        # Windows: top-k entries, open interval samples, then the review sample, in one read of each shard's spill.
        u, i, s = basis.n_units, cfg.n_intervals, cfg.samples_per_interval
        open_samples = intervals.reservoir.token[:, :s]  # [U * I, S]
        group_unit = np.arange(u * i) // i  # reservoir group -> unit
        review = select(OpenWindows(np.concatenate([np.repeat(np.arange(u), cfg.top_k), np.repeat(group_unit, s)]),
                                    np.concatenate([stats.top.token.reshape(-1), open_samples.reshape(-1)]),
                                    tokens_flat, n_ctx, before, after),
                        intervals.review_top or GroupSelect(u, 0), intervals.reservoir, i, s, cfg.review_top_k,
                        cfg.review_samples_per_interval)
        entries = [(stats.top.token, np.arange(u)), (open_samples, group_unit), (review.top_token, np.arange(u)),
                   (review.interval_token, group_unit)]
        units = np.concatenate([np.where(t >= 0, owner[:, None], -1).reshape(-1) for t, owner in entries])
        centers = np.concatenate([t.reshape(-1) for t, _ in entries])
        w = cfg.context_before + 1 + cfg.context_after
        acts = np.zeros((len(units), w), np.float32)
        for p in parts:
            gather_windows(p.spill, n_ctx, p.seq_start * n_ctx, units, centers, cfg.context_before, cfg.context_after,
                           acts)
        shapes = {"top": (u, cfg.top_k), "interval": (u, i, s), "review_top": (u, cfg.review_top_k),
                  "review_interval": (u, i, cfg.review_samples_per_interval)}
        start = 0
        for name in WINDOW_KINDS:
            stop = start + int(np.prod(shapes[name]))
            arrays[f"{name}_acts"] = acts[start:stop].reshape(*shapes[name], w)
            start = stop
        arrays.update(_review_arrays(review, cfg))
        g = arrays.pop("top_global_token")
        arrays["top_sequence"] = np.where(g >= 0, g // n_ctx, -1)
        arrays["top_position"] = np.where(g >= 0, g % n_ctx, -1).astype(np.int32)
        centers_ids = np.where(g >= 0, tokens_flat[np.maximum(g, 0)], -1).astype(np.int32)  # [U, K] the max tokens
        arrays["top_token_entropy"] = _top_token_entropy(centers_ids, arrays["top_count"])
        results.append(BasisResult(arrays, _basis_summary(basis, arrays, sums, cfg), units, centers, acts,
                                   n_open=u * (cfg.top_k + i * s)))
    return results


def _unit_arrays(stats, intervals: IntervalStats, cfg: AnalysisConfig) -> dict[str, np.ndarray]:
    """Return the per-unit statistics arrays (everything except windows and logit effects)."""
    u = stats.n_units
    firing = stats.firing
    top = stats.top
    i, s = cfg.n_intervals, cfg.samples_per_interval
    real_top = top.token >= 0
    res = intervals.reservoir  # its first S columns are the open sample; the rest is the review sample's pool
    return {
        "firing_count": firing,
        "density": firing / max(stats.n_tokens, 1),
        "max_activation": stats.max_activation(),
        "mean_activation": (intervals.act_sum / np.maximum(firing, 1)).astype(np.float32),
        "act_hist_edges": intervals.hist_edges,
        "act_hist_counts": intervals.hist_counts.reshape(u, cfg.act_hist_bins),
        "top_count": real_top.sum(1).astype(np.int32),
        "top_values": np.where(real_top, top.value, -np.inf).astype(np.float32),
        "top_global_token": top.token,
        "interval_edges": intervals.interval_edges,
        "interval_counts": intervals.interval_counts.reshape(u, i),
        "interval_sample_count": (res.token[:, :s] >= 0).sum(1).reshape(u, i).astype(np.int32),
        "interval_values": res.value[:, :s].reshape(u, i, s),
    }


def _review_arrays(review: ReviewSample, cfg: AnalysisConfig) -> dict[str, np.ndarray]:
    """Return the review sample's counts and values (sae/analysis/review_sample.py)."""
    u, i, s = review.top_token.shape[0], cfg.n_intervals, cfg.review_samples_per_interval
    real_top = review.top_token >= 0
    return {
        "review_top_count": real_top.sum(1).astype(np.int32),
        "review_top_values": np.where(real_top, review.top_value, -np.inf).astype(np.float32),
        "review_interval_sample_count": (review.interval_token >= 0).sum(1).reshape(u, i).astype(np.int32),
        "review_interval_values": review.interval_value.reshape(u, i, s),
    }


def _top_token_entropy(center_ids: np.ndarray, top_count: np.ndarray) -> np.ndarray:
    """Return the entropy in bits [U] of each unit's max-token distribution over its top contexts [U, K]."""
    u, k = center_ids.shape
    real = np.arange(k)[None, :] < top_count[:, None]
    unit = np.repeat(np.arange(u), k)[real.reshape(-1)]
    pair = unit.astype(np.int64) * (int(center_ids.max(initial=0)) + 1) + center_ids[real]
    pairs, counts = np.unique(pair, return_counts=True)
    owner = pairs // (int(center_ids.max(initial=0)) + 1)
    p = counts / top_count[owner]
    return np.bincount(owner, weights=-p * np.log2(p), minlength=u).astype(np.float32)


def _basis_summary(basis: Basis, arrays: dict, sums: BasisSums, cfg: AnalysisConfig) -> dict:
    """Return basis.json's metrics and density_histogram for one basis."""
    density = arrays["density"]
    live = density > 0
    edges = np.linspace(-10.0, 0.0, 41)
    counts, _ = np.histogram(np.clip(np.log10(density[live]), -10.0, 0.0), bins=edges)
    dead = int((~live).sum())
    recon = sums.recon.metrics()
    losses = sums.loss.metrics()
    metrics = {
        "l0": recon["l0"],
        "mse": recon["mse"],
        "fvu": recon["fvu"],
        **{key: recon.get(key) for key in SAELENS_RECONSTRUCTION_METRICS},
        **losses,
        "loss_tokens": sums.loss.tokens,
        "dead": dead,
        "ultralow": int((live & (density < cfg.ultralow_threshold)).sum()),
        "dense": int((density > cfg.dense_threshold).sum()),
        "n_units": basis.n_units,
        "n_tokens": sums.recon.n_tokens,
    }
    histogram = {"edges": edges.tolist(), "counts": counts.tolist(), "dead": dead,
                 "ultralow_threshold": cfg.ultralow_threshold, "dense_threshold": cfg.dense_threshold}
    return {"metrics": metrics, "density_histogram": histogram}
