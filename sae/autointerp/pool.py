"""The held-out pool as plain data (no torch): rows of tokens, the chosen units' activations on them, and the windows
the protocol cuts from them. `heldout.load_pool` fills it from a run folder. Even rows feed the explainer, odd rows
the scorers, so the two never share a window."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sae.autointerp.evidence import unit_rng
from sae.autointerp.windows import Window
from sae.conventions import BOS_POSITION

HALVES = ("explain", "score")


@dataclass
class Pool:
    """Held-out rows [R, T] and, per basis, the chosen units' activations on them."""

    run_dir: Path
    tokens: np.ndarray  # [R, T] int64
    strings: list[str]
    bos_id: int
    acts: dict[tuple[str, int], np.ndarray]  # (basis, unit) -> [R, T] float32
    promoted: dict[tuple[str, int], list[int]] = field(default_factory=dict)  # its most promoted token ids, ranked

    def rows(self, half: str) -> np.ndarray:
        return np.arange(HALVES.index(half), len(self.tokens), 2)

    def window(self, basis: str, unit: int, kind: str, row: int, centre: int, before: int, after: int) -> Window:
        """The window around (row, centre) as the analysis cuts it (clipped at the row's ends)."""
        lo, hi = max(0, centre - before), min(self.tokens.shape[1], centre + after + 1)
        ids = self.tokens[row, lo:hi].tolist()
        acts = self.acts[(basis, unit)][row, lo:hi].tolist()
        scored = tuple(lo + i != BOS_POSITION for i in range(hi - lo))
        return Window(kind, tuple(self.strings[i] if 0 <= i < len(self.strings) else "" for i in ids),
                      tuple(float(a) for a in acts), scored)

    def random_windows(self, basis: str, unit: int, half: str, n: int, before: int, after: int,
                       seed: int) -> list[Window]:
        rng = unit_rng(seed, basis, unit, f"random-{half}")
        rows = self.rows(half)
        picks = zip(rng.choice(rows, size=n), rng.integers(1, self.tokens.shape[1], size=n))
        return [self.window(basis, unit, "random", int(r), int(c), before, after) for r, c in picks]

    def token_windows(self, basis: str, unit: int, half: str, token_ids: set[int], n: int, before: int, after: int,
                      seed: int) -> list[Window]:
        """Windows centred on occurrences of `token_ids` in the half (the unit's max tokens in other contexts)."""
        rows = self.rows(half)
        hits = np.argwhere(np.isin(self.tokens[rows, 1:], list(token_ids)))  # [H, 2]: (row in half, position - 1)
        if not len(hits) or n <= 0:
            return []
        rng = unit_rng(seed, basis, unit, f"top-token-{half}")
        chosen = hits[np.sort(rng.choice(len(hits), size=min(n, len(hits)), replace=False))]
        return [self.window(basis, unit, "top_token", int(rows[r]), int(p) + 1, before, after) for r, p in chosen]
