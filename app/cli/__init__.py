"""The `monoscope` command: one entry point for every pipeline stage, the server and the demo.

Commands stay thin: they turn options into a stage config and call `sae/` or `app/`. Bad input raises
MonoscopeError, which `main` prints as one line on stderr with exit code 2 (never a stack trace).
Heavy imports (torch, transformer_lens) happen inside commands so `monoscope serve` starts fast.
"""

from __future__ import annotations

import os
import sys

# OpenMP's busy-wait made 2-thread torch 3-6x slower on shared 2-core machines (BENCHMARKS.md); it must be set
# before torch loads. A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from app.cli import autointerp, database, demo, export_basis, people, reviews, serve, stages, steer, sweep, toy  # noqa: E402,F401  (each module registers its commands on `cli`)
from app.cli.common import cli  # noqa: E402
from sae.errors import MonoscopeError  # noqa: E402


def main() -> None:
    """Console entry point: click reports usage errors (exit 2); user errors become one line and exit 2."""
    try:
        cli()  # standalone mode: click prints usage errors itself and lets our exceptions through
    except MonoscopeError as e:
        print(f"monoscope: error: {e}", file=sys.stderr)
        sys.exit(2)


