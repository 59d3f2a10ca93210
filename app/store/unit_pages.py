"""A chunk of units' stored pages: each unit's UnitData (as JSON) and the page sections rendered from it, packed
into its row's `sections` (app.present.unit_sections.pack_parts), and its `unit_proxy` rows; for ingest
(app/store/chunks.py).

The windows, ~95% of the bytes, are made for the whole chunk at once (app/present/window_batch.py) and spliced into
each unit's UnitData JSON, made without them; the rest of the page is rendered per unit by the templates, as the
read model renders a stale unit (app.read.unit_data.unit_data, app.present.unit_sections.render_sections), so a unit
ingested here and one rendered live are the same bytes (tests/app/test_window_batch.py).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Sequence

import numpy as np
from pydantic_core import to_json

from app.present.unit_sections import pack_parts, render_sections
from app.present.window_batch import render, vocabulary
from app.read.unit_data import PROXY_ARRAYS, unit_data
from app.store.example_rows import Windows
from app.store.models import OPEN_KINDS

_TOP, _SAMPLES = b'"top_examples":[]', b'"samples":[]'  # where a UnitData without windows gets them


def add_sections(units: list[dict], windows: list[Windows], analysis: list[dict], strings: Sequence[str],
                 model_name: str, before: int) -> None:
    """Store in each unit row's `sections` its packed UnitData JSON and page sections, from the chunk's windows and
    its analysis fields (app.read.unit_data.analysis_fields_of)."""
    shown = [w for w in windows if w.kind in OPEN_KINDS]
    order = np.argsort(np.concatenate([w.units for w in shown]), kind="stable")  # per unit: top, then samples
    cat = lambda field: np.concatenate([field(w) for w in shown])[order]  # noqa: E731
    owners, groups = cat(lambda w: w.units), cat(lambda w: w.buckets + 1)  # group 0: top; 1 + b: interval b
    ids, acts, values = cat(lambda w: w.ids), cat(lambda w: w.acts), cat(lambda w: w.values)
    effects = cat(lambda w: w.effects) if shown[0].effects is not None else None
    largest = _max_abs_effects(effects, owners, units[0]["index"], len(units))
    scales = {row["index"]: (float(row["max_activation"]), e) for row, e in zip(units, largest)}
    made = render(ids, acts, effects, values, owners, groups, scales, vocabulary(tuple(strings)), before)
    for row, fields, effect_scale in zip(units, analysis, largest):
        u = row["index"]
        data = unit_data(SimpleNamespace(**row), [], strings, before, fields)
        data = data.model_copy(update={"max_abs_effect": effect_scale})
        head, *rest = data.model_dump_json().encode().split(_SAMPLES)
        if len(rest) != len(data.intervals) or head.count(_TOP) != 1:
            raise ValueError(f"unit {u}'s UnitData JSON has an unexpected shape")
        top_json, top_html = made.get((u, 0), (b"", b""))
        parts = [head.replace(_TOP, b'"top_examples":[' + top_json + b"]")]
        for interval, after in zip(data.intervals, rest):
            parts += [b'"samples":[', made.get((u, 1 + interval.index), (b"", b""))[0], b"]", after]
        samples = {iv.index: made[(u, 1 + iv.index)][1] for iv in data.intervals if (u, 1 + iv.index) in made}
        row["sections"] = pack_parts(b"".join(parts), render_sections(data, model_name, (top_html, samples)))


def _max_abs_effects(effects: np.ndarray | None, owners: np.ndarray, start: int, n: int) -> list[float | None]:
    """Each unit's largest |effect| over its windows (app.read.windows.max_abs_effect): None without effects or
    windows, 0.0 where every effect is NaN."""
    if effects is None:
        return [None] * n
    per_window = np.fmax.reduce(np.abs(effects), axis=1) if effects.shape[1] else np.full(len(effects), np.nan)
    per_unit = np.full(n, np.nan, dtype=np.float32)
    np.fmax.at(per_unit, owners - start, per_window.astype(np.float32))
    has = (np.bincount(owners - start, minlength=n) > 0).tolist()
    return [(0.0 if v != v else v) if h else None for v, h in zip(per_unit.tolist(), has)]


def proxy_rows(basis_id: int, start: int, analysis: list[dict]) -> list[tuple]:
    """Return the `unit_proxy` rows (app.store.chunks.PROXY_COLUMNS) of units start, start + 1, ...: the same
    ProxyStat values their UnitData holds."""
    stats = [(start + i, k, p) for i, fields in enumerate(analysis) for k, p in enumerate(fields.get("proxies", ()))]
    counts, acts = (_dumps_each([getattr(p, f) for _, _, p in stats]) for f in ("hist_counts", "hist_acts"))
    return [(basis_id, u, k, p.name, *(getattr(p, f) for f in PROXY_ARRAYS), c, a)
            for (u, k, p), c, a in zip(stats, counts, acts)]


def _dumps_each(items: list[list[list]]) -> list[str]:
    """Return each item (a list of lists of numbers) as JSON, from one pydantic-core serialization of them all (the
    items, each "[[...]]", are joined by "," in it): the values json.loads reads back are the items'."""
    text = to_json(items).decode()[1:-1]
    pieces = text.split("]],[[") if all(item and all(row for row in item) for item in items) else []
    if len(pieces) != len(items):
        return [to_json(item).decode() for item in items]
    return [("" if i == 0 else "[[") + piece + ("" if i == len(pieces) - 1 else "]]") for i, piece in enumerate(pieces)]
