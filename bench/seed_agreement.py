"""How far an SAE recipe reproduces: two dictionaries of one LM that differ only in their seed, matched unit by unit.

    .venv/bin/python bench/seed_agreement.py --run runs/demo --tokens 32000000 --name topk32-32m \
        [--architecture topk --k 32 | --architecture relu --l1 2.0] [--resample-at none] [--no-append]

Trains `<name>-s0` and `<name>-s1` with `monoscope train-sae` (the same command a user runs; skipped when up to
date), matches them with `monoscope match` over the run's held-out tokens (1,048,576 in its seeded order), and prints
one row of the recipe frontier: the median best correlation over the paper's population (neither dead nor ultralow,
both ways), the share of those units at 0.7 or more, mutual best matches, the medians by density band, and each
SAE's held-out FVU, L0 and dead latents. No cross-LM (universality) figure of the recipe can exceed this one.
Appends the row and the command to BENCHMARKS.md unless --no-append.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def monoscope(*args: str) -> float:
    """Run one monoscope command (its output passes through); return its wall time."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, check=True)
    return time.perf_counter() - started


def row(run: Path, name: str, seconds: list[float]) -> str:
    """Return the frontier's markdown row for the pair `<name>-s0` / `<name>-s1`."""
    from app.read.queries.matches import BANDS  # density bands as /matches draws them; the first is ultralow
    from sae.analysis.matching import match_name
    from sae.analysis.pairs import paper_population

    folder = run / "analysis" / "matches" / match_name(f"{name}-s0", run, f"{name}-s1")
    summary = json.loads((folder / "match.json").read_text())
    m = np.load(folder / "matches.npz")
    n = summary["tokens_correlated"]
    cells = []
    for side in "ab":
        fired, corr = m[f"fired_{side}"], m[f"{side}_corr"]
        density = fired / n
        population = paper_population(fired, density)
        bands = [corr[population & (density >= lo) & (density < hi)] for lo, hi in zip(BANDS[1:], BANDS[2:])]
        cells.append((summary[f"median_population_{side}"], float(np.mean(corr[population] >= 0.7)),
                      summary[f"mutual_share_{side}"], " / ".join(f"{np.median(b):.2f}" if len(b) else "-"
                                                                for b in bands)))
    metrics = [json.loads((run / "saes" / f"{name}-s{s}" / "metrics.json").read_text()) for s in (0, 1)]
    cfg = json.loads((run / "saes" / f"{name}-s0" / "cfg.json").read_text())["monoscope"]["training"]
    recipe = (f"{cfg['architecture']} " + (f"k {cfg['k']}" if cfg["k"] else f"λ {cfg['l1_coefficient']}")
              + f", resample {'at ' + '/'.join(map(str, cfg['resample_at'])) if cfg['resample_at'] else 'never'}")
    return (f"| {recipe} | {cfg['tokens'] / 1e6:g}M | {cells[0][0]:.3f} / {cells[1][0]:.3f} | "
            f"{cells[0][1]:.0%} | {cells[0][2]:.0%} | {cells[0][3]} | "
            + " / ".join(f"{mt['fvu']:.4f}" for mt in metrics) + " | "
            + " / ".join(f"{mt['l0']:.1f}" for mt in metrics) + " | "
            + " / ".join(str(mt["dead"]) for mt in metrics) + " | "
            + " / ".join(f"{s / 60:.0f}" for s in seconds) + " min |")


HEADER = ("| recipe | tokens | median, paper's population (s0 -> s1 / s1 -> s0) | at >= 0.7 | mutual | "
          "by density 1e-5..1e-4 / ..1e-3 / ..1e-2 / above | FVU s0 / s1 | L0 | dead | train, train, match |\n"
          "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--name", required=True, help="SAE name prefix: <name>-s0 and <name>-s1")
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--architecture", default="topk")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--l1", type=float, default=2.0)
    parser.add_argument("--resample-at", default=None, help="as train-sae's (default: train-sae's own)")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    run = args.run if args.run.is_absolute() else ROOT / args.run
    recipe = ["--architecture", args.architecture, "--tokens", str(args.tokens)]
    recipe += ["--k", str(args.k)] if args.architecture != "relu" else ["--l1", str(args.l1)]
    recipe += ["--resample-at", args.resample_at] if args.resample_at else []
    seconds = [monoscope("train-sae", "--run", str(run), "--name", f"{args.name}-s{s}", "--seed", str(s), *recipe)
               for s in (0, 1)]
    seconds.append(monoscope("match", "--run", str(run), "--basis", f"{args.name}-s0", "--other-basis",
                             f"{args.name}-s1"))
    line = row(run, args.name, seconds)
    print(HEADER + "\n" + line)
    if not args.no_append:
        command = "`.venv/bin/python bench/seed_agreement.py " + " ".join(sys.argv[1:]) + "`"
        with open(ROOT / "BENCHMARKS.md", "a") as f:
            f.write(f"\n## Seed agreement: {args.name} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
                    f"Command: {command}\n\n{HEADER}\n{line}\n")


if __name__ == "__main__":
    main()
