"""Autointerp speed: units per minute for explain + all four scorers, split by stage, with the local model in this
process and through an OpenAI-compatible server (the same model behind sae.autointerp.chat_server) at a given
request concurrency.

    .venv/bin/python bench/autointerp.py --db sqlite:///monoscope.db [--bases neurons,topk-4096] [--units 2]
                                         [--mix sim_random=1,...] [--concurrency 4] [--no-append]

Draws `--units` units per basis (the review's sampler, seed 0), runs them with --force semantics (everything is
explained and scored again) with the local backend, then the same units through the server. Appends a section to
BENCHMARKS.md unless --no-append. The cores are shared with other work: figures are lower bounds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(args, backend, units, pool, cfg, model_id, sessions):
    from app.store.autointerp import run_autointerp

    started = time.perf_counter()
    stats = run_autointerp(sessions, backend, pool, units, cfg, model_id=model_id, force=True, progress=False)
    wall = time.perf_counter() - started
    return stats, wall


def section(label: str, stats, wall: float, extra: str = "") -> str:
    from app.store.autointerp import STAGES

    n = stats.units
    split = " | ".join(f"{stats.seconds.get(s, 0.0):.1f}" for s in STAGES)
    tokens = sum(u.prompt_tokens + u.completion_tokens for u in stats.usage.values())
    requests = sum(u.requests for u in stats.usage.values())
    return (f"| {label} | {n} | {wall:.1f} | {60 * n / wall:.2f} | {split} | {tokens:,} | {requests:,} |"
            + (f" {extra} |" if extra else " |"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--bases", default="neurons,topk-4096")
    parser.add_argument("--units", type=int, default=2)
    parser.add_argument("--mix", default="")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()

    import torch

    from app.cli.autointerp import _config
    from app.read.queries.reviews import resolve_bases
    from app.read.unit_data import analysis_setting
    from app.store.autointerp import STAGES, draw_units
    from app.store.db import session_factory
    from app.store.models import Model
    from sae.autointerp.chat_server import ChatServer
    from sae.autointerp.endpoint import EndpointLLM
    from sae.autointerp.heldout import load_pool
    from sae.autointerp.local import load_local

    torch.set_num_threads(min(2, torch.get_num_threads()))
    cfg = _config(args.mix, 0)
    sessions = session_factory(args.db)
    with sessions() as session:
        bases = resolve_bases(session, args.bases.split(","), None)
        units = draw_units(session, bases, args.units, seed=0)
        model = session.get(Model, bases[0].model_id)
        run_dir, model_id = Path(model.run_dir), model.id
        analysed = max(analysis_setting(b.config, "n_tokens") for b in bases)
    started = time.perf_counter()
    pool = load_pool(run_dir, units, analysed_tokens=analysed, n_rows=256, logit_k=cfg.logit_to)
    pool_s = time.perf_counter() - started
    started = time.perf_counter()
    local = load_local()
    load_s = time.perf_counter() - started
    local_stats, local_wall = run(args, local, units, pool, cfg, model_id, sessions)
    server = ChatServer(local).start()
    try:
        remote = EndpointLLM(server.base_url, "smollm2-135m", None, concurrency=args.concurrency, timeout=600)
        remote_stats, remote_wall = run(args, remote, units, pool, cfg, model_id, sessions)
    finally:
        server.shutdown()
    load = os.getloadavg()[0]
    header = ("| backend | units | wall s | units/min | " + " | ".join(f"{s} s" for s in STAGES) +
              " | tokens | requests | concurrency reached |\n|" + " --- |" * (len(STAGES) + 7))
    text = "\n".join([
        f"## Autointerp: explain + four scorers, local model and OpenAI-compatible server "
        f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
        f"Command: `python bench/autointerp.py --db {args.db} --bases {args.bases} --units {args.units}"
        + (f" --mix {args.mix}" if args.mix else "") + f" --concurrency {args.concurrency}`. "
        f"{sum(map(len, units.values()))} units ({', '.join(f'{b}: {v}' for b, v in units.items())}); "
        f"{local.name}; 2 torch threads; held-out pool {pool_s:.1f} s, model load {load_s:.1f} s (not in the "
        f"figures); 1-min load average at the end {load:.1f}.", "",
        header,
        section("local (in process)", local_stats, local_wall, "-"),
        section(f"endpoint (chat server, {args.concurrency} at a time)", remote_stats, remote_wall,
                f"client {remote.peak_concurrency}, server {server.peak}"),
        "",
    ])
    print(text)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
