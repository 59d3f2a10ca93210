"""A unit page's ingest-only sections rendered at ingest, as one packed blob per unit (`unit.sections`,
app.unit_sections.pack) in place of one per example window (`example.html`) and the windows' effect scale
(`unit.max_abs_effect`, now inside the blob): a first render reads one row instead of ~20, and one blob compresses
~3x better than its windows one by one. The unit list now searches in memory (app/web/queries/unit_list.py), so
SQLite's covering index for its search (ix_unit_search) goes.

Columns are dropped in place (SQLite >= 3.35 has ALTER TABLE DROP COLUMN): a batch rebuild would copy every example
window, and rebuilding `unit` with foreign keys on would drop the table under its examples and links, deleting them
by cascade. The space the dropped columns held is reused by later writes; `VACUUM` returns it to the disk.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None
SEARCH_INDEX = ("basis_id", "top_tokens", "firing_count", "density", "max_activation", "index")


def upgrade() -> None:
    # Nullable: units ingested before this revision have their sections rendered live until the next ingest.
    op.add_column("unit", sa.Column("sections", sa.LargeBinary(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_unit_search", "unit")
    op.drop_column("unit", "max_abs_effect")
    op.drop_column("example", "html")


def downgrade() -> None:
    # Units and windows then render live (0005's pages do when example.html is NULL) until the next ingest.
    op.add_column("example", sa.Column("html", sa.LargeBinary(), nullable=True))
    op.add_column("unit", sa.Column("max_abs_effect", sa.Float(), nullable=True))
    op.drop_column("unit", "sections")
    if op.get_bind().dialect.name == "sqlite":
        op.create_index("ix_unit_search", "unit", list(SEARCH_INDEX))
