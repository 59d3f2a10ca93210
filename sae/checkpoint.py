"""Checkpoints of the long training stages (LM, SAE): saved atomically, resumed only by the run they belong to.

A checkpoint carries a key (the stage's config and inputs, as JSON); a run with another key starts afresh
instead of resuming someone else's state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch


def save_checkpoint(path: Path, key: dict, state: dict) -> None:
    """Write state (tensors, numbers, lists, dicts) with its key; a kill mid-save leaves the previous one whole."""
    tmp = path.with_suffix(".tmp")
    torch.save({"key": _canonical(key), "state": state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, key: dict, device: torch.device) -> dict | None:
    """Return the state saved at path under this key, or None (no checkpoint, or one of another run)."""
    if not path.is_file():
        return None
    saved = torch.load(path, map_location=device, weights_only=True)
    return saved["state"] if saved.get("key") == _canonical(key) else None


def _canonical(key: dict) -> dict:
    return json.loads(json.dumps(key))
