"""Ingest speed: seconds to load 512 neurons + N features (16,384 by default) with every window the analysis writes:
20 top + 55 interval windows of the open page (with ablation effects) and 20 + 55 of the review sample, per unit,
and the specificity proxies (14, the built-in set on a Python corpus).

The analysis files are written here in the exact analysis format (sae/analysis/reduce.py and run.py `_write_basis`),
with random values shaped like a real analysis's where the cost depends on them: ~89% of window tokens silent
(activation +0.0), ablation effects only where the unit fires and NaN at a window's last token, ~10% of windows
padded at the start, and a vocabulary holding whitespace, <, >, & and quotes. SQLite always; PostgreSQL too when
Debian's binaries are present (a throwaway cluster). Appends the figures and the command to BENCHMARKS.md unless
--no-append.

    python bench/ingest.py [--features 16384] [--workers N] [--no-postgres] [--no-append]
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

K, I, S, W, H, L = 20, 11, 5, 33, 50, 10  # top k, intervals, samples per interval, window, histogram bins, logit k
BEFORE, B = 24, 4  # context before the max token; proxy-score buckets
PROXIES = ("string_literal", "comment", "docstring", "decorator", "number_literal", "digits", "hex_literal", "base64",
           "non_ascii", "arabic", "hebrew", "cyrillic", "greek", "cjk")
VOCAB = 4096
PIECES = ("\n", "    ", " ", "\t", "\r\n", "<", ">", "&", '"', "'", "</div>", "<script>", "&amp;", " def", " self",
          "é", "\x00", "\n    ", "  ", "()")


def vocabulary() -> list[str]:
    """A byte-level-BPE-like vocabulary: whitespace, markup characters and quotes among plain pieces."""
    return [PIECES[i] if i < len(PIECES) else f"{PIECES[i % len(PIECES)]}t{i}" for i in range(VOCAB)]


def windows(rng: np.random.Generator, shape: tuple, values: np.ndarray) -> dict[str, np.ndarray]:
    """Token ids, activations and effects [*shape, W] of windows whose max token (at BEFORE) has `values`."""
    ids = rng.integers(0, VOCAB, (*shape, W)).astype(np.int32)
    acts = np.where(rng.random((*shape, W)) < 0.11, rng.random((*shape, W), dtype=np.float32), 0).astype(np.float32)
    acts[..., BEFORE] = values
    effects = np.where(acts > 0, rng.standard_normal((*shape, W)).astype(np.float32) * 0.1, 0).astype(np.float32)
    effects[..., -1] = np.nan  # no next token
    padded = (rng.random(shape) < 0.1)[..., None] & (np.arange(W) < rng.integers(1, BEFORE, shape)[..., None])
    ids[padded], acts[padded], effects[padded] = -1, 0, np.nan
    return {"token_ids": ids, "acts": acts, "effects": effects}


def write_basis(folder: Path, name: str, kind: str, n_units: int, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True)
    U = n_units
    f32 = lambda *shape: rng.random(shape, dtype=np.float32)  # noqa: E731
    arrays = dict(
        firing_count=rng.integers(1, 10_000, U), density=rng.random(U) * 0.05,
        max_activation=f32(U) * 10, mean_activation=f32(U),
        act_hist_edges=np.sort(f32(U, H + 1), axis=1), act_hist_counts=rng.integers(0, 100, (U, H)),
        top_count=np.full(U, K, np.int32), top_values=-np.sort(-f32(U, K), axis=1),
        interval_edges=np.sort(f32(U, I + 1), axis=1), interval_counts=rng.integers(0, 100, (U, I)),
        interval_sample_count=np.full((U, I), S, np.int32), interval_values=f32(U, I, S),
        top_sequence=rng.integers(0, 8000, (U, K)), top_position=rng.integers(0, 128, (U, K)).astype(np.int32),
        top_token_entropy=f32(U),
        review_top_count=np.full(U, K, np.int32), review_top_values=-np.sort(-f32(U, K), axis=1),
        review_interval_sample_count=np.full((U, I), S, np.int32), review_interval_values=f32(U, I, S),
        logit_top_ids=rng.integers(0, VOCAB, (U, L)).astype(np.int32), logit_top_values=f32(U, L),
        logit_bottom_ids=rng.integers(0, VOCAB, (U, L)).astype(np.int32), logit_bottom_values=f32(U, L),
        logit_hist_edges=np.sort(f32(U, H + 1), axis=1), logit_hist_counts=rng.integers(0, 100, (U, H)),
    )
    for prefix, shape in (("top", (U, K)), ("interval", (U, I, S)), ("review_top", (U, K)),
                          ("review_interval", (U, I, S))):
        for field, array in windows(rng, shape, arrays[f"{prefix}_values"]).items():
            if field != "effects" or not prefix.startswith("review"):  # the review sample has no effects
                arrays[f"{prefix}_{field}"] = array
    for array in ("proxy_corr", "proxy_corr_pos", "proxy_fire_share", "proxy_act_share", "proxy_recall"):
        arrays[array] = np.where(rng.random((U, len(PROXIES))) < 0.2, np.nan, f32(U, len(PROXIES)))
    arrays["proxy_hist_counts"] = rng.integers(0, 100, (U, len(PROXIES), I, B)).astype(np.int32)
    arrays["proxy_hist_acts"] = f32(U, len(PROXIES), I, B) * 100
    arrays["proxy_names"] = np.array(PROXIES)
    np.savez(folder / "units.npz", **arrays)
    metrics = {"l0": 30.0, "mse": 0.1, "fvu": 0.1, "dead": 0, "ultralow": 0, "dense": 0, "n_units": U}
    meta = {"name": name, "kind": kind, "n_units": U, "d_in": 512, "hook_name": "blocks.0.mlp.hook_post",
            "sae": None, "n_tokens": 1 << 20, "n_ctx": 128, "context_before": BEFORE, "context_after": W - BEFORE - 1,
            "top_k": K, "n_intervals": I, "samples_per_interval": S, "review_top_k": K,
            "review_samples_per_interval": S, "logit_k": L, "ablation_effects": True,
            "proxies": [{"name": p, "kind": "span", "description": p} for p in PROXIES], "metrics": metrics,
            "density_histogram": {"edges": [-7, -1], "counts": [U], "dead": 0}}
    (folder / "basis.json").write_text(json.dumps(meta))
    if kind == "sae":
        np.savez(folder / "links.npz",
                 feature_neuron_ids=rng.integers(0, 512, (U, 5)).astype(np.int32), feature_neuron_weights=f32(U, 5),
                 feature_feature_ids=rng.integers(0, U, (U, 5)).astype(np.int32), feature_feature_cosines=f32(U, 5),
                 neuron_feature_ids=rng.integers(0, U, (512, 5)).astype(np.int32), neuron_feature_weights=f32(512, 5))


def make_run(folder: Path, n_features: int) -> Path:
    rng = np.random.default_rng(0)
    run = folder / "bench"
    (run / "lm").mkdir(parents=True)
    (run / "corpus").mkdir()
    (run / "lm" / "config.json").write_text(json.dumps({"d_mlp": 512}))
    (run / "corpus" / "token_strings.json").write_text(json.dumps(vocabulary()))
    write_basis(run / "analysis" / "neurons", "neurons", "neuron", 512, rng)
    write_basis(run / "analysis" / "sae", "sae", "sae", n_features, rng)
    return run


def time_ingest(run: Path, url: str, workers: int | None) -> float:
    from app.store.db import upgrade
    from app.store.ingest import ingest_run

    upgrade(url)
    started = time.perf_counter()
    ingest_run(run, url=url, log=lambda m: None, workers=workers)
    return time.perf_counter() - started


def bare_driver_seconds(run: Path, url: str) -> float:
    """Baseline: the raw DB-API executemany of the same example windows (open and review), packed and compressed as
    ingest stores them (one row per unit and kind, zstd level 1, compressed before the clock starts), into an
    index-free table (no ORM, no units, no page sections)."""
    import zstandard
    from sqlalchemy import text

    from app.store.db import make_engine

    engine = make_engine(url)
    blob, mark = ("BLOB", "?") if engine.dialect.name == "sqlite" else ("BYTEA", "%s")
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE bench_floor (unit_id INT, kind TEXT, n INT, width INT, buckets {blob}, "
                          f"\"values\" {blob}, token_ids {blob}, activations {blob}, effects {blob}, codec INT)"))
        if engine.dialect.name == "postgresql":  # as migration 0012 sets the example table
            for column in ("buckets", "values", "token_ids", "activations", "effects"):
                conn.execute(text(f'ALTER TABLE bench_floor ALTER COLUMN "{column}" SET STORAGE EXTERNAL'))
    compress = zstandard.ZstdCompressor(level=1).compress
    batches = []
    for basis in ("neurons", "sae"):
        with np.load(run / "analysis" / basis / "units.npz") as z:
            for kind in ("top", "interval", "review_top", "review_interval"):
                values = z[f"{kind}_values"]
                units, per_unit = len(values), values.size // len(values)
                blobs = [[compress(b) for b in z[f"{kind}_{f}"].reshape(units, -1).view(f"V{4 * per_unit * W}")
                          .ravel().tolist()] if f"{kind}_{f}" in z else [None] * units
                         for f in ("token_ids", "acts", "effects")]
                buckets = (np.repeat(np.arange(per_unit // S), S).astype("<i4").tobytes() if "interval" in kind
                           else None)
                batches.append(list(zip(range(units), [kind] * units, [per_unit] * units, [W] * units,
                                        [buckets] * units, values.reshape(units, -1).view(f"V{4 * per_unit}")
                                        .ravel().tolist(), *blobs, [1] * units)))
    started = time.perf_counter()
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for rows in batches:
            cursor.executemany(f"INSERT INTO bench_floor VALUES ({', '.join([mark] * 10)})", rows)
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
    parser.add_argument("--features", type=int, default=16_384)
    parser.add_argument("--workers", type=int, default=None, help="ingest's worker processes (default: its own)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    n_units = 512 + args.features
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        made = time.perf_counter()
        run = make_run(tmp, args.features)
        print(f"analysis files written in {time.perf_counter() - made:.1f} s", file=sys.stderr)
        sqlite = f"sqlite:///{tmp / 'bench.db'}"
        results = {"SQLite": time_ingest(run, sqlite, args.workers)}
        results["SQLite, re-ingest (replaces)"] = time_ingest(run, sqlite, args.workers)
        results["SQLite, baseline: bare executemany of the examples"] = bare_driver_seconds(run, sqlite)
        pg_dir = Path(tempfile.mkdtemp(prefix="monoscope-pg-"))  # postgres must reach it: not inside tmp (0700)
        pg = None if args.no_postgres else postgres_url(pg_dir)
        if pg:
            url, stop = pg
            try:
                results["PostgreSQL 15"] = time_ingest(run, url, args.workers)
                results["PostgreSQL 15, re-ingest (replaces)"] = time_ingest(run, url, args.workers)
                results["PostgreSQL 15, baseline: bare executemany of the examples"] = bare_driver_seconds(run, url)
            finally:
                stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
    lines = [f"| {name} | {seconds:.1f} s |" for name, seconds in results.items()]
    table = "\n".join([f"| database | ingest of {n_units:,} units, {n_units * 150:,} windows |", "| --- | ---: |",
                       *lines])
    print(table)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a") as f:
            f.write(f"\n## Ingest ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n`python bench/ingest.py "
                    f"--features {args.features}` (target < 20 s; 512 neurons + {args.features:,} features, 75 open "
                    f"and 75 review windows each, 14 proxies; 1-min load average {os.getloadavg()[0]:.1f}). "
                    f"Baseline: the bare DB-API executemany of the same example windows, packed and compressed as "
                    f"ingest stores them, into an index-free table, the floor that ingest's units, sections, indexes "
                    f"and transaction add to:\n\n{table}\n")


if __name__ == "__main__":
    main()
