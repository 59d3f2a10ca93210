"""Compare two analyses of the same run array by array: which arrays of each basis's units.npz differ and by how
much, and which metrics of basis.json. For checking that a change to the analysis keeps its outputs.

    .venv/bin/python bench/analysis_outputs.py RUN_A/analysis RUN_B/analysis
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args()
    for basis in sorted(p.name for p in args.a.iterdir() if (p / "units.npz").is_file()):
        za, zb = np.load(args.a / basis / "units.npz"), np.load(args.b / basis / "units.npz")
        lines = []
        for key in sorted(set(za.files) | set(zb.files)):
            if key not in za.files or key not in zb.files:
                lines.append(f"{key}: only in one")
                continue
            x, y = za[key], zb[key]
            floating = x.dtype.kind == "f"
            if x.shape != y.shape:
                lines.append(f"{key}: shapes {x.shape} and {y.shape}")
            elif not np.array_equal(x, y, equal_nan=floating):
                if floating:
                    both = np.isfinite(x) & np.isfinite(y)
                    lines.append(f"{key}: max abs difference {np.max(np.abs(x[both] - y[both])):.2e}, NaN where the "
                                 f"other is NaN: {np.array_equal(np.isnan(x), np.isnan(y))}")
                else:
                    lines.append(f"{key}: {int(np.sum(x != y))} of {x.size} entries differ")
        print(f"{basis}: {len(za.files)} arrays, " + ("all identical" if not lines else "differing:"))
        for line in lines:
            print("  " + line)
        ma, mb = (json.loads((p / basis / "basis.json").read_text())["metrics"] for p in (args.a, args.b))
        for key in sorted(set(ma) | set(mb)):
            if ma.get(key) != mb.get(key):
                print(f"  metric {key}: {ma.get(key)!r} -> {mb.get(key)!r}")


if __name__ == "__main__":
    main()
