"""A unit's example rows for the `example` table, from a basis's analysis arrays (units.npz): the top contexts and the
interval samples. Used by ingest (app/store/ingest.py), chunk by chunk, which builds each unit's UnitData from them
once and stores it with the page sections rendered from it (app/present/unit_sections.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Iterator

import numpy as np

from app.present.unit_sections import pack
from app.read.unit_data import analysis_fields, unit_data
from app.store.models import Example

EXAMPLE_COLUMNS = ("unit_id", "kind", "bucket", "rank", "value", "token_ids", "activations", "effects")
PAGE_ORDER = (Example.kind.desc(), Example.bucket, Example.rank)  # top windows by rank, then samples by interval


def unit_windows(a: dict[str, np.ndarray], u: int) -> Iterator[tuple]:
    """Yield (kind, bucket, rank, value, token ids, activations, effects) of unit u's windows: top contexts, then
    interval samples. Effects are None for an analysis made before they existed."""
    has_effects = "top_effects" in a
    n_top = int(a["top_count"][u])
    if not 0 <= n_top <= a["top_values"].shape[1]:
        raise ValueError(f"unit {u} says it has {n_top} top contexts")
    ids, acts = a["top_token_ids"][u, :n_top].astype("<i4"), a["top_acts"][u, :n_top].astype("<f4")
    effects = a["top_effects"][u, :n_top].astype("<f4") if has_effects else None
    for rank, value in enumerate(a["top_values"][u, :n_top].tolist()):
        yield ("top", None, rank, value, ids[rank].tobytes(), acts[rank].tobytes(),
               None if effects is None else effects[rank].tobytes())
    for bucket, count in enumerate(a["interval_sample_count"][u].tolist()):
        if not 0 <= count <= a["interval_values"].shape[2]:
            raise ValueError(f"unit {u} says interval {bucket} has {count} samples")
        ids = a["interval_token_ids"][u, bucket, :count].astype("<i4")
        acts = a["interval_acts"][u, bucket, :count].astype("<f4")
        effects = a["interval_effects"][u, bucket, :count].astype("<f4") if has_effects else None
        for rank, value in enumerate(a["interval_values"][u, bucket, :count].tolist()):
            yield ("interval", bucket, rank, value, ids[rank].tobytes(), acts[rank].tobytes(),
                   None if effects is None else effects[rank].tobytes())


def add_sections(units: list[dict], a: dict[str, np.ndarray], strings: list[str], model_name: str,
                 before: int) -> dict[int, list[tuple]]:
    """Store each unit row's UnitData and the page sections rendered from it (app/present/unit_sections.pack) in
    `sections`; return {unit: its example rows}. A page's first view and its twin's then only unpack them."""
    examples = {}
    for row in units:
        rows = examples[row["index"]] = list(unit_windows(a, row["index"]))
        data = unit_data(SimpleNamespace(**row), [(kind, bucket, *rest) for kind, bucket, _, *rest in rows], strings,
                         before, analysis_fields(a, row["index"]))
        row["sections"] = pack(data, model_name)
    return examples
