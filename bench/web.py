"""Web speed: p50/p99 latency and requests/s of the unit page, its JSON twin, a searched unit list and a static file.

    .venv/bin/python bench/web.py [--db sqlite:///monoscope.db] [--rounds 3] [--seconds 5] [--concurrency 16]
                                  [--no-append]

Starts `monoscope serve` on a free loopback port (a separate process, as users run it), then for each target runs
`concurrency` client threads with keep-alive connections for a bounded time, on the largest basis, in `rounds`
interleaved rounds (requests/s and the ratio to the static file are medians over the rounds: the machines here are
shared, and a slow spell then hits every target alike). Two regimes: first
render (every request a different live unit, so the response cache never hits) and cached (64 units after a warm
pass: the common case of people browsing). The unit list with a search (`?q=` matches labels and top tokens: the
label search) is never cached; each request searches a different top-token word. The static file
(/static/monoscope.css, Starlette's StaticFiles) is the baseline: targets are p99 < 50 ms and, for a first render of
the unit page and for the searched list, >= 50% of the static file's requests/s. Also times live inference on 200
tokens (target <= 200 ms). Client and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            if get(conn, "/static/monoscope.css")[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    sys.exit("server did not start")


def load(port: int, paths: list[str], seconds: float, concurrency: int, once: bool = False) -> dict:
    """Run `concurrency` threads requesting `paths` round-robin for `seconds` (with `once`, each path at most once,
    so every request is a first render); return latency and rate figures."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, i = [], offset
        while time.perf_counter() < stop and not (once and i >= len(paths)):
            t0 = time.perf_counter()
            status, _ = get(conn, paths[i % len(paths)])
            mine.append(time.perf_counter() - t0)
            if status != 200:
                with lock:
                    errors[0] += 1
            i += concurrency
        with lock:
            latencies.extend(mine)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {"latencies": latencies, "errors": errors[0], "rps": len(latencies) / elapsed}


STATIC = "static file (monoscope.css)"


def merged(runs: list[dict], static_runs: list[dict]) -> dict:
    """Pool the rounds of one target: latency percentiles over every request, requests/s and the ratio to the
    static file as medians of the rounds (each ratio against the static file's run of the same round)."""
    latencies = sorted(x for r in runs for x in r["latencies"])
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return {"requests": len(latencies), "errors": sum(r["errors"] for r in runs), "p50_ms": pick(0.50),
            "p99_ms": pick(0.99), "rps": statistics.median(r["rps"] for r in runs),
            "vs_static": statistics.median(r["rps"] / s["rps"] for r, s in zip(runs, static_runs)),
            "rounds": " / ".join(f"{r['rps'] / s['rps']:.0%}" for r, s in zip(runs, static_runs))}


