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
def _escape(text: str) -> str:
    """html.escape, memoised: a vocabulary has a few thousand distinct token strings."""
    return html.escape(text, quote=True)


@lru_cache(maxsize=1 << 16)
def _silent_span(text: str) -> str:
    """The span of a token where the unit is silent (activation +0.0, no effect): most tokens of most windows."""
    return f'<span class="tok" title="0">{_escape(text)}</span>'


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
        effect = effects[position] if effects else None
        if act == 0.0 and not effect and position != max_position and math.copysign(1.0, act) > 0:
            parts.append(_silent_span(text))
            continue
        cls = "tok max" if position == max_position else "tok"
        if effect:  # neither None (no next token) nor 0 (silent)
            a, e = min(max(act, 0.0) * inverse, 1.0), min(abs(effect) * effect_inverse, 1.0)
            attrs = (f' style="--a:{a:.2f};--e:{e:.2f}" data-e="{"-" if effect < 0 else "+"}"'
                     f' title="{act:.4g} · Δ log p(next) {effect:+.3g}"')
        else:
            attrs = (f' style="--a:{min(act * inverse, 1.0):.2f}"' if act > 0 else "") + f' title="{act:.4g}"'
        parts.append(f'<span class="{cls}"{attrs}>{_escape(text)}</span>')
    parts.append("</div>")
    return "".join(parts)
