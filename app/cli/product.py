"""Product commands of `monoscope`: ingest a run into the database, serve the web app, and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from app.cli.common import DbOpt, DeviceOpt, ForceOpt, RunOpt, cli
from app.cli.stages import analyze, corpus, fit_sae, train_lm
from sae.errors import MonoscopeError


@cli.command()
def ingest(
    run: RunOpt,
    db: DbOpt = None,
) -> None:
    """Load every analysed basis of a run into the database, one transaction per basis."""
    from app.settings import load_settings
    from app.store.db import shown_url, upgrade
    from app.store.ingest import ingest_run

    url = load_settings(database_url=db).database_url
    upgrade(url)
    ingest_run(run, url=url)
    print(f"database: {shown_url(url)}")


@cli.command()
def serve(
    db: DbOpt = None,
    host: Annotated[Optional[str], typer.Option("--host", help="Interface to bind (default: MONOSCOPE_HOST, else 127.0.0.1: this machine only).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="TCP port (default: MONOSCOPE_PORT, else 8000).")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Server processes (each with its own caches and live model).")] = 1,
) -> None:
    """Serve the feature browser and its JSON API (/api/v1, docs at /docs); prints the URL."""
    import os
    import socket

    import uvicorn

    from app.settings import load_settings
    from app.store.db import upgrade
    from app.web import create_app

    settings = load_settings(database_url=db, host=host, port=port)
    host, port = settings.host, settings.port
    if not 0 < port < 65536 or workers < 1:
        raise MonoscopeError(f"--port must be 1..65535 and --workers at least 1, got {port} and {workers}")
    with socket.socket() as probe:  # say so in one line rather than a uvicorn traceback
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise MonoscopeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    upgrade(settings.database_url)  # an empty or older database gets the current schema; ingest fills it
    shown = f"[{host}]" if ":" in host else host
    print(f"monoscope: serving http://{shown}:{port}/  (API docs: http://{shown}:{port}/docs; Ctrl-C stops)",
          flush=True)
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False)
    else:  # each worker process builds its app from the environment
        os.environ["MONOSCOPE_DATABASE_URL"] = settings.database_url
        uvicorn.run("app.web:create_app", factory=True, workers=workers, host=host, port=port,
                    log_level="warning", access_log=False)


@cli.command()
def demo(
    run: Annotated[Path, typer.Option("--run", help="Run folder for every stage.")] = Path("runs/demo"),
    source: Annotated[str, typer.Option("--source", help="Corpus source (see `monoscope corpus`).")] = "stdlib",
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="Cap on corpus training tokens.")] = None,
    tokens: Annotated[int, typer.Option("--tokens", help="LM training tokens.")] = 2_500_000,
    d_sae: Annotated[int, typer.Option("--d-sae", help="SAE features (the paper's A/1: 4,096 on 512 neurons).")] = 4096,
    sae_tokens: Annotated[Optional[int], typer.Option("--sae-tokens", help="SAE training tokens (default: the demo config's).")] = None,
    sae_batch_size: Annotated[int, typer.Option("--sae-batch-size", help="SAE activations per step.")] = 4096,
    analysis_tokens: Annotated[int, typer.Option("--analysis-tokens", help="Held-out tokens to analyse.")] = 1 << 20,
    db: DbOpt = None,
    full: Annotated[bool, typer.Option("--full", help="Also dictionaries of --sizes (feature splitting) and a second LM from seed 1 with its SAE (universality), with the matches between them.")] = False,
    sizes: Annotated[str, typer.Option("--sizes", help="With --full: the other dictionary sizes (the paper's A/0 and A/2).")] = "512,16384",
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Start the web app at the end.")] = True,
    port: Annotated[Optional[int], typer.Option("--port", help="Port of the web app (default: as serve's).")] = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Run every stage on the defaults (skipping those up to date), print what was made, then serve it."""
    import json
    import time

    from app.settings import load_settings
    from sae.dictionary.config import demo_config

    url = load_settings(database_url=db).database_url
    # The demo SAE is the sweep's pick (BENCHMARKS.md, "SAE training sweep"): TopK k=32 with AuxK.
    sae_cfg = demo_config(d_sae=d_sae, batch_size=sae_batch_size, **({"tokens": sae_tokens} if sae_tokens else {}))
    # One entry per stage, in order: each is the same function as its own command.
    stages = [
        ("corpus", lambda: corpus(run, source=source, max_tokens=max_tokens, force=force)),
        ("lm", lambda: train_lm(run, tokens=tokens, device=device, force=force)),
        ("sae", lambda: fit_sae(sae_cfg, run=run, name=f"{sae_cfg.architecture}-{d_sae}", device=device,
                                force=force)),
        ("analysis", lambda: analyze(run, tokens=analysis_tokens, device=device, force=force)),
        ("database", lambda: ingest(run, db=url)),
    ]
    if full:
        from app.cli.demo_full import full_stages

        stages += full_stages(run, sae_cfg, sizes, tokens, analysis_tokens, url, device, force)
    started = time.time()
    for name, stage in stages:
        print(f"== {name}", flush=True)
        stage()
    print(f"demo: built in {time.time() - started:.0f} s; run folder {run}, database {url}")
    lm_metrics = json.loads((run / "lm" / "metrics.json").read_text())
    print(f"  LM held-out loss {lm_metrics['heldout_loss']:.3f} nats (unigram baseline {lm_metrics['unigram_loss']:.3f})")
    for basis in sorted((run / "analysis").glob("*/basis.json")):
        m = json.loads(basis.read_text())["metrics"]
        shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in m.items() if v is not None}
        print(f"  {basis.parent.name}: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    if serve_after:
        serve(db=url, port=port)


db_cli = typer.Typer(no_args_is_help=True, help="The database schema (Alembic migrations shipped with the package).")
cli.add_typer(db_cli, name="db")


@db_cli.command("upgrade")
def db_upgrade(db: DbOpt = None) -> None:
    """Bring the database to the newest schema (ingest and serve do this themselves)."""
    from app.settings import load_settings
    from app.store.db import shown_url, upgrade

    url = load_settings(database_url=db).database_url
    upgrade(url)
    print(f"database: {shown_url(url)} at the newest schema")


@db_cli.command("render")
def db_render(db: DbOpt = None) -> None:
    """Render again every unit page's stored sections that another version of Monoscope made (pages render those
    live, slower, until then); reads only the database, no run folder."""
    from app.settings import load_settings
    from app.store.db import shown_url, upgrade
    from app.store.rerender import render_stale_sections

    url = load_settings(database_url=db).database_url
    upgrade(url)
    print(f"database: {shown_url(url)}: {render_stale_sections(url):,} units rendered")
