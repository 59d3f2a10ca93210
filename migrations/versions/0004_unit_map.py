"""Feature-map coordinates on each unit (`monoscope map`: a 2-D UMAP of decoder directions); null when unmapped.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("unit", sa.Column("map_x", sa.Float(), nullable=True))
    op.add_column("unit", sa.Column("map_y", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("unit") as batch:
        batch.drop_column("map_y")
        batch.drop_column("map_x")
