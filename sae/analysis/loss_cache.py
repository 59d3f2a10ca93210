"""What the LM-loss metrics computed of the clean LM, kept in the run's .cache/lm-losses/ for the next analysis.

The clean loss, the ablations' losses and KLs, and what a splice's KL needs of the clean distribution
(sae.lm.head_losses.CleanRows) depend on the LM and the analysed tokens, never on the SAE; the next SAE analysed on the
same run pays one unembedding a position where it paid three, and no mean-ablation pass. Kept per loss batch (named
by its first sequence, its length and its mean-ablation vector, so that any sharding finds them) and for mean
ablation's vector, in .cache/lm-losses/<key>/<device>-<threads>-<build>/: the key hashes what they are a function of
(the LM's and the corpus's fingerprints, the tokens and batches analysed, the conventions); the device, torch's thread
count and build have a folder each (float sums differ between them, and an analysis is the same to the bit whatever
it finds here). The driver of an analysis with loss metrics removes other keys' folders (stale: another LM, corpus or
config). Keeping is best effort: a file that cannot be written or read back is computed again. Size: 4·(d_model + 5)
bytes a loss position, 135 MB for 262,144 positions at d_model 128.
"""

from __future__ import annotations

import hashlib
import importlib.util
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
from sae.lm.head_losses import CleanRows

CACHE = Path(".cache") / "lm-losses"  # under the run, beside the proxy scores
VERSION = 3  # of CleanRows's definition (2: kappa from the u kept; 3: lse summed in float64): a change makes
# the cache miss


@dataclass(frozen=True)
class CleanRowsCache:
    """One key's folder for one device, thread count and build: a .npz per loss batch, mean.npy; each written whole
    (flushed to disk, then renamed) or not at all."""

    folder: Path

    def rows(self, first_sequence: int, n_rows: int, mean: torch.Tensor | None,
             compute: Callable[[], CleanRows]) -> CleanRows:
        """Return the kept CleanRows of the batch from first_sequence with n_rows predicted positions and this
        mean-ablation vector, or compute() and keep them."""
        digest = "none" if mean is None else hashlib.sha256(mean.cpu().numpy().tobytes()).hexdigest()[:12]
        path = self.folder / f"{first_sequence}-{n_rows}-{digest}.npz"
        try:
            with np.load(path) as kept:
                rows = CleanRows(tuple(str(n) for n in kept["names"]),
                                 *(torch.from_numpy(kept[k]) for k in ("logp", "kl", "u", "kappa")))
            if rows.logp.shape[1] == len(rows.u) == len(rows.kappa) == n_rows:
                return rows
        except Exception:  # not kept, removed meanwhile, or unreadable: computed again
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
        except Exception:  # not kept, removed meanwhile, or unreadable
            pass
        mean = compute()
        if mean is not None:
            self._write(path, lambda f: np.save(f, mean.cpu().numpy()))
        return mean

    def _write(self, path: Path, write: Callable) -> None:
        """Write path whole or not at all (shards and other analyses may write beside this one, and another
        analysis's driver may remove the folder: then nothing is kept)."""
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{path.name}.")
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            Path(tmp).replace(path)
        except OSError:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)


def clean_rows_cache(run_dir: Path, cfg: AnalysisConfig, device: torch.device,
                     tidy: bool = False) -> CleanRowsCache | None:
    """Return this analysis's CleanRowsCache in run_dir/.cache/lm-losses/; tidy (the driver): other keys' folders
    removed. None for an analysis without loss metrics (it keeps and removes nothing)."""
    from sae import rundir

    if cfg.loss_tokens == 0:
        return None
    run_dir = Path(run_dir)
    key = hashlib.sha256(json.dumps([
        VERSION, rundir.fingerprint(run_dir / "lm", "lm"), rundir.fingerprint(run_dir / "corpus", "corpus"),
        cfg.n_tokens, cfg.loss_tokens, cfg.batch_sequences, cfg.conventions]).encode()).hexdigest()[:20]
    cache = run_dir / CACHE
    if tidy and cache.is_dir():
        for old in cache.iterdir():
            if old.name != key:
                shutil.rmtree(old, ignore_errors=True)
    return CleanRowsCache(cache / key / f"{torch.device(device).type}-{torch.get_num_threads()}-{_build()}")


def _build() -> str:
    """What else changes the bits: torch's version, the CPU's vector instructions it uses, numba or its fallback."""
    parts = [torch.__version__, torch.backends.cpu.get_cpu_capability(), importlib.util.find_spec("numba") is not None]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:8]
