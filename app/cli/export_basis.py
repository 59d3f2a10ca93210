"""`monoscope export basis`: one basis as files for pandas and datasette (units, examples, labels, review scores,
explanations)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from app.cli.common import DbOpt, sessions
from app.cli.people import export_cli
from sae.errors import MonoscopeError


@export_cli.command("basis")
def export_basis(
    basis: Annotated[str, typer.Option("--basis", help="The basis: neurons, or an SAE's name.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for units, examples, labels, review_scores "
                                                    "and explanations (created if missing; those five files are "
                                                    "replaced).")],
    format: Annotated[str, typer.Option("--format", help="jsonl, or parquet (needs pyarrow: the export extra).")]
    = "jsonl",
    model: Annotated[Optional[str], typer.Option("--model", help="The model (run name) of the basis (default: the "
                                                                 "newest that has it).")] = None,
    db: DbOpt = None,
) -> None:
    """Write one basis for pandas and datasette: units, examples, labels, review scores and explanations, a file each.

    Plain columns: unit statistics, top logits with their tokens and the current label; every example window with
    its token strings, activations and ablation effects as lists; the label history; every rater's scores; every
    explanation by a language model with its scores.
    """
    from app.read.queries.bases import NotFound, resolve_basis
    from app.store.basis_export import TABLES, basis_tables
    from app.store.db import read_snapshot
    from app.store.table_files import check_format, out_folder, write_tables

    check_format(format)
    with read_snapshot(sessions(db)) as session:
        try:
            found, found_model = resolve_basis(session, basis, model)
        except NotFound as e:
            raise MonoscopeError(str(e)) from None
        out_folder(out)  # only once the input is good: bad input leaves no empty folder behind
        streams = basis_tables(session, found, found_model)
        written = write_tables(out, format, {name: (TABLES[name], rows) for name, rows in streams.items()})
    counts = ", ".join(f"{n:,} {name.replace('_', ' ')}" for name, n in written.items())
    print(f"{found.name} of {found_model.name}: {counts} written to {out} ({format})")
