"""Example windows as data: decode the stored arrays, and token texts with their whitespace made visible.

The view models carry both (app.read.schemas.Example: `texts` and `shown`); the export decodes windows here too.
Plain functions of plain values: no database, no web framework, no HTML.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple, Sequence

import numpy as np


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
