"""Users and their API tokens: a token is shown once at creation and stored only as its SHA-256.

A token is 32 random bytes (urlsafe base64 behind a `mst_` prefix), so a fast hash is enough: there is nothing to
brute-force, and looking a token up by its hash is one indexed query.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.models import User
from sae.errors import MonoscopeError

TOKEN_PREFIX = "mst_"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def token_hash(token: str) -> str:
    """Return the stored form of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_user(session: Session, name: str) -> tuple[User, str]:
    """Create user `name` in the caller's transaction; return (the user, their token: shown once, never stored)."""
    if not NAME_PATTERN.fullmatch(name or ""):
        raise MonoscopeError(f"user names are 1-100 letters, digits, '_', '.' or '-', starting with a letter or "
                             f"digit; got {name!r}")
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise MonoscopeError(f"user {name!r} exists already")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    user = User(name=name, token_hash=token_hash(token))
    session.add(user)
    session.flush()
    return user, token


def list_users(session: Session) -> list[User]:
    """Return every user, revoked ones too, by name."""
    return list(session.scalars(select(User).order_by(User.name)))


def revoke_user(session: Session, name: str) -> User:
    """Revoke user `name`'s token (their labels and scores stay, with their name)."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise MonoscopeError(f"no user named {name!r}")
    if user.revoked_at is None:
        user.revoked_at = datetime.now(timezone.utc)
    return user


def user_for_token(session: Session, token: str) -> User | None:
    """Return the active user whose token this is, or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    user = session.scalar(select(User).where(User.token_hash == token_hash(token)))
    return user if user is not None and user.revoked_at is None else None

