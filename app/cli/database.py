"""Database commands of `monoscope`: ingest a run, and the schema (`db upgrade`, `db render`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from app.cli.common import DbOpt, RunOpt, cli
from sae.errors import MonoscopeError


@cli.command()
def ingest(
    run: RunOpt,
    db: DbOpt = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Processes that build a large basis's units while this one writes them (default: one a core, at most 8; 1: none).")] = None,
) -> None:
    """Load every analysed basis of a run into the database, one transaction per basis."""
    from app.settings import load_settings
    from app.store.db import shown_url, upgrade
    from app.store.ingest import ingest_run

    if workers is not None and workers < 1:
        raise MonoscopeError(f"--workers must be at least 1, got {workers}")
    url = load_settings(database_url=db).database_url
    upgrade(url)
    ingest_run(run, url=url, workers=workers)
    print(f"database: {shown_url(url)}")


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
