"""Example windows as HTML: one window as escaped, coloured token spans.

Shared by ingest (app/present/unit_sections.py renders every window of a unit once, for its page) and the web app
(pages that colour windows on another scale render them live), so a stored window and a live one are the same bytes.
"""

from __future__ import annotations

import html
import math
from functools import lru_cache
from typing import Sequence


@lru_cache(maxsize=1 << 16)
def escape_token(text: str) -> str:
    """html.escape, memoised: a vocabulary has a few thousand distinct token strings."""
    return html.escape(text, quote=True)


@lru_cache(maxsize=1 << 16)
def silent_span(text: str) -> str:
    """The span of a token where the unit is silent (activation +0.0, no effect): most tokens of most windows."""
    return f'<span class="tok" title="0">{escape_token(text)}</span>'


def window_head(value: float) -> str:
    """The opening of a window's HTML, with its value."""
    return f'<div class="ctx"><span class="val">{value:.3g}</span>'


def is_silent(act: float, effect: float | None, is_max: bool) -> bool:
    """Whether a token is drawn as a silent_span: activation +0.0, no effect shown, not the max token."""
    return act == 0.0 and not effect and not is_max and math.copysign(1.0, act) > 0


def token_span(escaped: str, act: float, effect: float | None, is_max: bool, inverse: float,
               effect_inverse: float) -> str:
    """The span of a token that is not silent: its escaped text coloured by act * inverse, and by |effect| *
    effect_inverse when it has an effect (neither None, no next token, nor 0, silent)."""
    cls = "tok max" if is_max else "tok"
    if effect:
        a, e = min(max(act, 0.0) * inverse, 1.0), min(abs(effect) * effect_inverse, 1.0)
        attrs = (f' style="--a:{a:.2f};--e:{e:.2f}" data-e="{"-" if effect < 0 else "+"}"'
                 f' title="{act:.4g} · Δ log p(next) {effect:+.3g}"')
    else:
        attrs = (f' style="--a:{min(act * inverse, 1.0):.2f}"' if act > 0 else "") + f' title="{act:.4g}"'
    return f'<span class="{cls}"{attrs}>{escaped}</span>'


def scale_inverses(scale: float, effect_scale: float | None) -> tuple[float, float]:
    """Return (1 / scale, 1 / effect_scale), each 0 where its scale is not positive (or None)."""
    return 1.0 / scale if scale > 0 else 0.0, 1.0 / effect_scale if effect_scale else 0.0


def window_html(value: float, shown: Sequence[str], acts: Sequence[float], effects: Sequence[float | None] | None,
                max_position: int, scale: float, effect_scale: float | None = None) -> str:
    """Return one window as coloured token spans (~36 per window, ~2,500 per unit page). Every token text is escaped
    (html.escape, quotes included).

    --a is the activation / scale; with effect_scale, a token where the unit fires also gets --e (|ablation effect| /
    effect_scale) and data-e ("-": ablating the unit lowers the next token's log-probability, "+": raises it), which
    the page's "colour by ablation effect" switch shows instead of --a. Ingest renders many units' windows at once
    from these same pieces (app/present/window_batch.py).
    """
    parts = [window_head(value)]
    inverse, effect_inverse = scale_inverses(scale, effect_scale)
    effects = effects if effect_scale else None
    for position, (text, act) in enumerate(zip(shown, acts)):
        effect = effects[position] if effects else None
        is_max = position == max_position
        if is_silent(act, effect, is_max):
            parts.append(silent_span(text))
        else:
            parts.append(token_span(escape_token(text), act, effect, is_max, inverse, effect_inverse))
    parts.append("</div>")
    return "".join(parts)
