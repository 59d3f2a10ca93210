"""The numba-compiled kernels, loaded lazily (importing numba takes ~0.5 s) for CPU tensors on torch's thread count.
Callers fall back to torch ops where `kernels` returns None: off CPU, or where numba is missing."""

from __future__ import annotations

import importlib
from functools import lru_cache
from types import ModuleType

import torch


def kernels(module: str, device: torch.device | str = "cpu") -> ModuleType | None:
    """Return the kernel module `module` (e.g. "sae.softmax_kernels") for tensors on `device`, with numba running
    on torch's thread count; None off CPU or where numba is missing."""
    if torch.device(device).type != "cpu":
        return None
    threads = torch.get_num_threads()
    compiled = _import(module)
    if compiled is not None:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        if torch.get_num_threads() != threads:  # numba's OpenMP layer, started by the import, resets the count
            torch.set_num_threads(threads)      # that torch reads: a caller's setting would be lost
    return compiled


@lru_cache(maxsize=None)
def _import(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as missing:  # numba itself; an error inside the module is not hidden
        if missing.name != "numba" and not (missing.name or "").startswith("numba."):
            raise
        return None
