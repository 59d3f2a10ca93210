"""Browser sessions, kept on the server: a signed-in browser's cookie carries a random key, the database its SHA-256
with the user and an expiry. A request's cookie counts only while its row exists, so signing out (the row deleted)
ends the session for every copy of the cookie, and ending all of a user's rows signs them out everywhere.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.store.models import BrowserSession, User

SESSION_DAYS = 14
MAX_KEY_CHARS = 100  # a key is 43 characters; anything much longer is not one of ours


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def start_session(session: Session, user: User) -> str:
    """Store a new session of `user` in the caller's transaction and return its key (for the cookie only); the
    user's expired sessions are cleared on the way."""
    now = _now()
    session.execute(delete(BrowserSession).where(BrowserSession.user_id == user.id, BrowserSession.expires <= now))
    key = secrets.token_urlsafe(32)
    session.add(BrowserSession(id=_key_hash(key), user_id=user.id, created=now,
                               expires=now + timedelta(days=SESSION_DAYS)))
    session.flush()
    return key


def session_user(session: Session, key: str) -> User | None:
    """Return the active (not revoked) user of session `key` while it lasts, else None: one indexed query."""
    if not key or len(key) > MAX_KEY_CHARS:
        return None
    return session.scalar(select(User).join(BrowserSession, BrowserSession.user_id == User.id)
                          .where(BrowserSession.id == _key_hash(key), BrowserSession.expires > _now(),
                                 User.revoked_at.is_(None)))


def end_session(session: Session, key: str) -> int:
    """End session `key` (signing out); return how many ended (0 or 1)."""
    if not key or len(key) > MAX_KEY_CHARS:
        return 0
    return session.execute(delete(BrowserSession).where(BrowserSession.id == _key_hash(key))).rowcount or 0


def end_all_sessions(session: Session, user_id: int) -> int:
    """End every browser session of the user (signing out everywhere); return how many there were."""
    return session.execute(delete(BrowserSession).where(BrowserSession.user_id == user_id)).rowcount or 0
