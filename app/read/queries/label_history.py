"""Reads of labels for the label panel, the label list and their JSON twins."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from sqlalchemy.orm import Session

from app.read.label_schemas import LabelHistory, LabelListing, LabelOut
from app.read.queries.bases import check_unit, find_model_id, model_param, resolve
from app.read.urls import unit_url
from app.store.labels import LabelRow, count_labels, current_text, list_labels


def label_out(session: Session, row: LabelRow) -> LabelOut:
    """Return the label with a link to its unit (naming its model when several are ingested)."""
    return LabelOut(**asdict(row), unit_url=unit_url(row.basis, row.index, model_param(session, row.model)))


def label_history(*, session: Session, basis: str, index: int, model: str | None) -> LabelHistory:
    """Return the labels of unit (basis, index), newest first, or raise NotFound for an unknown unit. The current
    label is the newest, unless its text is empty (the label was cleared): then there is none."""
    b, _, param = resolve(session, basis, model)
    check_unit(b, index)
    rows = [label_out(session, r) for r in reversed(list_labels(session, basis_id=b.id, index=index))]
    return LabelHistory(basis=b.name, index=index, unit_url=unit_url(b.name, index, param),
                        current=rows[0] if rows and current_text(rows[0].text) else None, history=rows)


def label_listing(*, session: Session, basis: str | None, author: str | None, since: datetime | None,
                  model: str | None, limit: int, offset: int) -> LabelListing:
    """Return one page of the labels of one basis (or of one model, or all), one author (or all), written since a time
    (or ever)."""
    basis_id = model_id = None
    if basis is not None:
        basis_id = resolve(session, basis, model)[0].id
    elif model is not None:
        model_id = find_model_id(session, model)
    rows = list_labels(session, basis_id=basis_id, model_id=model_id, author=author, since=since, limit=limit,
                       offset=offset)
    return LabelListing(model=model, basis=basis, author=author, since=since,
                        total=count_labels(session, basis_id=basis_id, model_id=model_id, author=author, since=since),
                        offset=offset, labels=[label_out(session, r) for r in rows])
