"""What every `monoscope` command shares: the typer app, the common options, config defaults, list parsing."""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from sae.errors import MonoscopeError

cli = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Sparse autoencoders on one-layer transformer MLPs: build, analyse, browse.")

RunOpt = Annotated[Path, typer.Option("--run", help="Run folder (runs/<name>) holding every stage's output.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo the stage even if it is up to date.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
DbOpt = Annotated[Optional[str], typer.Option("--db", help="Database URL (default: MONOSCOPE_DATABASE_URL, else sqlite:///monoscope.db).")]


def default(config: type, name: str) -> Any:
    """Return the default of field `name` of a config dataclass, so an option's default lives in the config only."""
    found = {f.name: f for f in fields(config)}[name]
    if found.default is MISSING:
        raise TypeError(f"{config.__name__}.{name} has no plain default")
    return found.default


def limit_cpu_threads() -> None:
    """Cap torch's CPU threads at 8: more only adds contention on the shapes these stages use."""
    import torch

    torch.set_num_threads(min(torch.get_num_threads(), 8))


def number_list(text: str, kind: type, option: str) -> list:
    """Return the comma-separated numbers of a list option, or refuse it in one line."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise MonoscopeError(f"{option} takes comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise MonoscopeError(f"{option} needs positive numbers, got {text!r}")
    return values


def sessions(db: str | None):
    """Return a session maker on the database (the flag's, else the settings'), brought to the newest schema."""
    from app.settings import load_settings
    from app.store.db import session_factory, upgrade

    url = load_settings(database_url=db).database_url
    upgrade(url)
    return session_factory(url)
