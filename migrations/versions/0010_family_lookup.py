"""Indexes that let a unit page ask in O(log n) whether its dictionary has family edges at all (either side of a
match): the family links into a basis, and a basis's unit ids in order (their range bounds the links out of it).

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_unit_link_kind_target", "unit_link", ["kind", "target_basis_id", "unit_id"])
    op.create_index("ix_unit_basis_id", "unit", ["basis_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_unit_basis_id", table_name="unit")
    op.drop_index("ix_unit_link_kind_target", table_name="unit_link")
