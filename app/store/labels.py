"""Label writes and label listings: append-only rows keyed by (basis, unit index), so a re-ingest keeps them.

A unit's current label, the one rule: its newest row wins, and an empty text there means the unit has no label (it
was cleared): None in Python, null in JSON, an empty cell in CSV. Every read of current labels goes through
`newest_label` (one unit, a correlated scalar subquery) or `newest_labels` (a set of units), both selecting
CURRENT_LABEL. Label histories (the page, the JSON API and `monoscope export labels`) go through `list_labels`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Select, Text, func, select
from sqlalchemy.orm import Session

from app.store.models import Basis, Label, Model, User
from app.store.reviews import Conflict
from sae.errors import MonoscopeError

MAX_LABEL_CHARS = 200
MAX_NOTE_CHARS = 2000


CURRENT_LABEL = func.nullif(Label.text, "", type_=Text)  # an empty text is no label: NULL


def current_text(newest_text: str | None) -> str | None:
    """The same rule for a unit's newest label text already read (e.g. from its history): None where it cleared."""
    return newest_text or None


def newest_label(basis_id, unit_index):
    """The current label of unit (basis_id, unit_index) (NULL: none, or cleared), as a correlated scalar subquery
    (index ix_label_unit): for statements built once that read it beside each row."""
    return (select(CURRENT_LABEL).where(Label.basis_id == basis_id, Label.unit_index == unit_index)
            .order_by(Label.id.desc()).limit(1).scalar_subquery())


def newest_labels(*where) -> Select:
    """(basis_id, unit_index, label) of every unit having label rows that match `where`: its newest row's text, NULL
    where that row cleared the label (a unit never labelled has no row)."""
    newest = (select(func.max(Label.id).label("id")).where(*where).group_by(Label.basis_id, Label.unit_index)
              .subquery())
    return (select(Label.basis_id, Label.unit_index, CURRENT_LABEL.label("label"))
            .join(newest, Label.id == newest.c.id))


@dataclass(frozen=True)
class LabelRow:
    """One label with what names it: model, basis, unit, author."""

    id: int
    model: str
    basis: str
    index: int
    text: str
    note: str | None
    author: str | None
    created: datetime


def clean_label(text: str, note: str | None) -> tuple[str, str | None]:
    """Return (text, note) trimmed, or raise with what is wrong: a label is 1-200 characters, a note at most 2,000,
    neither with a NUL (PostgreSQL text cannot hold one)."""
    text, note = (text or "").strip(), (note or "").strip() or None
    if "\x00" in text or (note and "\x00" in note):
        raise MonoscopeError("labels and notes cannot contain NUL characters")
    if not text or len(text) > MAX_LABEL_CHARS:
        raise MonoscopeError(f"a label is 1 to {MAX_LABEL_CHARS} characters after trimming, got {len(text)}")
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise MonoscopeError(f"a note is at most {MAX_NOTE_CHARS} characters, got {len(note)}")
    return text, note


def add_label(session: Session, *, basis: Basis, index: int, author: User, text: str, note: str | None,
              request_key: str | None = None) -> LabelRow:
    """Append a label to unit (basis, index) in the caller's transaction; return it as stored. With a
    `request_key` (the client's Idempotency-Key) already used by this author for this same label, return that
    label instead of adding another (a retried write); used for another label, refuse it (Conflict: 409)."""
    text, note = clean_label(text, note)
    if not 0 <= index < basis.n_units:
        raise MonoscopeError(f"basis {basis.name!r} has units 0 to {basis.n_units - 1}; there is no unit {index}")
    # Writers of one basis take turns (a row lock on PostgreSQL; SQLite's write lock already does), so a history in
    # id order is in time order too and the newest row is the last one committed; a retry waits here for the write
    # it repeats, then finds it.
    session.execute(select(Basis.id).where(Basis.id == basis.id).with_for_update())
    label = None
    if request_key is not None:
        label = session.scalar(select(Label).where(Label.author_id == author.id, Label.request_key == request_key))
        if label is not None and (label.basis_id, label.unit_index, label.text, label.note) != (basis.id, index,
                                                                                                 text, note):
            raise Conflict(f"Idempotency-Key {request_key!r} was used for another label: send a new key with a new "
                           "label")
    if label is None:
        label = Label(basis_id=basis.id, unit_index=index, author_id=author.id, text=text, note=note,
                      request_key=request_key)
        session.add(label)
        session.flush()
    model = session.get(Model, basis.model_id)
    return LabelRow(label.id, model.name, basis.name, index, text, note, author.name, utc(label.created))


def _labels(*, basis_id: int | None, index: int | None, author: str | None, since: datetime | None, columns,
            model_id: int | None = None):
    """Select `columns` of the labels of one basis (and unit) or one model, one author, and/or written at or after
    `since`."""
    stmt = (select(*columns).join(Basis, Basis.id == Label.basis_id).join(Model, Model.id == Basis.model_id)
            .outerjoin(User, User.id == Label.author_id))
    if basis_id is not None:
        stmt = stmt.where(Label.basis_id == basis_id)
    if model_id is not None:
        stmt = stmt.where(Basis.model_id == model_id)
    if index is not None:
        stmt = stmt.where(Label.unit_index == index)
    if author is not None:
        stmt = stmt.where(User.name == author)
    if since is not None:
        stmt = stmt.where(Label.created >= since)
    return stmt


def _since(session: Session, since: datetime | None) -> datetime | None:
    """Return `since` as the database compares it: UTC (naive on SQLite, which keeps times without an offset)."""
    if since is None:
        return None
    try:
        since = since.astimezone(timezone.utc) if since.tzinfo else since.replace(tzinfo=timezone.utc)
    except OverflowError:
        raise MonoscopeError(f"since: {since.isoformat()} is out of range") from None
    return since.replace(tzinfo=None) if session.get_bind().dialect.name == "sqlite" else since


def list_labels(session: Session, *, basis_id: int | None = None, index: int | None = None,
                author: str | None = None, since: datetime | None = None, limit: int | None = None,
                offset: int = 0, model_id: int | None = None) -> list[LabelRow]:
    """Return label rows, oldest first, of one basis (and unit) or one model, one author, and/or written at or after
    `since`."""
    if author is not None and "\x00" in author:
        return []
    stmt = _labels(basis_id=basis_id, index=index, author=author, since=_since(session, since), model_id=model_id,
                   columns=(Label.id, Model.name, Basis.name, Label.unit_index, Label.text, Label.note, User.name,
                            Label.created))
    stmt = stmt.order_by(Label.id).offset(offset).limit(limit)
    return [LabelRow(*row[:-1], utc(row[-1])) for row in session.execute(stmt)]


def count_labels(session: Session, *, basis_id: int | None = None, author: str | None = None,
                 since: datetime | None = None, model_id: int | None = None) -> int:
    """Return how many labels `list_labels` would list without a limit."""
    if author is not None and "\x00" in author:
        return 0
    stmt = _labels(basis_id=basis_id, index=None, author=author, since=_since(session, since), model_id=model_id,
                   columns=(func.count(Label.id),))
    return session.scalar(stmt) or 0


def utc(moment: datetime) -> datetime:
    """Return a stored time as an aware UTC datetime (SQLite hands them back without an offset)."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
