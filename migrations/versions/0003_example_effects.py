"""Per-token ablation effects stored with each example window (float32 little-endian, NaN where none).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: bases ingested before this revision have no effects until they are analysed and ingested again.
    op.add_column("example", sa.Column("effects", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("example") as batch:
        batch.drop_column("effects")
