"""Example windows rendered at ingest (`example.html`, zlib of escaped HTML coloured on the unit's scales) and the
unit's ablation-effect scale (`unit.max_abs_effect`), so a unit page's first render decodes and formats nothing;
on SQLite, a covering index for the unit list's search (ix_unit_search).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None
SEARCH_INDEX = ("basis_id", "top_tokens", "firing_count", "density", "max_activation", "index")


def upgrade() -> None:
    # Nullable: windows ingested before this revision are rendered live until their basis is ingested again.
    op.add_column("example", sa.Column("html", sa.LargeBinary(), nullable=True))
    op.add_column("unit", sa.Column("max_abs_effect", sa.Float(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        # A search (LIKE '%text%') scans every unit of the basis: through this index it reads ~4k short rows instead
        # of ~4k unit rows of ~3 kB (11 ms -> 0.5 ms on the demo). SQLite only: PostgreSQL caps a btree entry at
        # ~2.7 kB, which a unit's joined top tokens of a large vocabulary could pass, failing the ingest.
        op.create_index("ix_unit_search", "unit", list(SEARCH_INDEX))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_unit_search", "unit")
    # In place (SQLite >= 3.35): rebuilding `unit` with foreign keys on would delete its examples and links by cascade.
    op.drop_column("unit", "max_abs_effect")
    op.drop_column("example", "html")
