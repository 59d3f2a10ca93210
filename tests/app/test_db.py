"""Migrations build and remove the whole schema on SQLite and PostgreSQL (no create_all anywhere)."""

from sqlalchemy import inspect

from app.store.db import downgrade, make_engine, upgrade
from app.store.models import Base

TABLES = {"model", "token", "basis", "unit", "example", "unit_link", "label", "review", "review_unit", "review_score",
          "user", "app_secret"}


def test_migrations_upgrade_from_empty_and_downgrade(database_url):
    upgrade(database_url)
    inspector = inspect(make_engine(database_url))
    assert TABLES <= set(inspector.get_table_names())
    for table in Base.metadata.sorted_tables:  # the migrations make exactly what the ORM maps
        assert {c["name"] for c in inspector.get_columns(table.name)} == set(table.columns.keys())
    downgrade(database_url)
    assert set(inspect(make_engine(database_url)).get_table_names()) <= {"alembic_version"}
    upgrade(database_url)  # and up again: downgrade left nothing behind that would collide
    assert TABLES <= set(inspect(make_engine(database_url)).get_table_names())


def test_upgrade_keeps_what_the_first_schema_held(database_url):
    """A database made by the first migration keeps its labels and users through the second."""
    from sqlalchemy import text

    upgrade(database_url, "0001")
    engine = make_engine(database_url)
    with engine.begin() as c:
        c.execute(text("INSERT INTO model (id, name, run_dir, config, metrics) VALUES (1, 'm', '/r', '{}', '{}')"))
        c.execute(text("INSERT INTO basis (id, model_id, name, kind, hook_name, n_units, d_in, metrics, "
                       "density_histogram, config, status, version) VALUES (1, 1, 'neurons', 'neuron', 'h', 4, 4, "
                       "'{}', '{}', '{}', 'ready', 1)"))
        c.execute(text("INSERT INTO \"user\" (id, name, token_hash) VALUES (1, 'alice', 'abc')"))
        c.execute(text("INSERT INTO label (basis_id, unit_index, author_id, text) VALUES (1, 2, 1, 'commas')"))
    upgrade(database_url)
    with engine.connect() as c:
        assert c.execute(text("SELECT unit_index, text, note FROM label")).all() == [(2, "commas", None)]
        assert c.execute(text("SELECT name, revoked_at FROM \"user\"")).all() == [("alice", None)]


def test_an_app_refuses_a_schema_behind_the_code_and_names_the_command(database_url, tmp_path):
    """`monoscope serve` upgrades first; an app started any other way (a uvicorn factory, a container whose
    migrations did not run) must refuse an older schema rather than fail on its first query."""
    import subprocess
    import sys

    upgrade(database_url, "0002")
    env = {"MONOSCOPE_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    code = "from app.web import create_app; create_app()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode != 0 and "has schema 0002, this code needs 0" in out.stderr
    assert "monoscope db upgrade" in out.stderr
    upgrade(database_url)
    ok = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
