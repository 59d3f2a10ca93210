"""units.npz written one array at a time: np.savez's format (an uncompressed zip of .npy files), from an iterable, so
that an array made on the way (the windows' token ids, sae.analysis.reduce.BasisResult.token_ids) is freed once it is
written instead of living beside all the others."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np


def save_npz(path: Path, items: Iterable[tuple[str, np.ndarray]]) -> None:
    """Write (name, array) pairs to path as np.savez does (np.load reads it); each array is taken when its turn comes."""
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in items:
            with archive.open(f"{name}.npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
