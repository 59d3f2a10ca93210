"""What the LM-loss metrics computed of the clean LM, kept in the run's .cache/lm-losses/ for the next analysis.

The clean loss, the ablations' losses and KLs, and what a splice's KL needs of the clean distribution
(sae.lm.losses.CleanRows) depend on the LM and the analysed tokens, never on the SAE; the next SAE analysed on the
same run pays one unembedding a position where it paid three, and no mean-ablation pass. Kept per loss batch (by its
first sequence, so that any sharding finds them) and for mean ablation's vector, in
.cache/lm-losses/<key>/<device>-<threads>/: the key hashes what they are a function of (the LM's and the corpus's
fingerprints, the tokens and batches analysed, the conventions), and the device and torch's thread count have a
folder each (float sums differ between them, and an analysis is the same to the bit whatever it finds here). The
driver removes other keys' folders (stale: another LM, corpus or config). Keeping is best effort: a file that cannot
be written or read back is computed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sae.analysis.config import AnalysisConfig
from sae.lm.losses import CleanRows

CACHE = Path(".cache") / "lm-losses"  # under the run, beside the proxy scores
VERSION = 1  # of CleanRows's definition: a change makes the cache miss


@dataclass(frozen=True)
class CleanRowsCache:
    """One key's folder for one device and thread count: <first sequence>.npz per loss batch, mean.npy; each written
    whole or not at all."""

    folder: Path

    def rows(self, first_sequence: int, compute: Callable[[], CleanRows]) -> CleanRows:
        """Return the kept CleanRows of the batch starting at first_sequence, or compute() and keep them."""
        path = self.folder / f"{first_sequence}.npz"
        try:
            with np.load(path) as kept:
                return CleanRows(tuple(str(n) for n in kept["names"]),
                                 *(torch.from_numpy(kept[k]) for k in ("logp", "kl", "u", "kappa")))
        except (OSError, KeyError, ValueError):  # not kept (or removed by another analysis meanwhile)
            pass
        rows = compute()
        self._write(path, lambda f: np.savez(f, names=np.array(rows.names), logp=rows.logp.cpu().numpy(),
                                             kl=rows.kl.cpu().numpy(), u=rows.u.cpu().numpy(),
                                             kappa=rows.kappa.cpu().numpy()))
        return rows

    def mean(self, compute: Callable[[], torch.Tensor | None]) -> torch.Tensor | None:
        """Return mean ablation's vector: the kept one, or compute() and keep it (None: no loss metrics)."""
        path = self.folder / "mean.npy"
        try:
            return torch.from_numpy(np.load(path))
        except (OSError, ValueError):
            pass
        mean = compute()
        if mean is not None:
            self._write(path, lambda f: np.save(f, mean.cpu().numpy()))
        return mean

    def _write(self, path: Path, write: Callable) -> None:
        """Write path whole or not at all (shards and other analyses may write beside this one, and another
        analysis's driver may remove the folder: then nothing is kept)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{path.name}.")
            with os.fdopen(fd, "wb") as f:
                write(f)
            Path(tmp).replace(path)
        except OSError:
            return


def clean_rows_cache(run_dir: Path, cfg: AnalysisConfig, device: torch.device, tidy: bool = False) -> CleanRowsCache:
    """Return this analysis's CleanRowsCache in run_dir/.cache/lm-losses/; tidy (the driver): other keys' folders
    removed."""
    from sae import rundir

    run_dir = Path(run_dir)
    key = hashlib.sha256(json.dumps([
        VERSION, rundir.fingerprint(run_dir / "lm", "lm"), rundir.fingerprint(run_dir / "corpus", "corpus"),
        cfg.n_tokens, cfg.loss_tokens, cfg.batch_sequences, cfg.conventions]).encode()).hexdigest()[:20]
    cache = run_dir / CACHE
    if tidy and cache.is_dir():
        for old in cache.iterdir():
            if old.name != key:
                shutil.rmtree(old, ignore_errors=True)
    return CleanRowsCache(cache / key / f"{torch.device(device).type}-{torch.get_num_threads()}")
