"""Decode a stored example window: one definition of the padding and max-token conventions for every reader.

Windows are stored as raw int32 token ids, float32 activations and float32 ablation effects (app/store/ingest.py);
padding outside the sequence has id -1 and is dropped, and the max token sits at `context_before` in the stored
window (the analysis contract), so it moves left by the padding dropped before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """An example window without its padding; effects None when not analysed, an element None where a token has
    none (no next token, BOS)."""

    token_ids: list[int]
    activations: list[float]
    effects: list[float | None] | None
    max_position: int


def decode_window(token_ids: bytes, activations: bytes, effects: bytes | None, context_before: int) -> Window:
    """Return the window's tokens, activations and effects with the padding dropped, and its max token's position."""
    ids = np.frombuffer(token_ids, dtype=np.int32)
    acts = np.frombuffer(activations, dtype=np.float32)
    keep = ids >= 0
    ids_kept, acts_kept = ids[keep].tolist(), acts[keep].tolist()
    max_position = int(context_before - np.count_nonzero(~keep[:context_before]))
    if not 0 <= max_position < len(ids_kept):
        max_position = int(np.argmax(acts_kept)) if ids_kept else 0
    kept_effects = None
    if effects is not None:
        e = np.frombuffer(effects, dtype=np.float32)[keep]
        kept_effects = [None if v != v else v for v in e.tolist()]  # NaN -> None
    return Window(ids_kept, acts_kept, kept_effects, max_position)
