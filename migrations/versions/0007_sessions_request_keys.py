"""Browser sessions kept on the server, so that signing out ends a session (and "sign out everywhere" ends all of
a user's), and an optional request key on labels, so that a retried write (`Idempotency-Key`) is stored once.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "browser_session",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_browser_session_user", "browser_session", ["user_id"])
    # Plain ADD COLUMN and CREATE INDEX (no batch copy of `label`); NULL keys never collide, so old rows need none.
    op.add_column("label", sa.Column("request_key", sa.String(length=100), nullable=True))
    op.create_index("uq_label_request_key", "label", ["author_id", "request_key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_label_request_key", "label")
    op.drop_column("label", "request_key")
    op.drop_index("ix_browser_session_user", "browser_session")
    op.drop_table("browser_session")
