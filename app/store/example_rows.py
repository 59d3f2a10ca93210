"""The `example` table's rows, one per unit and kind with its windows packed (app.store.models.Example): made for a
chunk of units from a basis's analysis arrays (units.npz) with numpy, and read back window by window (`unpack_rows`).
The top contexts and the interval samples, of the open page and of the review sample. Ingest (app/store/chunks.py)
renders the open ones into each unit's UnitData and page sections in the same pass (app/present/window_batch.py,
app/present/unit_sections.py); only blind review items read the review sample (app/read/queries/review_items.py)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from app.store.models import OPEN_KINDS, REVIEW_KINDS, Example
from app.zstd_codecs import zstd_codecs

EXAMPLE_COLUMNS = ("unit_id", "kind", "n", "width", "buckets", "values", "token_ids", "activations", "effects",
                   "codec")
WINDOW_COLUMNS = (Example.kind, Example.n, Example.width, Example.buckets, Example.values, Example.token_ids,
                  Example.activations, Example.effects, Example.codec)  # what `unpack_rows` reads
ZSTD = 1  # Example.codec of rows whose window arrays are zstd frames (0: as they are, written before 0012)
PAGE_ORDER = (Example.kind.desc(),)  # top windows (each row in rank order), then samples (by interval, then rank)
OPEN = Example.kind.in_(OPEN_KINDS)  # every read of a unit's page's windows filters by it


def decoded(blob: bytes | None, codec: int) -> bytes | None:
    """Return a stored window array's bytes as the analysis wrote them."""
    return zstd_codecs()[1].decompress(blob) if blob is not None and codec == ZSTD else blob


class WindowRow(NamedTuple):
    """One stored window: its kind, interval (None for a top window), activation at its max token, int32 ids,
    float32 activations and effects (None: not analysed) as little-endian bytes, and its rank in its kind
    (top) or interval (samples)."""

    kind: str
    bucket: int | None
    value: float
    token_ids: bytes
    activations: bytes
    effects: bytes | None
    rank: int


class Windows(NamedTuple):
    """m windows of one kind, in page order per unit (top: by rank; interval samples: by bucket, then rank)."""

    kind: str
    units: np.ndarray  # [m] unit index
    buckets: np.ndarray  # [m] interval index; -1 for a top window
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
    return [Windows(top_kind, start + unit, np.full(len(unit), -1), *top),
            Windows(interval_kind, start + unit_i, bucket, *interval)]


def _take(a: dict[str, np.ndarray], name: str, has_effects: bool, start: int, stop: int,
          where: tuple[np.ndarray, ...]) -> tuple:
    """Return (values [m], ids [m, W], acts [m, W], effects [m, W] or None) of the array family `name` at `where`."""
    values = np.asarray(a[f"{name}_values"][start:stop][where], dtype=np.float32)
    ids = np.ascontiguousarray(a[f"{name}_token_ids"][start:stop][where], dtype="<i4")
    acts = np.ascontiguousarray(a[f"{name}_acts"][start:stop][where], dtype="<f4")
    effects = np.ascontiguousarray(a[f"{name}_effects"][start:stop][where], dtype="<f4") if has_effects else None
    return values, ids, acts, effects


def packed_rows(windows: list[Windows], unit_ids: np.ndarray) -> list[tuple]:
    """Return a chunk's example rows (EXAMPLE_COLUMNS), one per unit and kind that has windows, each unit's rows
    together in chunk_windows's order of kinds, their window arrays zstd-compressed (level 1: ~0.15 ms a unit, and
    ingest writes 2-4.6x fewer bytes); `unit_ids[unit index]` is each unit's row id."""
    rows, units = [], []
    compress = zstd_codecs()[0].compress
    for w in windows:
        m = len(w.units)
        if not m:
            continue
        starts = np.flatnonzero(np.r_[True, w.units[1:] != w.units[:-1]])  # w.units is sorted (page order per unit)
        bounds = np.r_[starts, m].tolist()
        values, buckets = w.values.astype("<f4"), w.buckets.astype("<i4")
        top = w.kind in (OPEN_KINDS[0], REVIEW_KINDS[0])
        width = int(w.ids.shape[1])
        for a, b in zip(bounds[:-1], bounds[1:]):
            rows.append((int(unit_ids[w.units[a]]), w.kind, b - a, width, None if top else buckets[a:b].tobytes(),
                         values[a:b].tobytes(), compress(w.ids[a:b].tobytes()), compress(w.acts[a:b].tobytes()),
                         None if w.effects is None else compress(w.effects[a:b].tobytes()), ZSTD))
            units.append(int(w.units[a]))
    return [rows[i] for i in np.argsort(np.array(units, dtype=np.int64), kind="stable").tolist()]


def unpack_windows(kind: str, n: int, width: int, buckets: bytes | None, values: bytes, token_ids: bytes,
                   activations: bytes, effects: bytes | None, codec: int) -> list[WindowRow]:
    """Return the windows of one example row, in page order."""
    bucket = [None] * n if buckets is None else np.frombuffer(buckets, "<i4").tolist()
    value = np.frombuffer(values, "<f4").tolist()
    token_ids, activations, effects = (decoded(b, codec) for b in (token_ids, activations, effects))
    size = 4 * width
    rank, out = 0, []
    for i in range(n):
        rank = rank + 1 if i and bucket[i] == bucket[i - 1] else 0
        part = slice(i * size, (i + 1) * size)
        out.append(WindowRow(kind, bucket[i], value[i], token_ids[part], activations[part],
                             None if effects is None else effects[part], rank))
    return out


def unpack_rows(rows) -> list[WindowRow]:
    """Return the windows of example rows selected as WINDOW_COLUMNS (in PAGE_ORDER: the page's order)."""
    return [w for row in rows for w in unpack_windows(*row)]
