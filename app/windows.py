"""Example windows: decode the stored arrays and render one window as escaped, coloured token spans.

Shared by ingest (app/unit_sections.py renders every window of a unit once, for its page) and the web app
(pages that colour windows on another scale render them live), so a stored window and a live one are the same bytes.
Plain functions of plain values: no database, no web framework.
"""

from __future__ import annotations

import html
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
        text, at_line_start = _visible(text, at_line_start)
        shown.append(text)
    return shown


@lru_cache(maxsize=1 << 16)
def _visible(text: str, at_line_start: bool) -> tuple[str, bool]:
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


def max_abs_effect(effects: Sequence[list[float | None] | None]) -> float | None:
    """Return the largest |effect| over a unit's windows (None when none has effects): the effect view's scale."""
    values = [abs(v) for e in effects if e for v in e if v is not None]
    return max(values, default=0.0) if any(e is not None for e in effects) else None


@lru_cache(maxsize=1 << 16)
def _escape(text: str) -> str:
    """html.escape, memoised: a vocabulary has a few thousand distinct token strings."""
    return html.escape(text, quote=True)


def window_html(value: float, shown: Sequence[str], acts: Sequence[float], effects: Sequence[float | None] | None,
                max_position: int, scale: float, effect_scale: float | None = None) -> str:
    """Return one window as coloured token spans (~36 per window, ~2,500 per unit page). Every token text is escaped
    (html.escape, quotes included).

    --a is the activation / scale; with effect_scale, a token where the unit fires also gets --e (|ablation effect| /
    effect_scale) and data-e ("-": ablating the unit lowers the next token's log-probability, "+": raises it), which
    the page's "colour by ablation effect" switch shows instead of --a.
    """
    parts = [f'<div class="ctx"><span class="val">{value:.3g}</span>']
    inverse = 1.0 / scale if scale > 0 else 0.0
    effects = effects if effect_scale else None
    effect_inverse = 1.0 / effect_scale if effect_scale else 0.0
    for position, (text, act) in enumerate(zip(shown, acts)):
        cls = "tok max" if position == max_position else "tok"
        effect = effects[position] if effects else None
        if effect:  # neither None (no next token) nor 0 (silent)
            a, e = min(max(act, 0.0) * inverse, 1.0), min(abs(effect) * effect_inverse, 1.0)
            attrs = (f' style="--a:{a:.2f};--e:{e:.2f}" data-e="{"-" if effect < 0 else "+"}"'
                     f' title="{act:.4g} · Δ log p(next) {effect:+.3g}"')
        else:
            attrs = (f' style="--a:{min(act * inverse, 1.0):.2f}"' if act > 0 else "") + f' title="{act:.4g}"'
        parts.append(f'<span class="{cls}"{attrs}>{_escape(text)}</span>')
    parts.append("</div>")
    return "".join(parts)


def render_unit_windows(windows: Sequence[tuple[float, bytes, bytes, bytes | None]], strings: Sequence[str],
                        context_before: int, scale: float) -> tuple[float | None, list[str]]:
    """Return (the unit's effect scale, each window's HTML as its unit page shows it) for a unit's stored windows
    (value, token ids, activations, effects), coloured on `scale` (its max activation)."""
    decoded = [decode_window(ids, acts, effects, strings, context_before) for _, ids, acts, effects in windows]
    effect_scale = max_abs_effect([w.effects for w in decoded])
    return effect_scale, [window_html(value, w.shown, w.acts, w.effects, w.max_position, scale, effect_scale or None)
                          for (value, *_), w in zip(windows, decoded)]
