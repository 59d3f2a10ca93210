"""Read an analysis .npz without loading it: members stored uncompressed (np.savez) are memory-mapped.

A basis's example windows grow with its size (131,072 features x 55 interval samples x 33 tokens x 4 bytes is
~1.9 GB per array); ingest walks the units in chunks, so with memory maps only the pages of the current chunk are
resident. Compressed members (np.savez_compressed) cannot be mapped and are read whole.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from sae.errors import MonoscopeError

_LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Return the arrays of an .npz file by name, read-only, mapped where stored uncompressed."""
    arrays = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            mapped = _mapped(path, raw, info) if info.compress_type == zipfile.ZIP_STORED else None
            if mapped is None:
                with archive.open(info) as member:
                    mapped = np.lib.format.read_array(member, allow_pickle=False)
            arrays[name] = mapped
    return arrays


def _mapped(path: Path, raw, info: zipfile.ZipInfo) -> np.ndarray | None:
    """Return a plain ndarray view of a memory map over one stored member, or None when it cannot be mapped."""
    raw.seek(info.header_offset)
    local = raw.read(_LOCAL_HEADER)
    if local[:4] != b"PK\x03\x04":
        raise ValueError(f"{info.filename}: not a zip member")
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    raw.seek(info.header_offset + _LOCAL_HEADER + name_length + extra_length)
    version = np.lib.format.read_magic(raw)
    if version not in _HEADER_READERS:
        return None
    shape, fortran_order, dtype = _HEADER_READERS[version](raw)
    if dtype.hasobject or 0 in shape:
        return None
    data = np.memmap(path, dtype=dtype, mode="r", offset=raw.tell(), shape=shape, order="F" if fortran_order else "C")
    return np.asarray(data)  # a plain ndarray view: indexing a np.memmap subclass costs more per call


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Return load_npz(path), or raise a one-line MonoscopeError naming the command that makes the file again."""
    try:
        return load_npz(path)
    except FileNotFoundError:
        raise MonoscopeError(f"missing {path}: run `monoscope analyze` first") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # truncated or overwritten file
        raise MonoscopeError(f"{path} is unreadable ({e}): run `monoscope analyze --force`") from None
