"""A unit's example rows for the `example` table, from a basis's analysis arrays (units.npz): the top contexts and the
interval samples, of the open page and of the review sample. Used by ingest (app/store/ingest.py), chunk by chunk,
which builds each unit's UnitData from the open ones once and stores it with the page sections rendered from it
(app/present/unit_sections.py); only blind review items read the review sample (app/read/queries/review_items.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Iterator

import numpy as np

from app.present.unit_sections import pack
from app.read.unit_data import analysis_fields, unit_data
from app.store.models import OPEN_KINDS, REVIEW_KINDS, Example

EXAMPLE_COLUMNS = ("unit_id", "kind", "bucket", "rank", "value", "token_ids", "activations", "effects")
PAGE_ORDER = (Example.kind.desc(), Example.bucket, Example.rank)  # top windows by rank, then samples by interval
OPEN = Example.kind.in_(OPEN_KINDS)  # every read of a unit's page's windows filters by it


def unit_windows(a: dict[str, np.ndarray], u: int) -> Iterator[tuple]:
    """Yield (kind, bucket, rank, value, token ids, activations, effects) of unit u's windows: top contexts, then
    interval samples, of the open page (OPEN_KINDS), then of the review sample (REVIEW_KINDS) when the analysis has
    one. Effects are None for an analysis made before they existed, and for the review sample."""
    yield from _windows(a, u, "", OPEN_KINDS)
    if "review_top_count" in a:
        yield from _windows(a, u, "review_", REVIEW_KINDS)


def _windows(a: dict[str, np.ndarray], u: int, prefix: str, kinds: tuple[str, str]) -> Iterator[tuple]:
    """Yield the windows of the arrays named `prefix` + top_* and `prefix` + interval_*, as kinds (top, interval)."""
    top_kind, interval_kind = kinds
    has_effects = f"{prefix}top_effects" in a
    n_top = int(a[f"{prefix}top_count"][u])
    if not 0 <= n_top <= a[f"{prefix}top_values"].shape[1]:
        raise ValueError(f"unit {u} says it has {n_top} {prefix}top contexts")
    ids, acts = a[f"{prefix}top_token_ids"][u, :n_top].astype("<i4"), a[f"{prefix}top_acts"][u, :n_top].astype("<f4")
    effects = a[f"{prefix}top_effects"][u, :n_top].astype("<f4") if has_effects else None
    for rank, value in enumerate(a[f"{prefix}top_values"][u, :n_top].tolist()):
        yield (top_kind, None, rank, value, ids[rank].tobytes(), acts[rank].tobytes(),
               None if effects is None else effects[rank].tobytes())
    values = a[f"{prefix}interval_values"]
    for bucket, count in enumerate(a[f"{prefix}interval_sample_count"][u].tolist()):
        if not 0 <= count <= values.shape[2]:
            raise ValueError(f"unit {u} says {prefix}interval {bucket} has {count} samples")
        ids = a[f"{prefix}interval_token_ids"][u, bucket, :count].astype("<i4")
        acts = a[f"{prefix}interval_acts"][u, bucket, :count].astype("<f4")
        effects = a[f"{prefix}interval_effects"][u, bucket, :count].astype("<f4") if has_effects else None
        for rank, value in enumerate(values[u, bucket, :count].tolist()):
            yield (interval_kind, bucket, rank, value, ids[rank].tobytes(), acts[rank].tobytes(),
                   None if effects is None else effects[rank].tobytes())


def add_sections(units: list[dict], a: dict[str, np.ndarray], strings: list[str], model_name: str,
                 before: int) -> dict[int, list[tuple]]:
    """Store each unit row's UnitData and the page sections rendered from it (app/present/unit_sections.pack) in
    `sections`; return {unit: its example rows}. A page's first view and its twin's then only unpack them."""
    examples = {}
    for row in units:
        rows = examples[row["index"]] = list(unit_windows(a, row["index"]))
        shown = [(kind, bucket, *rest) for kind, bucket, _, *rest in rows if kind in OPEN_KINDS]
        data = unit_data(SimpleNamespace(**row), shown, strings, before, analysis_fields(a, row["index"]))
        row["sections"] = pack(data, model_name)
    return examples
