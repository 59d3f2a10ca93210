"""Pydantic models of labels and users: what the label API takes and gives, and what the label pages render."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from app.read.schemas import Schema
from app.read.text_rules import Text
from app.store.labels import MAX_LABEL_CHARS, MAX_NOTE_CHARS

REQUEST_KEY_PATTERN = r"^[!-~]+$"  # an Idempotency-Key: visible ASCII


class LabelIn(Schema):
    """A new label for a unit: 1-200 characters, not blank (it is stored trimmed), with an optional note of at
    most 2,000; neither may contain NUL."""

    text: Text(MAX_LABEL_CHARS) = Field(description="1-200 characters, not only whitespace; stored trimmed.")
    note: Text(MAX_NOTE_CHARS, blank_ok=True) | None = Field(None, description="Optional, at most 2,000 "
                                                                                 "characters; blank is none.")


class LabelOut(Schema):
    """One label as written: the unit it names, its text, author and time (UTC)."""

    id: int
    model: str
    basis: str
    index: int
    text: str
    note: str | None
    author: str | None
    created: datetime
    unit_url: str


class LabelHistory(Schema):
    """A unit's labels, newest first; the first one is the current label, unless its text is empty (the label was
    cleared): then `current` is null."""

    basis: str
    index: int
    unit_url: str
    current: LabelOut | None
    history: list[LabelOut]


class LabelListing(Schema):
    """Labels matching a filter, oldest first: `labels` is the page from `offset`; `total` counts them all."""

    model: str | None
    basis: str | None
    author: str | None
    since: datetime | None
    total: int
    offset: int
    labels: list[LabelOut]


class Me(Schema):
    """The signed-in user."""

    name: str


class SessionsEnded(Schema):
    """What "sign out everywhere" did."""

    ended: int = Field(description="Browser sessions of the user that were open and are now ended")
