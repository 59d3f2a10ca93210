"""Spills: one shard's positive activations of one basis, written in pass 1 and read back batch by batch for
pass 2 and for the context windows, so the LM and the encoders run once per token (see sae/analysis/state.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from sae.compiled import kernels


@dataclass(frozen=True)
class SpillExtent:
    """The size of one appended batch of a spill: where it lies in the files."""

    n_tokens: int
    nnz: int


@dataclass(frozen=True)
class SpillBatch:
    """One batch read back from a spill: its non-zeros, token-ordered."""

    token0: int  # first token of the batch, local to the shard
    n_tokens: int
    rows: np.ndarray  # [nnz] int64, token of each non-zero, local to the shard
    units: np.ndarray  # [nnz] int64
    values: np.ndarray  # [nnz] float32


@dataclass
class Spill:
    """One shard's positive activations of one basis, token-ordered, in three flat files on disk."""

    folder: Path
    n_units: int
    batches: list[SpillExtent]  # one per appended batch

    @property
    def n_tokens(self) -> int:
        return sum(b.n_tokens for b in self.batches)

    @classmethod
    def create(cls, folder: Path, n_units: int) -> "Spill":
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("counts", "units", "values"):
            (folder / name).write_bytes(b"")
        return cls(folder, n_units, [])

    def append(self, row_counts: np.ndarray, units: np.ndarray, values: np.ndarray) -> None:
        """Append a batch's non-zeros: row_counts [N] per token, units and values [nnz] in token order."""
        for name, a in (("counts", row_counts.astype(np.int32)), ("units", units.astype(np.int32)), ("values", values)):
            with open(self.folder / name, "ab") as f:
                f.write(np.ascontiguousarray(a).data)
        self.batches.append(SpillExtent(len(row_counts), len(units)))

    def __iter__(self) -> Iterator[SpillBatch]:
        """Yield the appended batches in order, one at a time from disk."""
        for token0, counts, units, values in self.stored():
            rows = np.repeat(np.arange(token0, token0 + len(counts), dtype=np.int64), counts)
            yield SpillBatch(token0, len(counts), rows, units.astype(np.int64), values)

    def stored(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Yield each appended batch as stored: (first token, counts [n_tokens] int32, units int32, values float32)."""
        token0 = nnz0 = 0
        for extent in self.batches:
            n_tokens, nnz = extent.n_tokens, extent.nnz
            counts = np.fromfile(self.folder / "counts", np.int32, n_tokens, offset=4 * token0)
            units = np.fromfile(self.folder / "units", np.int32, nnz, offset=4 * nnz0)
            values = np.fromfile(self.folder / "values", np.float32, nnz, offset=4 * nnz0)
            yield token0, counts, units, values
            token0, nnz0 = token0 + n_tokens, nnz0 + nnz


def gather_windows(spill: Spill, n_ctx: int, shard_start: int, units: np.ndarray, centers: np.ndarray, before: int,
                   after: int, acts: np.ndarray) -> None:
    """Fill the activations of the windows around the entries that lie in this shard into acts [E, W] float32, which
    come as 0 (outside the sequence they stay so); the other entries' rows are left as they are.

    units, centers [E]: the unit and global token of each entry; the shard holds global tokens shard_start ..
    shard_start + spill tokens. Filled in place: the windows of every unit of a basis are the analysis's largest
    arrays, and a copy per shard would double them. (Their token ids come from the tokens alone:
    sae.analysis.reduce.BasisResult.token_ids.)
    """
    n_shard = spill.n_tokens
    filled = (centers >= shard_start) & (centers < shard_start + n_shard) & (units >= 0)
    e = np.nonzero(filled)[0]
    e = e[np.argsort(centers[e], kind="stable")]  # entries sorted by center token
    local = centers[e] - shard_start  # [E'] sorted; shards start at a sequence boundary, so local % T = position
    compiled = kernels("sae.analysis.window_kernels")
    if compiled is not None:
        entry_units = units[e].astype(np.int64)
        for token0, counts, u, v in spill.stored():
            lo, hi = np.searchsorted(local, [token0 - after, token0 + len(counts) + before])
            if hi > lo:
                compiled.fill_windows(acts, e[lo:hi], local[lo:hi], entry_units[lo:hi], token0, counts, u, v, n_ctx,
                                      before)
        return
    offsets = np.arange(-before, after + 1)
    n = spill.n_units
    for batch in spill:
        token0, n_tokens, rows, u, v = batch.token0, batch.n_tokens, batch.rows, batch.units, batch.values
        # Entries whose window [c - before, c + after] meets this batch's tokens [token0, token0 + n_tokens).
        lo, hi = np.searchsorted(local, [token0 - after, token0 + n_tokens + before])
        if hi <= lo:
            continue
        sel, c = e[lo:hi], local[lo:hi]
        t = c[:, None] + offsets  # [m, W] local tokens
        pos = (c % n_ctx)[:, None] + offsets
        me, mw = np.nonzero((pos >= 0) & (pos < n_ctx) & (t >= token0) & (t < token0 + n_tokens))
        t = t[me, mw]
        if len(rows):
            # The batch's keys local_token * U + unit are sorted (token order, units ascending within a token).
            query, keys = t * n + units[sel[me]], rows * n + u
            at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
            acts[sel[me], mw] = np.where(keys[at] == query, v[at], 0.0)
