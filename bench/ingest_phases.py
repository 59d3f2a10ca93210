"""Where an ingest's time goes: the writer's phases (each table's inserts, its wait for the workers' next chunk, the
links, the commit) in a real `ingest_run`, and one worker's CPU per unit split by stage (`make_chunk` in this
process). Same analysis files as bench/ingest.py (random, shaped like a real analysis's).

    python bench/ingest_phases.py [--features 16384] [--workers 2] [--postgres]

Timers wrap the functions by name (module attributes), so the code measured is the code that ingests; nothing is
appended to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SECONDS: dict[str, float] = defaultdict(float)


def timed(module, name: str, key: str | None = None) -> None:
    """Replace module.name by the same function adding its wall time to SECONDS[key or name]."""
    f = getattr(module, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return f(*args, **kwargs)
        finally:
            SECONDS[key or name] += time.perf_counter() - started

    setattr(module, name, wrapper)


def writer_phases(run: Path, url: str, workers: int) -> float:
    import app.store.chunks as chunks
    import app.store.ingest as ingest
    from app.store.db import upgrade

    def insert_rows(connection, table, columns, rows):
        rows = list(rows)  # made lazily by some callers: made here, outside the clock
        started = time.perf_counter()
        try:
            return original(connection, table, columns, rows)
        finally:
            SECONDS[f"insert {table.name}"] += time.perf_counter() - started

    original, ingest.insert_rows = ingest.insert_rows, insert_rows
    chunk_source = chunks.Chunks.of

    def of(self, *args, **kwargs):
        it = chunk_source(self, *args, **kwargs)
        while True:
            started = time.perf_counter()
            try:
                chunk = next(it)
            except StopIteration:
                return
            finally:
                SECONDS["wait for the next chunk"] += time.perf_counter() - started
            yield chunk

    chunks.Chunks.of = of
    timed(ingest, "_ingest_one", "each basis's transaction, all of it (what follows, and its commit)")
    timed(ingest, "_ingest_links", "links")
    timed(ingest, "checkpoint")
    upgrade(url)
    started = time.perf_counter()
    ingest.ingest_run(run, url=url, log=lambda m: None, workers=workers)
    return time.perf_counter() - started


def worker_split(run: Path, units: int = 1024) -> dict[str, float]:
    """ms of CPU a unit per stage of one worker's `make_chunk`, over `units` units after one warm chunk."""
    import app.read.unit_data as unit_data
    import app.store.chunks as chunks
    import app.store.unit_pages as unit_pages

    for module, name in ((chunks, "unit_rows"), (chunks, "chunk_windows"), (chunks, "packed_rows"),
                         (unit_data, "analysis_fields_of"), (unit_pages, "unit_data"),
                         (unit_pages, "render_sections"), (unit_pages, "pack_parts"), (chunks, "proxy_columns")):
        timed(module, name)
    chunks._set_strings(json.loads((run / "corpus" / "token_strings.json").read_text()))
    npz = run / "analysis" / "sae" / "units.npz"
    chunks.make_chunk(npz, 1, "bench", 24, 0, chunks.CHUNK)
    SECONDS.clear()
    started = time.perf_counter()
    for start in range(chunks.CHUNK, chunks.CHUNK + units, chunks.CHUNK):
        chunks.make_chunk(npz, 1, "bench", 24, start, start + chunks.CHUNK)
    total = time.perf_counter() - started
    split = {name: 1e3 * s / units for name, s in sorted(SECONDS.items(), key=lambda kv: -kv[1])}
    return {"make_chunk (all)": 1e3 * total / units, **split}


def main() -> None:
    import ingest as bench_ingest

    parser = argparse.ArgumentParser()
    parser.add_argument("--features", type=int, default=16_384)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL cluster instead of SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = bench_ingest.make_run(Path(tmp), args.features)
        if args.postgres:
            url, stop = bench_ingest.postgres_url(Path(tempfile.mkdtemp(prefix="monoscope-pg-")))
        else:
            url, stop = f"sqlite:///{Path(tmp) / 'phases.db'}", lambda: None
        try:
            total = writer_phases(run, url, args.workers)
        finally:
            stop()
        phases = dict(SECONDS)
        SECONDS.clear()
        split = worker_split(run)
    print(f"ingest of 512 neurons + {args.features:,} features, {args.workers} workers: {total:.1f} s")
    for name, seconds in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"  writer: {name}: {seconds:.1f} s")
    for name, ms in split.items():
        print(f"  worker CPU a unit: {name}: {ms:.3f} ms")


if __name__ == "__main__":
    main()
