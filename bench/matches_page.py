"""/matches's read time: the page's view model (app.read.queries.matches) computed `--requests` times in one process,
each in a fresh session, as the server would answer successive requests.

    .venv/bin/python bench/matches_page.py --db sqlite:///monoscope.db [--requests 3]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="the database URL")
    parser.add_argument("--requests", type=int, default=3)
    args = parser.parse_args()
    from app.store.db import session_factory

    queries = importlib.import_module("app.read.queries.matches")  # the package re-exports the function's name
    factory = session_factory(args.db)
    for i in range(args.requests):
        with factory() as session:
            t0 = time.perf_counter()
            page = queries.matches(session=session)
            seconds = time.perf_counter() - t0
        splits = [p.split_counts for p in page.pairs if p.split_counts]
        print(f"request {i + 1}: {seconds:.2f} s, {len(page.pairs)} pairs, split counts {splits}")


if __name__ == "__main__":
    main()
