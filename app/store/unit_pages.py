"""A chunk of units' stored pages: each unit's UnitData (as JSON) and the page sections rendered from it, without
their windows, packed into its row's `sections` (app.present.unit_sections.pack_parts), and its `unit_proxy` rows; for
ingest (app/store/chunks.py). The windows are the example rows, rendered with the page (app/present/window_batch.py),
so a unit ingested here and one rendered live are the same bytes (tests/app/test_window_batch.py).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Sequence

from pydantic_core import to_json

from app.present.unit_sections import pack_parts, render_sections
from app.read.unit_data import PROXY_ARRAYS, unit_data
from app.read.windows import max_abs_effects, open_batch
from app.store.example_rows import Windows


def add_sections(units: list[dict], windows: list[Windows], analysis: list[dict], strings: Sequence[str],
                 model_name: str, before: int) -> None:
    """Store in each unit row's `sections` its packed UnitData JSON and page sections, without windows, from the
    chunk's windows and its analysis fields (app.read.unit_data.analysis_fields_of)."""
    batch = open_batch(windows)
    start = units[0]["index"]
    largest = max_abs_effects(batch.effects, batch.units, start, len(units))
    groups: list[set[int]] = [set() for _ in units]
    for u, g in set(zip((batch.units - start).tolist(), batch.groups.tolist())):
        groups[u].add(g)
    for row, fields, effect_scale, present in zip(units, analysis, largest, groups):
        data = unit_data(SimpleNamespace(**row), [], strings, before, {**fields, "max_abs_effect": effect_scale})
        row["sections"] = pack_parts(data.model_dump_json().encode(), render_sections(data, model_name, present))


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
