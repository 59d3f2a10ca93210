"""Ingest speed: seconds to load 4,608 units (512 neurons + 4,096 features), 20 top + 55 interval examples each.

The analysis files are written here in the exact analysis format (random values: ingest speed depends on sizes,
not on values). SQLite always; PostgreSQL too when Debian's binaries are present (a throwaway cluster).
Appends the figures and the command to BENCHMARKS.md unless --no-append.

    python bench/ingest.py [--no-append]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

K, I, S, W, H, L = 20, 11, 5, 33, 50, 10
VOCAB = 4096


def write_basis(folder: Path, name: str, kind: str, n_units: int, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True)
    U = n_units
    f32 = lambda *shape: rng.random(shape, dtype=np.float32)  # noqa: E731
    arrays = dict(
        firing_count=rng.integers(1, 10_000, U), density=rng.random(U) * 0.05,
        max_activation=f32(U) * 10, mean_activation=f32(U),
        act_hist_edges=np.sort(f32(U, H + 1), axis=1), act_hist_counts=rng.integers(0, 100, (U, H)),
        top_count=np.full(U, K, np.int32), top_values=f32(U, K),
        top_token_ids=rng.integers(0, VOCAB, (U, K, W)).astype(np.int32), top_acts=f32(U, K, W),
        top_sequence=rng.integers(0, 8000, (U, K)), top_position=rng.integers(0, 128, (U, K)).astype(np.int32),
        interval_edges=np.sort(f32(U, I + 1), axis=1), interval_counts=rng.integers(0, 100, (U, I)),
        interval_sample_count=np.full((U, I), S, np.int32), interval_values=f32(U, I, S),
        interval_token_ids=rng.integers(0, VOCAB, (U, I, S, W)).astype(np.int32), interval_acts=f32(U, I, S, W),
        logit_top_ids=rng.integers(0, VOCAB, (U, L)).astype(np.int32), logit_top_values=f32(U, L),
        logit_bottom_ids=rng.integers(0, VOCAB, (U, L)).astype(np.int32), logit_bottom_values=f32(U, L),
        logit_hist_edges=np.sort(f32(U, H + 1), axis=1), logit_hist_counts=rng.integers(0, 100, (U, H)),
        top_token_entropy=f32(U),
    )
    np.savez(folder / "units.npz", **arrays)
    metrics = {"l0": 30.0, "mse": 0.1, "fvu": 0.1, "dead": 0, "ultralow": 0, "dense": 0, "n_units": U}
    meta = {"name": name, "kind": kind, "n_units": U, "d_in": 512, "hook_name": "blocks.0.mlp.hook_post",
            "sae": None, "n_tokens": 1 << 20, "context_before": 24, "context_after": 8, "top_k": K,
            "n_intervals": I, "samples_per_interval": S, "logit_k": L, "metrics": metrics,
            "density_histogram": {"edges": [-7, -1], "counts": [U], "dead": 0}}
    (folder / "basis.json").write_text(json.dumps(meta))
    if kind == "sae":
        np.savez(folder / "links.npz",
                 feature_neuron_ids=rng.integers(0, 512, (U, 5)).astype(np.int32), feature_neuron_weights=f32(U, 5),
                 feature_feature_ids=rng.integers(0, U, (U, 5)).astype(np.int32), feature_feature_cosines=f32(U, 5),
                 neuron_feature_ids=rng.integers(0, U, (512, 5)).astype(np.int32), neuron_feature_weights=f32(512, 5))


def make_run(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    run = folder / "bench"
    (run / "lm").mkdir(parents=True)
    (run / "corpus").mkdir()
    (run / "lm" / "config.json").write_text(json.dumps({"d_mlp": 512}))
    (run / "corpus" / "token_strings.json").write_text(json.dumps([f"tok{i}" for i in range(VOCAB)]))
    write_basis(run / "analysis" / "neurons", "neurons", "neuron", 512, rng)
    write_basis(run / "analysis" / "sae", "sae", "sae", 4096, rng)
    return run


def time_ingest(run: Path, url: str) -> float:
    from app.store.db import upgrade
    from app.store.ingest import ingest_run

    upgrade(url)
    started = time.perf_counter()
    ingest_run(run, url=url, log=lambda m: None)
    return time.perf_counter() - started


def bare_driver_seconds(run: Path, url: str) -> float:
    """Baseline: the raw DB-API executemany of the same example rows into an index-free table (no ORM, no units)."""
    from sqlalchemy import text

    from app.store.db import make_engine

    engine = make_engine(url)
    blob, mark = ("BLOB", "?") if engine.dialect.name == "sqlite" else ("BYTEA", "%s")
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE bench_floor (unit_id INT, kind TEXT, bucket INT, rank INT, value REAL, "
                          f"token_ids {blob}, activations {blob})"))
    started = time.perf_counter()
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for basis in ("neurons", "sae"):
            with np.load(run / "analysis" / basis / "units.npz") as z:
                a = {k: z[k] for k in ("top_values", "top_token_ids", "top_acts", "interval_values",
                                       "interval_token_ids", "interval_acts")}
            for u in range(len(a["top_values"])):
                rows = [(u, "top", None, r, float(a["top_values"][u, r]), a["top_token_ids"][u, r].tobytes(),
                         a["top_acts"][u, r].tobytes()) for r in range(K)]
                rows += [(u, "interval", i, r, float(a["interval_values"][u, i, r]),
                          a["interval_token_ids"][u, i, r].tobytes(), a["interval_acts"][u, i, r].tobytes())
                         for i in range(I) for r in range(S)]
                cursor.executemany(f"INSERT INTO bench_floor VALUES ({', '.join([mark] * 7)})", rows)
        raw.commit()
    finally:
        raw.close()
    return time.perf_counter() - started


def postgres_url(folder: Path) -> tuple[str, callable] | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        return None
    bin_dir = Path(found[-1]).parent
    as_pg = (lambda c: ["runuser", "-u", "postgres", "--", *c]) if os.geteuid() == 0 else (lambda c: c)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    subprocess.run(as_pg([str(bin_dir / "initdb"), "-D", str(folder / "data"), "-A", "trust", "-U", "postgres"]),
                   check=True, capture_output=True)
    subprocess.run(as_pg([str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-o",
                          f"-k {folder} -c listen_addresses=''", "-l", str(folder / "log"), "-w", "start"]),
                   check=True, capture_output=True)
    stop = lambda: subprocess.run(as_pg([str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "stop"]),  # noqa: E731
                                  capture_output=True)
    return f"postgresql+psycopg://postgres@/postgres?host={folder}", stop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = make_run(tmp)
        results = {"SQLite": time_ingest(run, f"sqlite:///{tmp / 'bench.db'}")}
        results["SQLite, re-ingest (replaces)"] = time_ingest(run, f"sqlite:///{tmp / 'bench.db'}")
        results["SQLite, baseline: bare executemany of the examples"] = bare_driver_seconds(
            run, f"sqlite:///{tmp / 'bench.db'}")
        pg_dir = Path(tempfile.mkdtemp(prefix="monoscope-pg-"))  # postgres must reach it: not inside tmp (0700)
        pg = postgres_url(pg_dir)
        if pg:
            url, stop = pg
            try:
                results["PostgreSQL 15"] = time_ingest(run, url)
                results["PostgreSQL 15, baseline: bare executemany of the examples"] = bare_driver_seconds(run, url)
            finally:
                stop()
                shutil.rmtree(pg_dir, ignore_errors=True)
    lines = [f"| {name} | {seconds:.1f} s |" for name, seconds in results.items()]
    table = "\n".join(["| database | ingest of 4,608 units, 345,600 examples |", "| --- | ---: |", *lines])
    print(table)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a") as f:
            f.write(f"\n## Ingest ({time.strftime('%Y-%m-%d')})\n\n`python bench/ingest.py` (target < 10 s on SQLite; "
                    f"512 neurons + 4,096 features, 20 top + 55 interval examples each; 1-min load average "
                    f"{os.getloadavg()[0]:.1f}). Baseline: the bare DB-API executemany of the same example rows into "
                    f"an index-free table, the floor that ingest's units, links, indexes and transaction add to:"
                    f"\n\n{table}\n")


if __name__ == "__main__":
    main()
