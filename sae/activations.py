"""Sources of SAE training activations: the run's LM (streamed, shuffled) or any [N, d_in] array on disk.

Both give the same three things the training loop needs, deterministically from (seed, position) so that a run
resumed from a checkpoint sees exactly the batches it would have seen:
    stream(batch_size, start_token) -> iterator of [batch_size, d_in] float32 batches, starting `start_token` in
    sample(n, seed)                 -> [n, d_in] random training activations (b_dec init, scaling, resampling)
    eval_activations(n)             -> [<=n, d_in] held-out activations (metrics), never trained on

LMActivations harvests blocks.0.mlp.hook_post with the forward pass stopped at the hook (sae.lm.mlp_activations)
into a buffer of `buffer_tokens` from rows drawn in a seeded permutation of the training split, shuffled within the
buffer: each batch mixes ~buffer_tokens / n_ctx sequences. Position 0 (BOS) is left out: it is the same vector in
every row, an outlier in norm that would cost a feature and skew the activation scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from sae.errors import MonoscopeError, load_npy

FLOAT_DTYPES = (np.float16, np.float32, np.float64)
LM_SOURCE_NAME = "lm:blocks.0.mlp.hook_post"  # what the stage config records; the LM fingerprint pins which


def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 7]).permutation(n)


class ArrayActivations:
    """Activations from an [N, d_in] float array (a .npy file is memory-mapped); the last rows are held out."""

    def __init__(self, data: np.ndarray | str | Path, *, seed: int = 0, heldout_fraction: float = 0.05,
                 max_heldout: int = 65_536, name: str | None = None) -> None:
        if isinstance(data, (str, Path)):
            data = load_activations_file(Path(data))
        check_activations(data, str(name or "activations"))
        self.name = name or "array"
        n_heldout = min(max_heldout, int(len(data) * heldout_fraction)) if len(data) >= 40 else 0
        self.train = data[: len(data) - n_heldout]  # [N_train, d_in]
        self.heldout = data[len(data) - n_heldout:] if n_heldout else data[-min(len(data), 1024):]
        self.d_in = int(data.shape[1])
        self.seed = seed

    def _rows(self, index: np.ndarray) -> torch.Tensor:
        if not isinstance(self.train, np.memmap) and self.train.dtype == np.float32:
            return torch.from_numpy(np.take(self.train, index, axis=0))  # in memory: one gather (3.5 -> 2.7 ms)
        order = np.argsort(index)  # sorted reads are sequential on a memory map
        out = np.empty((len(index), self.d_in), dtype=np.float32)
        out[order] = self.train[index[order]]
        return torch.from_numpy(out)

    def stream(self, batch_size: int, start_token: int = 0) -> Iterator[torch.Tensor]:
        """Yield [batch_size, d_in] batches from a seeded permutation per pass, from token `start_token` on."""
        n = len(self.train)
        position = start_token
        order_epoch, order = -1, np.empty(0, dtype=np.int64)
        while True:
            epoch, offset = divmod(position, n)
            if epoch != order_epoch:  # once a pass: a permutation of N costs ~5 ms per 300k rows
                order_epoch, order = epoch, _epoch_order(n, self.seed, epoch)
            index = order[offset: offset + batch_size]
            if len(index) < batch_size:  # a batch straddling two passes takes the rest from the next one
                index = np.concatenate([index, _epoch_order(n, self.seed, epoch + 1)[: batch_size - len(index)]])
            position += batch_size
            yield self._rows(index)

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """Return [min(n, N_train), d_in] training rows drawn without replacement."""
        rng = np.random.default_rng([self.seed, seed, 11])
        return self._rows(rng.choice(len(self.train), size=min(n, len(self.train)), replace=False))

    def eval_activations(self, n: int) -> torch.Tensor:
        """Return up to n held-out rows [n', d_in] float32."""
        return torch.from_numpy(np.array(self.heldout[:n], dtype=np.float32))


def load_activations_file(path: Path) -> np.ndarray:
    """Return a memory-mapped [N, d_in] float array from a .npy file, or refuse it in one line."""
    data = load_npy(path, "--activations")
    if not isinstance(data, np.ndarray):
        raise MonoscopeError(f"--activations {path}: expected one array, got {type(data).__name__}")
    return data


def check_activations(data: np.ndarray, where: str, chunk: int = 65_536) -> None:
    """Refuse (one line) anything but a finite [N, d_in] float16/32/64 array with N >= 2 and d_in >= 1."""
    if data.ndim != 2 or data.shape[0] < 2 or data.shape[1] < 1:
        raise MonoscopeError(f"{where}: expected a [N, d_in] array of activations, got shape {list(data.shape)}")
    if data.dtype.type not in FLOAT_DTYPES:
        raise MonoscopeError(f"{where}: expected float16/float32/float64 activations, got dtype {data.dtype}")
    for start in range(0, len(data), chunk):  # chunked: a memory-mapped file may not fit in memory
        block = np.asarray(data[start: start + chunk])
        if not np.isfinite(block).all():
            bad = start + int(np.argwhere(~np.isfinite(block))[0][0])
            raise MonoscopeError(f"{where}: row {bad} holds NaN or inf; clean the activations first")


class LMActivations:
    """blocks.0.mlp.hook_post activations of a run's LM over its token rows, streamed through a shuffled buffer."""

    def __init__(self, run_dir: Path, *, seed: int = 0, buffer_tokens: int = 131_072, lm_batch_rows: int = 64,
                 device: str | torch.device = "cpu") -> None:
        from sae.corpus.build import load_heldout, load_tokens
        from sae.lm.model import load_lm

        self.run_dir = Path(run_dir)
        self.model = load_lm(self.run_dir, device)
        self.train = load_tokens(self.run_dir, "train")  # [n_rows, n_ctx] memory-mapped
        self.heldout = load_heldout(self.run_dir)  # [n_rows, n_ctx] memory-mapped
        self.d_in = int(self.model.cfg.d_mlp)
        self.n_ctx = int(self.train.shape[1])
        if self.n_ctx < 2:
            raise MonoscopeError(f"{run_dir}: token rows of length {self.n_ctx} leave nothing after BOS")
        self.per_row = self.n_ctx - 1
        self.rows_per_buffer = max(1, buffer_tokens // self.per_row)
        self.buffer_size = self.rows_per_buffer * self.per_row
        self.seed, self.lm_batch_rows = seed, lm_batch_rows
        self.name = LM_SOURCE_NAME
        self._cached: tuple[int, torch.Tensor] | None = None

    def activations(self, rows: np.ndarray, split: str = "train") -> torch.Tensor:
        """Return the activations [len(rows) * (n_ctx - 1), d_in] of token rows (position 0, BOS, dropped)."""
        from sae.lm.model import mlp_activations

        tokens = self.train if split == "train" else self.heldout
        out = []
        for start in range(0, len(rows), self.lm_batch_rows):
            chunk = np.sort(rows[start: start + self.lm_batch_rows])
            batch = torch.from_numpy(np.asarray(tokens[chunk], dtype=np.int64))  # [b, n_ctx]
            acts = mlp_activations(self.model, batch)[:, 1:]  # [b, n_ctx - 1, d_in]
            out.append(acts.reshape(-1, self.d_in).cpu())
        return torch.cat(out) if out else torch.empty(0, self.d_in)

    def _buffer(self, index: int) -> torch.Tensor:
        """Return shuffled buffer number `index` [buffer_size, d_in]; rows follow a seeded permutation per pass."""
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        n = len(self.train)
        positions = index * self.rows_per_buffer + np.arange(self.rows_per_buffer)  # in the endless row stream
        rows = np.empty(len(positions), dtype=np.int64)
        for epoch in np.unique(positions // n):
            here = positions // n == epoch
            rows[here] = _epoch_order(n, self.seed, int(epoch))[positions[here] % n]
        acts = self.activations(rows)  # [buffer_size, d_in]
        shuffle = torch.from_numpy(np.random.default_rng([self.seed, index, 3]).permutation(len(acts)))
        buffer = acts[shuffle]
        self._cached = (index, buffer)
        return buffer

    def stream(self, batch_size: int, start_token: int = 0) -> Iterator[torch.Tensor]:
        """Yield [batch_size, d_in] batches from token `start_token` of the shuffled stream on."""
        position = start_token
        while True:
            parts, need = [], batch_size
            while need:
                index, offset = divmod(position, self.buffer_size)
                take = self._buffer(index)[offset: offset + need]
                parts.append(take)
                need -= len(take)
                position += len(take)
            yield parts[0] if len(parts) == 1 else torch.cat(parts)

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """Return [n, d_in] activations from random training rows (a forward pass over ceil(n / (n_ctx-1)) rows)."""
        rng = np.random.default_rng([self.seed, seed, 11])
        n_rows = min(len(self.train), -(-n // self.per_row))
        acts = self.activations(rng.choice(len(self.train), size=n_rows, replace=False))
        return acts[torch.from_numpy(rng.permutation(len(acts))[:n])]

    def eval_activations(self, n: int) -> torch.Tensor:
        """Return up to n held-out activations [n', d_in] from the first held-out rows."""
        rows = np.arange(min(len(self.heldout), -(-n // self.per_row)))
        return self.activations(rows, split="heldout")[:n]

    def heldout_tokens(self, n: int) -> torch.Tensor:
        """Return the first held-out token rows [ceil(n / n_ctx), n_ctx] int64 (for loss recovered)."""
        from sae.corpus.build import first_rows

        return torch.from_numpy(np.asarray(first_rows(self.heldout, max(1, n)), dtype=np.int64))
