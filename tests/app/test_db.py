"""Migrations build and remove the whole schema on SQLite and PostgreSQL (no create_all anywhere)."""

from sqlalchemy import inspect

from app.store.db import downgrade, make_engine, upgrade
from app.store.models import Base

TABLES = {"model", "token", "basis", "unit", "example", "unit_link", "label", "review", "review_unit", "review_score",
          "user", "app_secret", "browser_session"}


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


def _model_and_basis(c) -> None:
    """Insert model 1 with its neuron basis 1 (4 units), in SQL every revision accepts."""
    from sqlalchemy import text

    c.execute(text("INSERT INTO model (id, name, run_dir, config, metrics) VALUES (1, 'm', '/r', '{}', '{}')"))
    c.execute(text("INSERT INTO basis (id, model_id, name, kind, hook_name, n_units, d_in, metrics, "
                   "density_histogram, config, status, version) VALUES (1, 1, 'neurons', 'neuron', 'h', 4, 4, "
                   "'{}', '{}', '{}', 'ready', 1)"))


def test_upgrade_keeps_what_the_first_schema_held(database_url):
    """A database made by the first migration keeps its labels and users through the second."""
    from sqlalchemy import text

    upgrade(database_url, "0001")
    engine = make_engine(database_url)
    with engine.begin() as c:
        _model_and_basis(c)
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
    import os

    # the code under test: a checkout run with PYTHONPATH (not the installed package) passes it on
    env = {"MONOSCOPE_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin",
           **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}}
    code = "from app.web import create_app; create_app()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode != 0 and "has schema 0002, this code needs 0" in out.stderr
    assert "monoscope db upgrade" in out.stderr
    upgrade(database_url)
    ok = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr


def test_downgrades_and_upgrades_keep_units_examples_and_links(database_url):
    """Columns come and go in place: a table rebuild on SQLite (foreign keys on) would delete a unit's examples and
    links by cascade."""
    from sqlalchemy import text

    upgrade(database_url)
    engine = make_engine(database_url)
    with engine.begin() as c:
        _model_and_basis(c)
        c.execute(text("INSERT INTO unit (id, basis_id, \"index\", firing_count, density, max_activation, "
                       "mean_activation, top_tokens, act_hist, logit_hist, top_logits, bottom_logits, interval_edges, "
                       "interval_counts) VALUES (1, 1, 0, 3, 0.5, 2.0, 1.0, 'a', '{}', '{}', '[]', '[]', '[]', '[]')"))
        c.execute(text("INSERT INTO example (unit_id, kind, rank, value, token_ids, activations) "
                       "VALUES (1, 'top', 0, 2.0, :b, :b)"), {"b": b"\x00" * 8})
        c.execute(text("INSERT INTO unit_link (unit_id, kind, rank, target_basis_id, target_index, weight) "
                       "VALUES (1, 'neuron_feature', 0, 1, 0, 0.9)"))

    def counts() -> tuple:
        with engine.connect() as c:
            return tuple(c.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in ("unit", "example", "unit_link"))

    assert counts() == (1, 1, 1)
    downgrade(database_url, "0004")
    assert counts() == (1, 1, 1)
    upgrade(database_url)
    assert counts() == (1, 1, 1)
