"""The C allocator told to keep freed memory: for processes that allocate and free the same large buffers over and
over (training steps, ingest chunks).

glibc maps each allocation over its mmap threshold afresh and gives the top of its heap back when more than the trim
threshold is free, so a loop whose temporaries are a few MB touches fresh pages every iteration, and every fresh page
costs a fault. Its defaults adapt the thresholds to the sizes freed, up to 32 MB, but still trim; fixing them keeps
the memory for the next iteration. Measured here: TopK SAE training (512 -> 4,096, batch 4,096, bf16, 2 threads)
27.6k -> 30.8k tokens/s (BENCHMARKS.md, "TopK training"); ingest workers 3.0 -> 0.8 s of system time for the chunks
of 4,096 features; the analysis unchanged in wall time (its system time 2.8-3.7 -> 1.6 s).
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>


@lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """Return the C library when it is glibc's (its allocator's calls below), else None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Fix glibc's mmap threshold at its largest (32 MB: smaller allocations come from the heap) and keep up to 1 GiB
    of freed heap; return whether it applied (False: not glibc). Process-wide and for the rest of the process."""
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    return True


def give_back_freed_memory() -> None:
    """Return the heap's free pages to the system (glibc's malloc_trim; elsewhere nothing), between the stages of a
    long computation and every few batches of its loops: temporaries of a few MB leave ~0.2 GiB free but resident in
    the heap's holes, under the next stage's large arrays, which are mapped afresh. Not after every batch: the pages
    freed are faulted in again when the heap grows back (the analysis: 3 s more a run when trimmed every batch)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
