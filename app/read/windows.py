"""Example windows as data: decode the stored arrays, and token texts with their whitespace made visible.

The view models carry both (app.read.schemas.Example: `texts` and `shown`); the export decodes windows here too.
Plain functions of plain values: no database, no web framework, no HTML.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple, Sequence

import numpy as np

from app.store.example_rows import Windows, decoded
from app.store.models import OPEN_KINDS


class Window(NamedTuple):
    """One decoded window: padding (id -1) dropped; effects None when not analysed, an entry None where a token
    has none (NaN: no next token)."""

    ids: list[int]
    texts: list[str]
    shown: list[str]
    acts: list[float]
    effects: list[float | None] | None
    max_position: int


def visible_whitespace(texts: list[str], at_line_start: bool = False) -> list[str]:
    """Return each token text with code whitespace made visible: newline as ↵ (then a real break), tab as →,
    and spaces of indentation (at the start of a line, tracked across tokens) as ·."""
    shown = []
    for text in texts:
        text, at_line_start = visible_text(text, at_line_start)
        shown.append(text)
    return shown


@lru_cache(maxsize=1 << 16)
def visible_text(text: str, at_line_start: bool) -> tuple[str, bool]:
    """Return (one token's text with its whitespace visible, whether the next token starts a line); memoised: ingest
    shows ~11M tokens of a few thousand distinct strings."""
    out = []
    for ch in text:
        if ch == "\n":
            out.append("↵\n")
            at_line_start = True
        elif ch == "\r":
            out.append("␍")
        elif ch == "\t":
            out.append("→")
        elif ch == " " and at_line_start:
            out.append("·")
        else:
            out.append(ch)
            at_line_start = False
    return "".join(out), at_line_start


def decode_window(token_ids: bytes, activations: bytes, effects: bytes | None, strings: Sequence[str],
                  context_before: int) -> Window:
    """Return the Window of stored int32 ids / float32 activations and effects; the max token sits at
    `context_before` in the stored window (the analysis contract), less the padding dropped before it."""
    ids = np.frombuffer(token_ids, dtype=np.int32)
    acts = np.frombuffer(activations, dtype=np.float32)
    keep = ids >= 0
    ids, acts = ids[keep].tolist(), acts[keep].tolist()
    texts = [strings[i] if i < len(strings) else "" for i in ids]
    max_position = int(context_before - np.count_nonzero(~keep[:context_before]))
    if not 0 <= max_position < len(texts):
        max_position = int(np.argmax(acts)) if texts else 0
    shown_effects = None
    if effects is not None:
        e = np.frombuffer(effects, dtype=np.float32)[keep]
        shown_effects = [None if v != v else v for v in e.tolist()]  # NaN (no next token, BOS) -> null
    return Window(ids, texts, visible_whitespace(texts), acts, shown_effects, max_position)


def max_abs_effect(effects: Sequence[bytes | None]) -> float | None:
    """Return the largest |effect| over a unit's stored windows (float32 bytes, NaN where a token has none; None when
    no window has effects): the effect view's scale."""
    stored = [e for e in effects if e is not None]
    if not stored:
        return None
    values = np.abs(np.frombuffer(b"".join(stored), dtype=np.float32))
    values = values[~np.isnan(values)]
    return float(values.max()) if values.size else 0.0


@lru_cache(maxsize=1 << 16)
def visible_token(text: str) -> str:
    """Return a lone token string with its whitespace visible (·, →, ↵): plain text, still autoescaped on output.
    Memoised: a page shows hundreds, of a vocabulary's few thousand strings."""
    return visible_whitespace([text], at_line_start=True)[0].replace("\n", "")


class Batch(NamedTuple):
    """The open page's windows of one or more units, in page order (each unit's top windows by rank, then its interval
    samples by interval and rank): ids, acts, effects [m, W] (int32, -1 outside the sequence; float32, effects NaN
    where a token has none, None when not analysed), values [m] (the activation at the max token), each window's
    unit and group (0: top; 1 + b: interval b) [m]. Pages render them
    (app/present/window_batch.py)."""

    ids: np.ndarray
    acts: np.ndarray
    effects: np.ndarray | None
    values: np.ndarray
    units: np.ndarray
    groups: np.ndarray

    def groups_of(self, unit: int) -> set[int]:
        """The groups of `unit` that have windows."""
        return set(self.groups[self.units == unit].tolist())

    def max_abs_effect(self) -> float | None:
        """The largest |effect| over all the windows (`max_abs_effects`)."""
        return max_abs_effects(self.effects, np.zeros(len(self.ids), np.int64), 0, 1)[0]


def open_batch(windows: Sequence[Windows]) -> Batch:
    """Return the Batch of the open page's windows among `windows` (each unit's in page order)."""
    shown = [w for w in windows if w.kind in OPEN_KINDS and len(w.units)]
    if not shown:
        empty = np.zeros(0, np.int64)
        return Batch(np.zeros((0, 0), "<i4"), np.zeros((0, 0), "<f4"), None, np.zeros(0, "<f4"), empty, empty)
    order = np.argsort(np.concatenate([w.units for w in shown]), kind="stable")  # per unit: top, then samples
    cat = lambda field: np.concatenate([field(w) for w in shown])[order]  # noqa: E731
    effects = cat(lambda w: w.effects) if all(w.effects is not None for w in shown) else None
    return Batch(cat(lambda w: w.ids), cat(lambda w: w.acts), effects, cat(lambda w: w.values),
                 cat(lambda w: w.units), cat(lambda w: w.buckets + 1))


def row_windows(rows, unit: int = 0) -> list[Windows]:
    """Return the Windows of one unit's example rows (app.store.example_rows.WINDOW_COLUMNS), views of their stored
    bytes."""
    out = []
    for kind, n, width, buckets, values, token_ids, activations, effects, codec in rows:
        shape = (n, width)
        ids, acts, effects = (decoded(b, codec) for b in (token_ids, activations, effects))
        out.append(Windows(kind, np.full(n, unit), np.full(n, -1) if buckets is None else np.frombuffer(buckets, "<i4"),
                           np.frombuffer(values, "<f4"), np.frombuffer(ids, "<i4").reshape(shape),
                           np.frombuffer(acts, "<f4").reshape(shape),
                           None if effects is None else np.frombuffer(effects, "<f4").reshape(shape)))
    return out


def max_abs_effects(effects: np.ndarray | None, owners: np.ndarray, start: int, n: int) -> list[float | None]:
    """Each of units [start, start + n)'s largest |effect| over its windows (`owners`: each window's unit), as
    `max_abs_effect` defines it: None without effects or windows, 0.0 where every effect is NaN."""
    if effects is None or not len(owners):
        return [None] * n
    per_window = np.fmax.reduce(np.abs(effects), axis=1) if effects.shape[1] else np.full(len(effects), np.nan)
    per_unit = np.full(n, np.nan, dtype=np.float32)
    np.fmax.at(per_unit, owners - start, per_window.astype(np.float32))
    has = (np.bincount(owners - start, minlength=n) > 0).tolist()
    return [(0.0 if v != v else v) if h else None for v, h in zip(per_unit.tolist(), has)]
