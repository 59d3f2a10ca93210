"""Label reads for the unit list and unit pages: append-only history per unit, the newest one is current."""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.store.models import Label


def newest_label(basis_id, unit_index):
    """The newest label text of unit (basis_id, unit_index), as a correlated scalar subquery (index ix_label_unit):
    for statements built once, where `labels` would build one per call."""
    return (select(Label.text).where(Label.basis_id == basis_id, Label.unit_index == unit_index)
            .order_by(Label.id.desc()).limit(1).scalar_subquery())


def latest_labels(basis_id: int):
    """Subquery (unit_index, text) of the newest label of each labelled unit of a basis."""
    newest = (select(func.max(Label.id).label("id")).where(Label.basis_id == basis_id)
              .group_by(Label.unit_index).subquery())
    return select(Label.unit_index, Label.text).join(newest, Label.id == newest.c.id).subquery()


def labels_for(*, session: Session, basis_id: int, indexes: list[int]) -> dict[int, str]:
    """Return {unit index: current label} for those of `indexes` that have a non-empty label."""
    return {i: t for (_, i), t in labels(session, {basis_id: indexes}).items()}


def labels(session: Session, wanted: dict[int, list[int]]) -> dict[tuple[int, int], str]:
    """Return {(basis id, unit index): newest non-empty label} for {basis id: [unit indexes]}, in one query."""
    wanted = {b: idx for b, idx in wanted.items() if idx}
    if not wanted:
        return {}
    where = or_(*[(Label.basis_id == b) & Label.unit_index.in_(sorted(set(idx))) for b, idx in wanted.items()])
    newest: dict[tuple[int, int], str] = {}
    for b, i, text in session.execute(select(Label.basis_id, Label.unit_index, Label.text).where(where)
                                      .order_by(Label.id)):
        newest[(b, i)] = text  # append-only history: the last one wins
    return {key: text for key, text in newest.items() if text}

