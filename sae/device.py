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
    """Return whether bf16 matmuls beat fp32 on `device`: CUDA with bf16 support, or a CPU with bf16 instructions
    (AVX512_BF16 or AMX: about 406 against 188 GFLOP/s on one such machine); elsewhere bf16 is emulated and slower,
    AVX-512 alone included (54 against 222 GFLOP/s, [4,096, 512] x [512, 4,096] on 2 cores, BENCHMARKS.md)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    flags = cpu_flags()
    if flags is None:  # not Linux: torch's own capability is all there is to go by
        return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX")
    return bool(flags & BF16_FLAGS)


BF16_FLAGS = {"avx512_bf16", "amx_bf16"}  # x86 CPU flags of bf16 matmul instructions


def cpu_flags(cpuinfo: str | None = None) -> set[str] | None:
    """Return the CPU's flags from /proc/cpuinfo (or the text given), None where there is none."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None
