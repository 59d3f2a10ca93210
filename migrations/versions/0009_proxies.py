"""Per-unit specificity proxy statistics (`unit_proxy`), for the proxy page's ranking of a basis's units.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unit_proxy",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("basis_id", sa.Integer(), sa.ForeignKey("basis.id", ondelete="CASCADE"), nullable=False),
        sa.Column("unit_index", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("proxy", sa.String(300), nullable=False),
        sa.Column("corr", sa.Float(), nullable=True),
        sa.Column("corr_pos", sa.Float(), nullable=True),
        sa.Column("fire_share", sa.Float(), nullable=True),
        sa.Column("act_share", sa.Float(), nullable=True),
        sa.Column("recall", sa.Float(), nullable=True),
        sa.Column("hist_counts", sa.JSON(), nullable=False),
        sa.Column("hist_acts", sa.JSON(), nullable=False),
        sa.UniqueConstraint("basis_id", "proxy", "unit_index"),
    )


def downgrade() -> None:
    op.drop_table("unit_proxy")
