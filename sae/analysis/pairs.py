"""What a match between two bases measures, from what they are (torch-free: the pages read it too).

- universality: the same kind of basis in two LMs (trained from different seeds on the same corpus);
- seed control: two dictionaries of one LM whose training differs only in its seed: how far the recipe itself
  reproduces, the ceiling any cross-LM figure is read against (for neurons of one LM the analogue is 1);
- splitting: two dictionaries of one LM of different sizes (the paper's feature families);
- other: anything else (neurons against features of one LM, two recipes of one size).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from sae.conventions import ULTRALOW_DENSITY

Relation = Literal["universality", "seed control", "splitting", "other"]


def training_config(basis_config: dict) -> dict | None:
    """Return an SAE basis's training settings from its basis.json (`sae.cfg.monoscope.training`), or None."""
    sae = basis_config.get("sae") or {}
    return ((sae.get("cfg") or {}).get("monoscope") or {}).get("training")


def pair_relation(same_lm: bool, kind_a: str, kind_b: str, n_a: int, n_b: int, training_a: dict | None,
                  training_b: dict | None) -> Relation:
    """Return what a match of basis A (n_a units) against basis B measures (see the module docstring)."""
    if kind_a != kind_b:
        return "other"
    if not same_lm:
        return "universality"
    if kind_a != "sae":
        return "other"
    if n_a != n_b:
        return "splitting"
    if training_a is None or training_b is None:
        return "other"
    differ = {k for k in training_a.keys() | training_b.keys() if training_a.get(k) != training_b.get(k)}
    return "seed control" if differ == {"seed"} else "other"


def paper_population(firing: np.ndarray, density: np.ndarray) -> np.ndarray:
    """Which units the paper's medians are over: neither dead (never firing) nor ultralow (density below
    ULTRALOW_DENSITY), whose best correlations say more about too few firings than about the match."""
    return (firing > 0) & (density >= ULTRALOW_DENSITY)
