"""SAEDashboard's measurement on bench/analysis.py's work, called from the project's venv: `measure_saedashboard`.

    .venv/bin/python bench/saedashboard/compare.py [--run runs/bench-analysis] [--tokens 262144] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV_PYTHON = HERE / ".venv" / "bin" / "python"
BUILT_MARKER = HERE / ".venv" / ".monoscope-built"  # written by setup.sh as its last step


def measure_saedashboard(run: Path, n_tokens: int, sae_name: str, threads: int) -> dict | None:
    """Return SAEDashboard's {"mode", "seconds", "cpu_seconds", "peak_rss_gib", "tokens", "features", ...} on the
    run's held-out tokens, LM and SAE `sae_name`, measured in a process of its own; None, with the reason printed,
    when its venv is not built. A failed run raises, with the end of its stderr."""
    if not (BUILT_MARKER.is_file() and VENV_PYTHON.is_file()):
        print(f"SAEDashboard not measured: its venv is not built (bash {HERE.relative_to(ROOT)}/setup.sh)", flush=True)
        return None
    import numpy as np

    from sae.corpus.build import load_heldout

    with tempfile.TemporaryDirectory(prefix="saedashboard-") as tmp:
        # The very rows bench/analysis.py reads, handed over as a file: the venvs share no packages.
        tokens_file = Path(tmp) / "tokens.npy"
        np.save(tokens_file, load_heldout(run, n_tokens))  # [n_seq, T]
        cmd = [str(VENV_PYTHON), str(HERE / "run.py"), "--run", str(run), "--tokens", str(n_tokens), "--sae", sae_name,
               "--threads", str(threads), "--tokens-npy", str(tokens_file)]
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        env.pop("VIRTUAL_ENV", None)
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"SAEDashboard run failed (exit {done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_parser(description: str) -> argparse.ArgumentParser:
    """Return a parser with the options of this file and run.py: bench/analysis.py's run folder, work and threads."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "bench-analysis")
    parser.add_argument("--tokens", type=int, default=2048 * 128)
    parser.add_argument("--sae", default="bench-random-l0-30")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def main() -> None:
    args = bench_parser(__doc__.splitlines()[0]).parse_args()
    result = measure_saedashboard(args.run.resolve(), args.tokens, args.sae, args.threads)
    if result is None:
        raise SystemExit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
