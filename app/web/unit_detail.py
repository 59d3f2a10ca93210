"""Turn a unit's database rows into the UnitDetail schema (no SQL here: app/web/queries/unit.py fetches the rows).

Example windows are decoded by app.windows.decode_window (padding dropped, the max token's position), the one decoder
the export uses too.
"""

from __future__ import annotations

from typing import NamedTuple

from markupsafe import Markup

from app.store.models import TOP_TOKENS_SEPARATOR
from app.web.schemas import (
    Example,
    Histogram,
    Interval,
    LogitToken,
    UnitDetail,
    visible_whitespace,
)
from app.windows import decode_window, max_abs_effect, unpack_html, window_html


def split_top_tokens(text: str | None) -> list[str]:
    """Return the distinct max-token strings of a unit (joined by TOP_TOKENS_SEPARATOR in app/store/ingest.py)."""
    return text.split(TOP_TOKENS_SEPARATOR) if text else []


def _histogram(raw: dict) -> Histogram:
    return Histogram(edges=raw["edges"], counts=raw["counts"])


def _logits(pairs: list, strings: list[str]) -> list[LogitToken]:
    """Attach token strings to stored [token_id, weight] pairs."""
    out = []
    for i, v in pairs:
        text = strings[i] if 0 <= i < len(strings) else ""
        shown = visible_whitespace([text], at_line_start=True)[0].replace("\n", "")  # a lone token: all spaces shown
        out.append(LogitToken(id=int(i), text=text, shown=shown, value=float(v)))
    return out


def _example(value: float, token_ids: bytes, activations: bytes, effects: bytes | None, strings: list[str],
             context_before: int) -> Example:
    w = decode_window(token_ids, activations, effects, strings, context_before)
    # model_construct: these rows come from our own database, and validating ~2,500 tokens per page costs ms
    return Example.model_construct(value=float(value), max_position=w.max_position, token_ids=w.ids, texts=w.texts,
                                   shown=w.shown, acts=w.acts, effects=w.effects)


class PageWindows(NamedTuple):
    """A unit page's example windows as HTML (escaped, coloured), each section joined into one string: the top
    windows ("" when the unit never fired), the samples per interval, and the effect colour scale they were rendered
    with (None: no effects)."""

    top: Markup
    intervals: dict[int, Markup]
    effect_scale: float | None


def _page_windows(top: list[str], intervals: dict[int, list[str]], effect_scale: float | None) -> PageWindows:
    return PageWindows(Markup("".join(top)), {i: Markup("".join(w)) for i, w in intervals.items()}, effect_scale)


def stored_windows(rows: list, effect_scale: float | None) -> PageWindows:
    """Return the PageWindows of a unit's stored rows (kind, bucket, packed html), in page order: rendered at ingest,
    so a first view only unpacks them."""
    top: list[str] = []
    intervals: dict[int, list[str]] = {}
    for kind, bucket, html in rows:
        (top if kind == "top" else intervals.setdefault(int(bucket), [])).append(unpack_html(html))
    return _page_windows(top, intervals, effect_scale)


def live_windows(detail: UnitDetail) -> PageWindows:
    """Return the PageWindows of a decoded UnitDetail, rendered now (bases ingested before windows were stored)."""
    scale, effect_scale = detail.max_activation, detail.max_abs_effect or None

    def html(ex: Example) -> str:
        return window_html(ex.value, ex.shown, ex.acts, ex.effects, ex.max_position, scale, effect_scale)

    return _page_windows([html(ex) for ex in detail.top_examples],
                         {iv.index: [html(ex) for ex in iv.samples] for iv in detail.intervals if iv.samples},
                         detail.max_abs_effect)


def build_unit_detail(*, basis, unit, examples: list, strings: list[str], summary, label: str | None, links: list,
                      url: str, labels_url: str, prev_url: str | None, next_url: str | None,
                      compare_url: str | None, family=None, rendered: PageWindows | None = None) -> UnitDetail:
    """Return the UnitDetail of `unit`; `examples` are its example rows (kind, bucket, value, token_ids, activations,
    effects), top examples first by rank, then interval samples by bucket and rank. With `rendered` (the page's
    stored windows), `examples` is empty and the windows' buckets and effect scale come from it."""
    context_before = int((basis.config or {}).get("context_before", 24))
    top: list[Example] = []
    samples: dict[int, list[Example]] = {}
    for kind, bucket, value, token_ids, activations, effects in examples:
        example = _example(value, token_ids, activations, effects, strings, context_before)
        if kind == "top":
            top.append(example)
        else:
            samples.setdefault(int(bucket), []).append(example)
    buckets = set(samples) | set(rendered.intervals if rendered else ())
    effect_scale = rendered.effect_scale if rendered else \
        max_abs_effect([e.effects for e in top + [e for s in samples.values() for e in s]])
    edges = list(unit.interval_edges or [])
    counts = list(unit.interval_counts or [])
    firing = max(int(unit.firing_count), 1)
    intervals = [Interval(index=i, low=float(edges[i]), high=float(edges[i + 1]), count=int(c),
                          contains_pct=100.0 * int(c) / firing, samples=samples.get(i, []))
                 for i, c in enumerate(counts) if i + 1 < len(edges) and (c or samples.get(i) or i in buckets)]
    return UnitDetail(
        basis=summary, index=unit.index, url=url, labels_url=labels_url, firing_count=unit.firing_count,
        density=unit.density,
        max_activation=unit.max_activation, mean_activation=unit.mean_activation,
        top_token_entropy=unit.top_token_entropy, label=label, act_hist=_histogram(unit.act_hist),
        logit_hist=_histogram(unit.logit_hist), top_logits=_logits(unit.top_logits, strings),
        bottom_logits=_logits(unit.bottom_logits, strings), top_examples=top,
        intervals=intervals if buckets or any(counts) else [], links=links, prev_url=prev_url, next_url=next_url,
        compare_url=compare_url, family=family, max_abs_effect=effect_scale)
