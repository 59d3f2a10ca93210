"""Reads of labels for the label panel, the label list and their JSON twins."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from app.store.labels import LabelRow, list_labels
from app.web.label_schemas import LabelHistory, LabelListing, LabelOut
from app.web.queries.bases import check_unit, resolve
from app.web.urls import unit_url

MAX_LISTED = 10_000


def label_out(row: LabelRow, model_param: str | None) -> LabelOut:
    return LabelOut(id=row.id, model=row.model, basis=row.basis, index=row.index, text=row.text, note=row.note,
                    author=row.author, created=row.created, unit_url=unit_url(row.basis, row.index, model_param))


def label_history(*, session: Session, basis: str, index: int, model: str | None) -> LabelHistory:
    """Return the labels of unit (basis, index), newest first, or raise NotFound for an unknown unit."""
    b, _, model_param = resolve(session, basis, model)
    check_unit(b, index)
    rows = [label_out(r, model_param) for r in reversed(list_labels(session, basis_id=b.id, index=index))]
    return LabelHistory(basis=b.name, index=index, unit_url=unit_url(b.name, index, model_param),
                        current=rows[0] if rows else None, history=rows)


def label_listing(*, session: Session, basis: str | None, author: str | None, since: datetime | None,
                  model: str | None) -> LabelListing:
    """Return the labels of one basis (or all), one author (or all), written since a time (or ever)."""
    basis_id, model_param = None, None
    if basis is not None:
        b, _, model_param = resolve(session, basis, model)
        basis_id = b.id
    rows = list_labels(session, basis_id=basis_id, author=author, since=since, limit=MAX_LISTED)
    return LabelListing(basis=basis, author=author, since=since, total=len(rows),
                        labels=[label_out(r, model_param) for r in rows])
