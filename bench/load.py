"""Load: mixed reads and label writes against one `monoscope serve` on PostgreSQL; no error, no lost write.

    .venv/bin/python bench/load.py --run runs/demo [--seconds 120] [--concurrency 32]
    .venv/bin/python bench/load.py --db postgresql://USER@HOST/DB [--seconds 120]    (a database already ingested)

Without --db it starts a throwaway PostgreSQL cluster (initdb + pg_ctl, unix socket only, bench/ingest.py's, as
tests/app/conftest.py does) and ingests --run into it with `monoscope ingest`. Then `monoscope user add`
makes a real token, `monoscope serve` (one worker process) serves the database, and `concurrency` threads with
keep-alive connections loop for `seconds` over a fixed mix on the largest basis: unit pages (distinct units first, so
first renders, then cached), JSON twins, unit-list searches, and label writes (POST /api/v1/.../labels with the bearer
token). Any answer that is not 2xx, and any connection error, is an error. At the end every acknowledged write (201
and its id) must be in the label table with its unit and text: none lost. Prints p50/p99 per kind; exit 1 on an error
or a lost write.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode

from ingest import postgres_url  # bench/ingest.py: the same throwaway cluster
from web import free_port, get, wait_ready  # bench/web.py: the same server start and GET

MIX = (("page", 0.40), ("twin", 0.25), ("search", 0.20), ("label", 0.15))
EXE = Path(sys.executable).with_name("monoscope")


def start_cluster() -> tuple[Path, str, Callable]:
    """Start a throwaway PostgreSQL cluster (bench/ingest.py's) in a new folder; return (folder, URL, stop)."""
    folder = Path(tempfile.mkdtemp(prefix="monoscope-load-"))
    started = postgres_url(folder)
    if started is None:
        sys.exit("PostgreSQL binaries not found (apt-get install postgresql), or pass --db")
    return folder, *started


def targets(port: int) -> tuple[str, list[int], list[str]]:
    """Return (largest basis's name, its live unit indexes, search words from their top tokens)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    bases = json.loads(get(conn, "/api/v1/overview")[1])["bases"]
    if not bases:
        sys.exit("no ingested basis: pass --run RUN (analysed) or an ingested --db")
    basis = max(bases, key=lambda b: b["n_units"])
    units, words, page = [], {}, 1
    while True:
        listing = json.loads(get(conn, f"/api/v1/bases/{basis['name']}?dead=exclude&per_page=500&page={page}")[1])
        units += [u["index"] for u in listing["units"]]
        words.update((t.strip().lower(), None) for u in listing["units"] for t in u["top_tokens"]
                     if len(t.strip()) >= 2 and t.strip().isalnum())
        if page >= listing["pages"]:
            return basis["name"], units, list(words) or ["a"]
        page += 1


def run_load(port: int, token: str, basis: str, units: list[int], words: list[str], seconds: float,
             concurrency: int) -> tuple[dict[str, list[float]], list[str], list[tuple]]:
    """Run the mix; return (latencies per kind, errors, acknowledged writes as (id, basis, index, text))."""
    latencies: dict[str, list[float]] = {kind: [] for kind, _ in MIX}
    errors: list[str] = []
    acked: list[tuple] = []
    lock = threading.Lock()
    order = random.Random(0).sample(units, len(units))  # pages: every unit once before any repeats
    next_unit = iter(range(10**9))
    stop = time.perf_counter() + seconds

    def worker(k: int) -> None:
        rng = random.Random(k)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: dict[str, list[float]] = {kind: [] for kind, _ in MIX}
        for n in range(10**9):
            if time.perf_counter() >= stop:
                break
            kind = rng.choices([m for m, _ in MIX], [w for _, w in MIX])[0]
            index, headers, body, method = rng.choice(units), {}, None, "GET"
            if kind == "page":
                path = f"/bases/{basis}/units/{order[next(next_unit) % len(order)]}"
            elif kind == "twin":
                path = f"/api/v1/bases/{basis}/units/{index}"
            elif kind == "search":
                path = f"/bases/{basis}?" + urlencode({"q": rng.choice(words), "page": rng.randint(1, 2)})
            else:
                method, path = "POST", f"/api/v1/bases/{basis}/units/{index}/labels"
                text = f"load {k}-{n} {rng.random():.6f}"
                body = json.dumps({"text": text})
                headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            t0 = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors.append(f"{kind} {path}: {type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            mine[kind].append(time.perf_counter() - t0)
            if not 200 <= response.status < 300:
                with lock:
                    errors.append(f"{kind} {path}: HTTP {response.status} {data[:200]!r}")
            elif kind == "label":
                written = json.loads(data)
                with lock:
                    acked.append((written["id"], basis, index, text))
        with lock:
            for kind, values in mine.items():
                latencies[kind].extend(values)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, acked


def lost_writes(db: str, acked: list[tuple]) -> list[tuple]:
    """Return the acknowledged writes that the label table does not hold as acknowledged."""
    from sqlalchemy import select

    from app.store.db import make_engine
    from app.store.models import Basis, Label

    with make_engine(db).connect() as c:
        stored = {row[0]: tuple(row) for row in c.execute(
            select(Label.id, Basis.name, Label.unit_index, Label.text).join(Basis, Basis.id == Label.basis_id)
            .where(Label.id.in_([a[0] for a in acked])))} if acked else {}
    return [a for a in acked if stored.get(a[0]) != a]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="an analysed run to ingest into a throwaway cluster")
    parser.add_argument("--db", help="an ingested PostgreSQL database instead (labels get written to it)")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    if (args.run is None) == (args.db is None):
        sys.exit("give one of --run RUN (a throwaway cluster) or --db URL")
    cluster, db, stop_cluster = (None, args.db, None) if args.db else start_cluster()
    server = None
    try:
        if args.run is not None:
            t0 = time.perf_counter()
            subprocess.run([str(EXE), "ingest", "--run", str(args.run), "--db", db], check=True,
                           stdout=subprocess.DEVNULL)
            print(f"ingested {args.run} into a throwaway PostgreSQL cluster in {time.perf_counter() - t0:.0f} s")
        out = subprocess.run([str(EXE), "user", "add", f"load{os.getpid()}", "--db", db], check=True,
                             capture_output=True, text=True)
        token = out.stdout.strip().splitlines()[-1]
        port = free_port()
        server = subprocess.Popen([str(EXE), "serve", "--db", db, "--port", str(port), "--workers", "1"],
                                  stdout=subprocess.DEVNULL)
        wait_ready(port, server)
        basis, units, words = targets(port)
        latencies, errors, acked = run_load(port, token, basis, units, words, args.seconds, args.concurrency)
        lost = lost_writes(db, acked)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if cluster is not None:
            stop_cluster()
            shutil.rmtree(cluster, ignore_errors=True)
    total = sum(len(v) for v in latencies.values())
    print(f"basis {basis} ({len(units)} live units), {args.concurrency} threads, {args.seconds:g} s, one server "
          f"process on PostgreSQL: {total:,} requests ({total / args.seconds:.0f}/s), {len(errors)} errors, "
          f"{len(acked):,} label writes acknowledged, {len(lost)} lost")
    print("| kind | requests | p50 ms | p99 ms |\n|---|---:|---:|---:|")
    for kind, values in latencies.items():
        values.sort()
        pick = lambda q: values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")  # noqa: E731
        print(f"| {kind} | {len(values):,} | {pick(0.50):.1f} | {pick(0.99):.1f} |")
    for line in errors[:10]:
        print("error:", line)
    for write in lost[:10]:
        print("lost write:", write)
    sys.exit(1 if errors or lost else 0)


if __name__ == "__main__":
    main()
