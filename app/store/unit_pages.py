"""A chunk of units' stored pages: each unit's UnitData (as JSON) and the page sections rendered from it, without
their windows, packed into its row's `sections` (app.present.unit_sections.pack_parts), for ingest
(app/store/chunks.py). The windows are the example rows, rendered with the page (app/present/window_batch.py), so a
unit ingested here and one rendered live are the same bytes (tests/app/test_window_batch.py).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Sequence

from app.present.unit_sections import pack_parts, render_sections
from app.read.unit_data import unit_data
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
