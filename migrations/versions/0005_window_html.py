"""Example windows rendered at ingest (`example.html`, zlib of escaped HTML coloured on the unit's scales) and the
unit's ablation-effect scale (`unit.max_abs_effect`), so a unit page's first render decodes and formats nothing.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: windows ingested before this revision are rendered live until their basis is ingested again.
    op.add_column("example", sa.Column("html", sa.LargeBinary(), nullable=True))
    op.add_column("unit", sa.Column("max_abs_effect", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("unit") as batch:
        batch.drop_column("max_abs_effect")
    with op.batch_alter_table("example") as batch:
        batch.drop_column("html")
