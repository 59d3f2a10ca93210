"""Commands for what people write: users and their tokens, and exports of their labels."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from app.cli.common import DbOpt, cli, sessions
from sae.errors import MonoscopeError

user_cli = typer.Typer(no_args_is_help=True, help="Users who may write labels and reviews, and their API tokens.")
export_cli = typer.Typer(no_args_is_help=True,
                         help="Write files: the labels (CSV or JSON lines), or a whole basis (Parquet or JSON lines).")
cli.add_typer(user_cli, name="user")
cli.add_typer(export_cli, name="export")


@user_cli.command("add")
def user_add(name: Annotated[str, typer.Argument(help="Letters, digits, '_', '.', '-'.")], db: DbOpt = None) -> None:
    """Create a user and print their API token, once: only its hash is stored."""
    from app.store.users import add_user

    from app.store.db import write_transaction

    with write_transaction(sessions(db)) as session:
        _, token = add_user(session, name)
    print(f"user {name!r} created. Their API token (shown only now; keep it secret):\n{token}")


@user_cli.command("list")
def user_list(db: DbOpt = None) -> None:
    """List users: name, created, and whether their token is revoked."""
    from app.store.users import list_users

    with sessions(db)() as session:
        users = list_users(session)
    if not users:
        print("no users yet: `monoscope user add NAME`")
    for user in users:
        state = f"revoked {user.revoked_at:%Y-%m-%d %H:%M}" if user.revoked_at else "active"
        print(f"{user.name}\tcreated {user.created:%Y-%m-%d %H:%M}\t{state}")


@user_cli.command("revoke")
def user_revoke(name: str, db: DbOpt = None) -> None:
    """Revoke a user's token and sessions; what they wrote stays, under their name."""
    from app.store.users import revoke_user

    from app.store.db import write_transaction

    with write_transaction(sessions(db)) as session:
        revoke_user(session, name)
    print(f"user {name!r} revoked")


class Format(str, Enum):
    csv = "csv"
    jsonl = "jsonl"


LABEL_FIELDS = ("id", "model", "basis", "index", "text", "note", "author", "created")


@export_cli.command("labels")
def export_labels(
    format: Annotated[Format, typer.Option("--format", help="csv or jsonl.")] = Format.csv,
    out: Annotated[Optional[Path], typer.Option("--out", help="File to write (default: standard output).")] = None,
    basis: Annotated[Optional[str], typer.Option("--basis", help="Only this basis's labels.")] = None,
    db: DbOpt = None,
) -> None:
    """Export every label (the full append-only history, oldest first; the newest per unit is current)."""
    from app.store.export import write_csv
    from app.store.labels import list_labels
    from app.store.models import Basis
    from app.store.table_files import json_line

    with sessions(db)() as session:
        basis_ids = None
        if basis is not None:
            basis_ids = [b.id for b in session.query(Basis).filter(Basis.name == basis)]
            if not basis_ids:
                raise MonoscopeError(f"no basis named {basis!r}")
        rows = [row for bid in (basis_ids or [None]) for row in list_labels(session, basis_id=bid)]
    records = [{field: getattr(row, field) for field in LABEL_FIELDS} for row in sorted(rows, key=lambda r: r.id)]
    for record in records:
        record["created"] = record["created"].isoformat()
    target = out.open("w", newline="", encoding="utf-8") if out else sys.stdout
    try:
        if format is Format.csv:
            write_csv(target, list(LABEL_FIELDS), records)
        else:
            target.writelines(json_line(record) for record in records)
    finally:
        if out:
            target.close()
    if out:
        print(f"{len(records)} labels written to {out}", file=sys.stderr)
