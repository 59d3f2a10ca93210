"""Database fixtures: a fresh SQLite file per test, and a throwaway PostgreSQL cluster for the session.

The cluster is Debian's PostgreSQL started with initdb + pg_ctl in a temporary folder, listening only on a unix
socket there (initdb refuses to run as root, so CI runs it as the postgres user). Without the binaries the PostgreSQL cases are skipped with the reason, except in CI
(CI=true), where that is a failure: CI installs them.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from webapp_fixtures import WritableSite, add_user, ingest_run, start_server, stop_server
from webapp_fixtures import analysed_run, browser, site  # noqa: F401  (the web tests' shared fixtures)


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb refuses to run as root: run the server as the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def postgres_server():
    """Yield the socket folder of a running throwaway PostgreSQL cluster; stop and delete it afterwards."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        message = "PostgreSQL binaries not found (apt-get install postgresql)"
        pytest.fail(message) if os.environ.get("CI") == "true" else pytest.skip(message)
    folder = Path(tempfile.mkdtemp(prefix="monoscope-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data = folder / "data"
    subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]),
                   check=True, capture_output=True)
    subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-o",
                                 f"-k {folder} -c listen_addresses='' -c fsync=off", "-l", str(folder / "log"),
                                 "-w", "start"]), check=True, capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _new_postgres_database(socket_dir: Path) -> str:
    """Create an empty database in the session cluster; return its URL (each test gets its own)."""
    from sqlalchemy import create_engine, text

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"postgresql+psycopg://postgres@/postgres?host={socket_dir}", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"postgresql+psycopg://postgres@/{name}?host={socket_dir}"


@pytest.fixture(scope="session")
def new_postgres_database(postgres_server):
    """Make an empty database in the session cluster and return its URL (for fixtures broader than a test)."""
    return lambda: _new_postgres_database(postgres_server)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """An empty database (no schema yet) on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'monoscope.db'}"
    return _new_postgres_database(request.getfixturevalue("postgres_server"))


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def writable_site(request, tmp_path_factory, analysed_run) -> WritableSite:  # noqa: F811 (pytest fixture)
    """`monoscope serve` over a database of its own (SQLite, then PostgreSQL) that label and review tests write
    to, with users alice and bob made by `monoscope user add`."""
    if request.param == "sqlite":
        db_url = f"sqlite:///{tmp_path_factory.mktemp('writable_db') / 'monoscope.db'}"
    else:
        db_url = _new_postgres_database(request.getfixturevalue("postgres_server"))
    ingest_run(analysed_run, db_url)
    tokens = {name: add_user(db_url, name) for name in ("alice", "bob")}
    server = start_server(db_url, analysed_run)
    yield WritableSite(server, tokens)
    stop_server(server)
