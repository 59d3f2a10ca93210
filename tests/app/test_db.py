"""Migrations build and remove the whole schema on SQLite and PostgreSQL (no create_all anywhere)."""

from sqlalchemy import inspect

from app.store.db import downgrade, make_engine, upgrade
from app.store.models import Base

TABLES = {"model", "token", "basis", "unit", "example", "unit_link", "label", "review", "review_item", "user"}


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
