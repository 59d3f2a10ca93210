"""The store: the ORM schema, engines and sessions, Alembic migrations, and the ingest of a run's analysis."""

from app.store.db import make_engine, session_factory, upgrade
from app.store.ingest import ingest_run

__all__ = ["ingest_run", "make_engine", "session_factory", "upgrade"]
