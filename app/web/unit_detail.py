"""Turn a unit's database rows into the UnitDetail schema (no SQL here: app/web/queries/unit.py fetches the rows).

Example windows are decoded by app.windows.decode_window (padding dropped, the max token's position), the one decoder
the export uses too.
"""

from __future__ import annotations

from app.store.models import TOP_TOKENS_SEPARATOR
from app.unit_sections import interval_rows, logit_rows
from app.web.schemas import Example, Histogram, Interval, LogitToken, UnitDetail
from app.windows import decode_window, max_abs_effect


def split_top_tokens(text: str | None) -> list[str]:
    """Return the distinct max-token strings of a unit (joined by TOP_TOKENS_SEPARATOR in app/store/ingest.py)."""
    return text.split(TOP_TOKENS_SEPARATOR) if text else []


def _histogram(raw: dict) -> Histogram:
    return Histogram(edges=raw["edges"], counts=raw["counts"])


def _logits(pairs: list, strings: list[str]) -> list[LogitToken]:
    return [LogitToken(id=r.id, text=r.text, shown=r.shown, value=r.value) for r in logit_rows(pairs, strings)]


def _example(value: float, token_ids: bytes, activations: bytes, effects: bytes | None, strings: list[str],
             context_before: int) -> Example:
    w = decode_window(token_ids, activations, effects, strings, context_before)
    # model_construct: these rows come from our own database, and validating ~2,500 tokens per page costs ms
    return Example.model_construct(value=float(value), max_position=w.max_position, token_ids=w.ids, texts=w.texts,
                                   shown=w.shown, acts=w.acts, effects=w.effects)


def build_unit_detail(*, unit, examples: list, strings: list[str], context_before: int, basis, index: int,
                      label: str | None, url: str, labels_url: str, prev_url: str | None, next_url: str | None,
                      links: list, compare_url: str | None, family=None) -> UnitDetail:
    """Return the UnitDetail of `unit` (its basis's summary as `basis`); `examples` are its example rows (kind,
    bucket, value, token_ids, activations, effects), top examples first by rank, then interval samples by bucket and
    rank."""
    top: list[Example] = []
    samples: dict[int, list[Example]] = {}
    for kind, bucket, value, token_ids, activations, effects in examples:
        example = _example(value, token_ids, activations, effects, strings, context_before)
        if kind == "top":
            top.append(example)
        else:
            samples.setdefault(int(bucket), []).append(example)
    intervals = [Interval(**row._asdict(), samples=samples.get(row.index, []))
                 for row in interval_rows(unit.interval_edges or [], unit.interval_counts or [], unit.firing_count,
                                          set(samples))]
    return UnitDetail(
        basis=basis, index=index, url=url, labels_url=labels_url, firing_count=unit.firing_count,
        density=unit.density,
        max_activation=unit.max_activation, mean_activation=unit.mean_activation,
        top_token_entropy=unit.top_token_entropy, label=label, act_hist=_histogram(unit.act_hist),
        logit_hist=_histogram(unit.logit_hist), top_logits=_logits(unit.top_logits, strings),
        bottom_logits=_logits(unit.bottom_logits, strings), top_examples=top, intervals=intervals, links=links,
        prev_url=prev_url, next_url=next_url, compare_url=compare_url, family=family,
        max_abs_effect=max_abs_effect([e.effects for e in top + [e for s in samples.values() for e in s]]))