def infer_latency(port: int, n_tokens: int = 200, repeats: int = 20) -> dict:
    """Time /api/v1/infer (LM + every SAE) on a text of `n_tokens` tokens, one client, after a warm-up call."""
    import textwrap
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    source = Path(textwrap.__file__).read_text()[:2000]
    status, body = get(conn, "/api/v1/infer?" + urlencode({"text": source}))  # loads the model once
    if status != 200:
        return {"error": body.decode()[:200]}
    tokens = json.loads(body)["tokens"]
    text = "".join(t["text"] for t in tokens[:n_tokens])
    path = "/api/v1/infer?" + urlencode({"text": text})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        status, body = get(conn, path)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"tokens": len(json.loads(body)["tokens"]), "p50_ms": times[len(times) // 2], "max_ms": times[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default=os.environ.get("MONOSCOPE_DATABASE_URL", "sqlite:///monoscope.db"))
    parser.add_argument("--seconds", type=float, default=5.0, help="per target and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="`monoscope serve --workers`")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()

    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("monoscope")), "serve", "--db", args.db,
                               "--port", str(port), "--workers", str(args.workers)], stdout=subprocess.DEVNULL)
    try:
        wait_ready(port, server)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        status, body = get(conn, "/api/v1/overview")
        bases = json.loads(body)["bases"] if status == 200 else []
        if not bases:
            sys.exit(f"no ingested basis in {args.db}: run `monoscope demo` (or analyze + ingest) first")
        basis = max(bases, key=lambda b: b["n_units"])
        units, terms, page = [], {}, 1
        while True:  # every live unit of the basis, through the API's pagination
            status, body = get(conn, f"/api/v1{basis['url']}{'&' if '?' in basis['url'] else '?'}"
                                     f"dead=exclude&per_page=500&page={page}")
            listing = json.loads(body)
            units += [u["url"] for u in listing["units"]]
            terms.update((t.strip().lower(), None) for u in listing["units"] for t in u["top_tokens"]
                         if len(t.strip()) >= 2 and t.strip().isalnum())
            if page >= listing["pages"]:
                break
            page += 1
        hot, rest = units[:64], units[64:]  # the cached targets' units; first renders never meet them
        cold_pages, cold_twins = rest[: len(rest) // 2], rest[len(rest) // 2:]
        sep = "&" if "?" in basis["url"] else "?"
        searches = [f"{basis['url']}{sep}{urlencode({'q': t, 'dead': 'exclude'})}" for t in terms]
        static = ["/static/monoscope.css"]
        load(port, static, 1.0, args.concurrency)  # warm-up: imports, connections
        load(port, hot + ["/api/v1" + u for u in hot], 2.0, args.concurrency)  # and the response cache for `hot`
        targets = {  # name: (paths, each path once)
            "unit page, first render (distinct units)": (cold_pages, True),
            "unit JSON twin, first render (distinct units)": (["/api/v1" + u for u in cold_twins], True),
            f"unit list, label search (distinct terms of {len(searches)})": (searches, True),
            f"unit page, cached ({len(hot)} units)": (hot, False),
            f"unit JSON twin, cached ({len(hot)} units)": (["/api/v1" + u for u in hot], False),
            STATIC: (static, False),
        }
        rounds = {name: [] for name in targets}
        for r in range(args.rounds):  # interleaved, so a slow spell of the machine hits every target alike
            for name, (paths, once) in targets.items():
                share = paths[r::args.rounds] if once else paths  # first renders: fresh paths every round
                rounds[name].append(load(port, share, args.seconds, args.concurrency, once=once))
        results = {name: merged(runs, rounds[STATIC]) for name, runs in rounds.items()}
        infer = infer_latency(port)
    finally:
        server.terminate()
        server.wait(timeout=10)

    lines = ["| target | requests | p50 ms | p99 ms | requests/s | vs static | each round |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['requests']:,} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['rps']:.0f} | "
                     f"{r['vs_static']:.0%} | {r['rounds']} |" + (f" {r['errors']} errors" if r["errors"] else ""))
    table = "\n".join(lines)
    infer_line = (f"Live inference (`/api/v1/infer`, LM + every SAE, one client): {infer['tokens']} tokens, "
                  f"p50 {infer['p50_ms']:.0f} ms, max {infer['max_ms']:.0f} ms of 20 (target <= 200 ms)."
                  if "tokens" in infer else f"Live inference unavailable: {infer.get('error')}")
    table += "\n\n" + infer_line
    print(f"basis {basis['name']} ({basis['n_units']} units, {len(units)} live), "
          f"concurrency {args.concurrency}, {args.rounds} rounds of at most {args.seconds:g} s per target\n{table}")
    if not args.no_append:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        section = (f"\n## Web: unit page, JSON twin, searched unit list and a static file ({stamp})\n\n"
                   f"`{' '.join(['.venv/bin/python', 'bench/web.py', *sys.argv[1:]])}` — one `monoscope serve` "
                   f"(uvicorn, {args.workers} worker process(es)) on loopback; {args.concurrency} keep-alive "
                   f"client threads per target, {args.rounds} interleaved rounds of at most {args.seconds:g} s "
                   f"(requests/s and the ratio to the static file: medians of the rounds, each ratio within its "
                   f"round; p50/p99 over every request); basis `{basis['name']}` ({basis['n_units']} units, {len(units)} "
                   f"live). First render: each request a different unit (half the live units for the page, the "
                   f"other half for the twin, none of the cached ones), so the response cache never hits. Cached: {len(hot)} units after a "
                   f"warm pass (pages change only on re-ingest or labelling, both part of the cache key). Unit list: "
                   f"`?q=` with a different top-token word per request (a label search; never cached). Targets: "
                   f"p99 < 50 ms; first-render unit page and searched list >= 50% of the static file's "
                   f"requests/s.\n\n{table}\n")
        with open(ROOT / "BENCHMARKS.md", "a") as f:
            f.write(section)


if __name__ == "__main__":
    main()
