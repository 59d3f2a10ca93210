"""A model's vocabulary as stored at ingest: each token id's display string."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.models import Token


def token_strings(session: Session, model_id: int) -> list[str]:
    """Return the display string of every token id of a model ("" for an id the vocabulary skips)."""
    rows = session.execute(select(Token.token_id, Token.text).where(Token.model_id == model_id)).all()
    strings = [""] * (max((i for i, _ in rows), default=-1) + 1)
    for token_id, text in rows:
        strings[token_id] = text
    return strings
