"""`monoscope serve`: the feature browser and its JSON API."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from app.cli.common import DbOpt, cli
from sae.errors import MonoscopeError


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
