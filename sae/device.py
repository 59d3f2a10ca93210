"""Device selection shared by every stage."""

import torch

from sae.errors import MonoscopeError


def resolve_device(device: str = "auto") -> torch.device:
    """Return the torch device for "auto" (CUDA when present, else CPU), "cpu" or "cuda[:n]"."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MonoscopeError(f"device {device!r} asked for, but CUDA is not available on this machine")
    try:
        return torch.device(device)
    except RuntimeError:
        raise MonoscopeError(f"unknown device {device!r}: use auto, cpu or cuda") from None
