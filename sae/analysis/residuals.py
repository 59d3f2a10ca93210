"""The final residual stream of the analysed tokens, kept on disk by pass 1 for the ablation effects.

The effects of a one-layer LM read out r_t − a·v_u at every windowed token t (sae/analysis/effects.py), so they need
each such token's final residual r_t. Pass 1's forward already runs through the MLP: taking the residual after the
block from the same forward costs the MLP's output product, where a second forward over the windows' sequences cost
2.2-2.5 s of a 262,144-token analysis (BENCHMARKS.md). Each shard appends its batches' rows [tokens, d_model] float32
to its own file in the analysis's spill folder (the same rows a separate forward gives, to the bit: the same forward
on the same sequences); `Residuals` reads a range of sequences back. Kept only up to MAX_BYTES of disk; past that
the effects run their own forward.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

MAX_BYTES = 2 << 30  # 4,194,304 tokens of a d_model-128 LM, 1,048,576 of a d_model-512 one


def keeps(n_tokens: int, d_model: int) -> bool:
    """Whether pass 1 keeps the final residual of this many tokens (MAX_BYTES)."""
    return n_tokens * d_model * 4 <= MAX_BYTES


def shard_file(folder: Path, seq_start: int) -> Path:
    """The file of the shard that starts at sequence seq_start."""
    return Path(folder) / f"residual-{seq_start}"


def append(path: Path, final: torch.Tensor) -> None:
    """Append a batch's final residual [B, T, d_model] float32 to a shard's file."""
    with open(path, "ab") as f:
        f.write(np.ascontiguousarray(final.float().numpy()).data)


class Residuals:
    """The kept final residual of every analysed sequence, by shard: `(s0, s1)` -> [(s1 − s0)·T, d_model] float32."""

    def __init__(self, folder: Path, ranges: list[tuple[int, int]], n_ctx: int, d_model: int) -> None:
        self.folder, self.ranges, self.n_ctx, self.d_model = Path(folder), ranges, n_ctx, d_model

    def __call__(self, s0: int, s1: int) -> torch.Tensor:
        """Return the rows of sequences s0 .. s1, which lie in one shard (shards are cut at batch boundaries)."""
        start, end = next((a, b) for a, b in self.ranges if a <= s0 < b)
        if s1 > end:
            raise ValueError(f"sequences {s0}..{s1} cross the shard {start}..{end}")
        row = self.n_ctx * self.d_model
        rows = np.fromfile(shard_file(self.folder, start), np.float32, (s1 - s0) * row, offset=4 * (s0 - start) * row)
        if len(rows) != (s1 - s0) * row:
            raise ValueError(f"the residual file of the shard {start}..{end} is short: {len(rows)} floats of "
                             f"{(s1 - s0) * row}")
        return torch.from_numpy(rows).reshape(-1, self.d_model)
