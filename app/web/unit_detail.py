"""Turn a unit's database rows into the UnitDetail schema (no SQL here: app/web/queries/unit.py fetches the rows).

Example windows are decoded by app/store/windows.py (padding dropped, the max token's position).
"""

from __future__ import annotations

from app.store.models import TOP_TOKENS_SEPARATOR
from app.store.windows import decode_window
from app.web.schemas import (
    Example,
    Histogram,
    Interval,
    LogitToken,
    UnitDetail,
    visible_whitespace,
)


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
        out.append(LogitToken.model_construct(id=int(i), text=text, shown=shown, value=float(v)))
    return out


def _example(value: float, token_ids: bytes, activations: bytes, effects: bytes | None, strings: list[str],
             context_before: int) -> Example:
    window = decode_window(token_ids, activations, effects, context_before)
    texts = [strings[i] if i < len(strings) else "" for i in window.token_ids]
    # model_construct: these rows come from our own database, and validating ~2,500 tokens per page costs ms
    return Example.model_construct(value=float(value), max_position=window.max_position, token_ids=window.token_ids,
                                   texts=texts, shown=visible_whitespace(texts), acts=window.activations,
                                   effects=window.effects)


def _max_abs_effect(examples: list[Example]) -> float | None:
    """Return the largest |effect| over the windows (None when none has effects), the effect view's colour scale."""
    values = [abs(v) for ex in examples if ex.effects for v in ex.effects if v is not None]
    return max(values, default=0.0) if any(ex.effects is not None for ex in examples) else None


def build_unit_detail(*, basis, unit, examples: list, strings: list[str], summary, label: str | None, links: list,
                      url: str, labels_url: str, prev_url: str | None, next_url: str | None,
                      compare_url: str | None, family=None) -> UnitDetail:
    """Return the UnitDetail of `unit`; `examples` are its example rows (kind, bucket, value, token_ids, activations,
    effects), top examples first by rank, then interval samples by bucket and rank."""
    context_before = int((basis.config or {}).get("context_before", 24))
    top: list[Example] = []
    samples: dict[int, list[Example]] = {}
    for kind, bucket, value, token_ids, activations, effects in examples:
        example = _example(value, token_ids, activations, effects, strings, context_before)
        if kind == "top":
            top.append(example)
        else:
            samples.setdefault(int(bucket), []).append(example)
    edges = list(unit.interval_edges or [])
    counts = list(unit.interval_counts or [])
    firing = max(int(unit.firing_count), 1)
    intervals = [Interval.model_construct(index=i, low=float(edges[i]), high=float(edges[i + 1]), count=int(c),
                                          contains_pct=100.0 * int(c) / firing, samples=samples.get(i, []))
                 for i, c in enumerate(counts) if i + 1 < len(edges) and (c or samples.get(i))]
    return UnitDetail(
        basis=summary, index=unit.index, url=url, labels_url=labels_url, firing_count=unit.firing_count,
        density=unit.density,
        max_activation=unit.max_activation, mean_activation=unit.mean_activation,
        top_token_entropy=unit.top_token_entropy, label=label, act_hist=_histogram(unit.act_hist),
        logit_hist=_histogram(unit.logit_hist), top_logits=_logits(unit.top_logits, strings),
        bottom_logits=_logits(unit.bottom_logits, strings), top_examples=top,
        intervals=intervals if samples or any(counts) else [], links=links, prev_url=prev_url, next_url=next_url,
        compare_url=compare_url, family=family, max_abs_effect=_max_abs_effect(top + [e for s in samples.values() for e in s]))
