"""A chunk of units' example rows for the `example` table, from a basis's analysis arrays (units.npz): the top contexts
and the interval samples, of the open page and of the review sample, gathered with numpy for the whole chunk. Used by
ingest (app/store/chunks.py), which renders the open ones into each unit's UnitData and page sections in the same
pass (app/present/window_batch.py, app/present/unit_sections.py); only blind review items read the review sample
(app/read/queries/review_items.py)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from app.store.models import OPEN_KINDS, REVIEW_KINDS, Example

EXAMPLE_COLUMNS = ("unit_id", "kind", "bucket", "rank", "value", "token_ids", "activations", "effects")
PAGE_ORDER = (Example.kind.desc(), Example.bucket, Example.rank)  # top windows by rank, then samples by interval
OPEN = Example.kind.in_(OPEN_KINDS)  # every read of a unit's page's windows filters by it


class Windows(NamedTuple):
    """m windows of one kind, in page order per unit (top: by rank; interval samples: by bucket, then rank)."""

    kind: str
    units: np.ndarray  # [m] unit index
    buckets: np.ndarray  # [m] interval index; -1 for a top window
    ranks: np.ndarray  # [m]
    values: np.ndarray  # [m] float32 activation at the max token
    ids: np.ndarray  # [m, W] int32 token ids, -1 outside the sequence
    acts: np.ndarray  # [m, W] float32
    effects: np.ndarray | None  # [m, W] float32, NaN where a token has none; None: not analysed


def chunk_windows(a: dict[str, np.ndarray], start: int, stop: int) -> list[Windows]:
    """Return the windows of units [start, stop): top contexts, then interval samples, of the open page (OPEN_KINDS),
    then of the review sample (REVIEW_KINDS) when the analysis has one. Effects are None for an analysis made before
    they existed, and for the review sample."""
    out = _windows(a, start, stop, "", OPEN_KINDS)
    if "review_top_count" in a:
        out += _windows(a, start, stop, "review_", REVIEW_KINDS)
    return out


def _windows(a: dict[str, np.ndarray], start: int, stop: int, prefix: str, kinds: tuple[str, str]) -> list[Windows]:
    """Return the windows of the arrays named `prefix` + top_* and `prefix` + interval_*, as kinds (top, interval)."""
    top_kind, interval_kind = kinds
    has_effects = f"{prefix}top_effects" in a
    n_top = np.asarray(a[f"{prefix}top_count"][start:stop])
    k = a[f"{prefix}top_values"].shape[1]
    counts = np.asarray(a[f"{prefix}interval_sample_count"][start:stop])  # [n, I]
    s = a[f"{prefix}interval_values"].shape[2]
    for u in np.flatnonzero((n_top < 0) | (n_top > k) | ((counts < 0) | (counts > s)).any(1))[:1].tolist():
        if not 0 <= n_top[u] <= k:
            raise ValueError(f"unit {start + u} says it has {n_top[u]} {prefix}top contexts")
        bucket = int(np.flatnonzero((counts[u] < 0) | (counts[u] > s))[0])
        raise ValueError(f"unit {start + u} says {prefix}interval {bucket} has {counts[u, bucket]} samples")
    unit, rank = np.nonzero(np.arange(k) < n_top[:, None])
    top = _take(a, f"{prefix}top", has_effects, start, stop, (unit, rank))
    unit_i, bucket, rank_i = np.nonzero(np.arange(s) < counts[:, :, None])
    interval = _take(a, f"{prefix}interval", has_effects, start, stop, (unit_i, bucket, rank_i))
    return [Windows(top_kind, start + unit, np.full(len(unit), -1), rank, *top),
            Windows(interval_kind, start + unit_i, bucket, rank_i, *interval)]


def _take(a: dict[str, np.ndarray], name: str, has_effects: bool, start: int, stop: int,
          where: tuple[np.ndarray, ...]) -> tuple:
    """Return (values [m], ids [m, W], acts [m, W], effects [m, W] or None) of the array family `name` at `where`."""
    values = np.asarray(a[f"{name}_values"][start:stop][where], dtype=np.float32)
    ids = np.ascontiguousarray(a[f"{name}_token_ids"][start:stop][where], dtype="<i4")
    acts = np.ascontiguousarray(a[f"{name}_acts"][start:stop][where], dtype="<f4")
    effects = np.ascontiguousarray(a[f"{name}_effects"][start:stop][where], dtype="<f4") if has_effects else None
    return values, ids, acts, effects


def example_rows(windows: list[Windows]) -> tuple[np.ndarray, list[tuple]]:
    """Return (each row's unit index [r], the rows (kind, bucket, rank, value, token ids, activations, effects)) of
    a chunk's windows, per unit in chunk_windows's order."""
    units = np.concatenate([w.units for w in windows])
    order = np.argsort(units, kind="stable")
    columns = []
    for w in windows:
        m = len(w.units)
        blobs = [_blobs(x) if x is not None else [None] * m for x in (w.ids, w.acts, w.effects)]
        bucket = w.buckets.tolist() if w.kind not in (OPEN_KINDS[0], REVIEW_KINDS[0]) else [None] * m
        columns.append(list(zip([w.kind] * m, bucket, w.ranks.tolist(), w.values.tolist(), *blobs)))
    rows = [row for c in columns for row in c]
    return units[order], [rows[i] for i in order.tolist()]


def _blobs(x: np.ndarray) -> list[bytes]:
    """Each row of a 2-D little-endian array as bytes."""
    x = np.ascontiguousarray(x)
    return x.view(np.dtype((np.void, x.shape[1] * x.itemsize))).ravel().tolist() if x.shape[1] else [b""] * len(x)


_PG_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # binary COPY: signature, flags, header extension length
_PG_TRAILER = b"\xff\xff"


def example_copy(windows: list[Windows], unit_ids: np.ndarray) -> bytes:
    """Return PostgreSQL's binary COPY data of a chunk's example rows (EXAMPLE_COLUMNS; each window's unit id
    `unit_ids[unit index]`), in example_rows's order: numpy writes every field, no Python object per row."""
    blocks, units = [], []
    for w in windows:
        m, bucket, effects = len(w.units), w.kind not in (OPEN_KINDS[0], REVIEW_KINDS[0]), w.effects is not None
        kind = w.kind.encode()
        fields = [("count", ">i2"), ("n_unit", ">i4"), ("unit", ">i4"), ("n_kind", ">i4"), ("kind", f"S{len(kind)}"),
                  ("n_bucket", ">i4"), *([("bucket", ">i4")] if bucket else []), ("n_rank", ">i4"), ("rank", ">i4"),
                  ("n_value", ">i4"), ("value", ">f8")]
        for name, x in (("ids", w.ids), ("acts", w.acts), ("effects", w.effects)):
            fields.append((f"n_{name}", ">i4"))
            if x is not None:
                fields.append((name, f"V{x.shape[1] * 4}"))
        rows = np.zeros(m, np.dtype(fields))
        rows["count"], rows["n_unit"], rows["unit"] = len(EXAMPLE_COLUMNS), 4, unit_ids[w.units]
        rows["n_kind"], rows["kind"] = len(kind), kind
        rows["n_bucket"] = 4 if bucket else -1
        if bucket:
            rows["bucket"] = w.buckets
        rows["n_rank"], rows["rank"], rows["n_value"], rows["value"] = 4, w.ranks, 8, w.values
        for name, x in (("ids", w.ids), ("acts", w.acts), ("effects", w.effects)):
            rows[f"n_{name}"] = -1 if x is None else x.shape[1] * 4
            if x is not None:
                rows[name] = np.ascontiguousarray(x).view(rows.dtype[name]).ravel()
        blocks.append(rows.view(np.dtype((np.void, rows.itemsize))).tolist() if m else [])
        units.append(w.units)
    rows = [row for block in blocks for row in block]
    order = np.argsort(np.concatenate(units), kind="stable")
    return b"".join([_PG_HEADER, *[rows[i] for i in order.tolist()], _PG_TRAILER])
