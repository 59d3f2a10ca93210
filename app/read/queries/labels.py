"""Current labels for the pages and their JSON twins, by the one rule of app/store/labels.py (the newest label row
wins; an empty text there is no label)."""

from __future__ import annotations

from sqlalchemy import or_
from sqlalchemy.orm import Session

from app.store.labels import newest_label, newest_labels
from app.store.models import Label

__all__ = ["labels", "labels_for", "newest_label"]


def labels(session: Session, wanted: dict[int, list[int]]) -> dict[tuple[int, int], str]:
    """Return {(basis id, unit index): current label} of the labelled units among {basis id: [unit indexes]}, in
    one query (a unit without a label, or whose label was cleared, is absent)."""
    wanted = {b: idx for b, idx in wanted.items() if idx}
    if not wanted:
        return {}
    where = or_(*[(Label.basis_id == b) & Label.unit_index.in_(sorted(set(idx))) for b, idx in wanted.items()])
    return {(b, i): label for b, i, label in session.execute(newest_labels(where)) if label is not None}


def labels_for(*, session: Session, basis_id: int, indexes: list[int]) -> dict[int, str]:
    """Return {unit index: current label} of the labelled units among `indexes` of one basis."""
    return {i: t for (_, i), t in labels(session, {basis_id: indexes}).items()}
