"""Engines, sessions and schema migrations for SQLite (default) and PostgreSQL.

The schema exists only through Alembic (migrations/); `upgrade` runs them programmatically so the CLI, the server
and the tests all build the same database. SQLite gets WAL (readers never block the ingest writer) and
foreign keys (cascading deletes of units and examples).
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from app.resources import resource
from sae.errors import MonoscopeError

MIGRATIONS = resource("migrations")


def _normalised(url: str) -> str:
    """Return the URL with PostgreSQL mapped to the psycopg 3 driver (the one we install)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise MonoscopeError(f"not a database URL: {url!r} (e.g. sqlite:///monoscope.db or postgresql://...)") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif not parsed.drivername.startswith(("sqlite", "postgresql")):
        raise MonoscopeError(f"unsupported database {parsed.drivername!r}: use sqlite or postgresql")
    return parsed.render_as_string(hide_password=False)


def shown_url(url: str) -> str:
    """Return a database URL as commands print it: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")  # concurrent label writes wait for the lock instead of failing
    cursor.close()


@lru_cache(maxsize=16)
def make_engine(url: str) -> Engine:
    """Return the (cached, one per URL) engine for a database URL."""
    url = _normalised(url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # max_overflow=-1: a checkout never waits for a free connection (SQLite's are cheap). The web app reads on
        # its event loop (app.web.deps.run_db), where a wait would stall the requests holding the others.
        engine = create_engine(url, connect_args={"check_same_thread": False}, max_overflow=-1)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def session_factory(url: str) -> sessionmaker[Session]:
    """Return a session maker bound to the URL's engine."""
    return sessionmaker(make_engine(url), expire_on_commit=False)


@contextmanager
def write_transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """Yield a session in one write transaction, committed when the block ends (rolled back on an error).

    On SQLite it takes the write lock first (BEGIN IMMEDIATE): a transaction that reads and then writes would
    otherwise fail at once with "database is locked" when another writer got in between, where waiting for the
    lock (busy_timeout) is what concurrent label writers need.
    """
    with sessions.begin() as session:
        if session.get_bind().dialect.name == "sqlite":
            session.connection().exec_driver_sql("BEGIN IMMEDIATE")
        yield session


@contextmanager
def read_snapshot(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """Yield a session whose reads all see one committed state: a re-ingest that commits while a long read (an
    export) runs is not seen half-way. PostgreSQL: REPEATABLE READ; SQLite: an explicit BEGIN (its driver opens
    no transaction for reads), which in WAL mode pins the snapshot of the first read."""
    with sessions() as session:
        if session.get_bind().dialect.name == "sqlite":
            session.connection().exec_driver_sql("BEGIN")
        else:
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        yield session


def checkpoint(url: str) -> None:
    """After a large write (an ingest): on SQLite, copy the write-ahead log into the database and truncate it. WAL
    mode deletes the log only when the last connection closes, so with a server reading the database the log
    stayed as large as everything the ingest wrote (~200 MB for the demo). It waits for readers (busy_timeout).
    Nothing to do on PostgreSQL."""
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def _alembic_config(engine: Engine | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (default: the newest schema)."""
    from alembic import command
    from sqlalchemy.exc import OperationalError

    try:
        command.upgrade(_alembic_config(make_engine(url)), revision)
    except OperationalError as e:
        raise MonoscopeError(f"cannot open database {url}: {e.orig}") from None


def check_schema(engine: Engine) -> None:
    """Refuse, in one line, a database whose schema is not the one this code was written for: an older one (run
    `monoscope db upgrade`) or one from newer code, instead of failing on the first query that meets it."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        where = engine.url.render_as_string(hide_password=True)
        raise MonoscopeError(f"the database at {where} has schema {current or 'none'}, this code needs {head}: run "
                             f"`monoscope db upgrade --db {where}` (or `monoscope ingest`) first")


def downgrade(url: str, revision: str = "base") -> None:
    """Take the database at `url` back to `revision` (default: empty)."""
    from alembic import command

    command.downgrade(_alembic_config(make_engine(url)), revision)
