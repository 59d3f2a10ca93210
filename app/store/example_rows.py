"""A unit's example rows for the `example` table, from a basis's analysis arrays (units.npz): the top contexts and the
interval samples, each with its window rendered once as HTML (app/windows.py), so a unit page's first view only
unpacks it. Used by ingest (app/store/ingest.py), chunk by chunk."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from app.windows import pack_html, render_unit_windows

EXAMPLE_COLUMNS = ("unit_id", "kind", "bucket", "rank", "value", "token_ids", "activations", "effects", "html")


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


def rendered_windows(a: dict[str, np.ndarray], strings: list[str], start: int, stop: int, before: int
                      ) -> dict[int, tuple[float | None, list[tuple]]]:
    """Return {unit: (effect scale, its windows' rows with their rendered HTML last)} for units [start, stop): the
    unit page's windows, rendered once here instead of on every first view (they change only on re-ingest)."""
    out = {}
    for u in range(start, stop):
        rows = list(unit_windows(a, u))
        effect_scale, html = render_unit_windows([r[3:] for r in rows], strings, before, float(a["max_activation"][u]))
        out[u] = effect_scale, [(*r, pack_html(h)) for r, h in zip(rows, html)]
    return out
