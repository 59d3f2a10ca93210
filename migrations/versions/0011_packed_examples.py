"""One `example` row per unit and kind with its windows packed (app.store.models.Example) in place of one row per
window: ingest wrote 150 rows a unit (2.5M for 16,384 features) and every reader took a unit's windows of a kind
together anyway. Stored windows are carried over, packed in page order (top by rank; samples by interval, then
rank), a block of units at a time; the downgrade unpacks them again. Self-contained (no app imports): the packing
here is the format's definition at this revision.

Revision ID: 0011
Revises: 0010
"""

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None
BLOCK = 2_000  # units a step: bounded memory for any database
TOP_KINDS = ("top", "review_top")


def _table(name: str, *middle: sa.Column) -> sa.Table:
    """Create an example table of either layout: its own columns between the kind and the window arrays."""
    return op.create_table(
        name,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("unit_id", sa.Integer(), sa.ForeignKey("unit.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        *middle,
        sa.Column("token_ids", sa.LargeBinary(), nullable=False),
        sa.Column("activations", sa.LargeBinary(), nullable=False),
        sa.Column("effects", sa.LargeBinary(), nullable=True),
    )


def _unit_blocks(bind) -> list[tuple[int, int]]:
    """[low, high) ranges of unit ids, BLOCK units each."""
    ids = [i for (i,) in bind.execute(sa.text("SELECT id FROM unit ORDER BY id"))]
    return [(ids[s], ids[min(s + BLOCK, len(ids)) - 1] + 1) for s in range(0, len(ids), BLOCK)]


def upgrade() -> None:
    bind = op.get_bind()
    packed = _table("example_packed", sa.Column("n", sa.Integer(), nullable=False),
                    sa.Column("width", sa.Integer(), nullable=False), sa.Column("buckets", sa.LargeBinary()),
                    sa.Column("values", sa.LargeBinary(), nullable=False))
    old = sa.table("example", *(sa.column(c) for c in ("unit_id", "kind", "bucket", "rank", "value", "token_ids",
                                                         "activations", "effects")))
    for low, high in _unit_blocks(bind):
        rows = bind.execute(sa.select(old.c.unit_id, old.c.kind, old.c.bucket, old.c.value, old.c.token_ids,
                                      old.c.activations, old.c.effects)
                            .where(old.c.unit_id >= low, old.c.unit_id < high)
                            .order_by(old.c.unit_id, old.c.kind, old.c.bucket, old.c.rank)).all()
        groups: dict[tuple[int, str], list] = {}
        for row in rows:
            groups.setdefault((row[0], row[1]), []).append(row)
        out = []
        for (unit_id, kind), group in groups.items():
            effects = [r[6] for r in group]
            out.append(dict(
                unit_id=unit_id, kind=kind, n=len(group), width=len(group[0][4]) // 4,
                buckets=None if kind in TOP_KINDS else np.array([r[2] for r in group], "<i4").tobytes(),
                values=np.array([r[3] for r in group], "<f4").tobytes(),
                token_ids=b"".join(bytes(r[4]) for r in group), activations=b"".join(bytes(r[5]) for r in group),
                effects=None if any(e is None for e in effects) else b"".join(bytes(e) for e in effects)))
        if out:
            bind.execute(packed.insert(), out)
    op.drop_table("example")  # its index goes with it
    op.rename_table("example_packed", "example")
    op.create_index("ix_example_unit", "example", ["unit_id", "kind"])


def downgrade() -> None:
    bind = op.get_bind()
    windows = _table("example_windows", sa.Column("bucket", sa.Integer()),
                     sa.Column("rank", sa.Integer(), nullable=False), sa.Column("value", sa.Float(), nullable=False))
    packed = sa.table("example", *(sa.column(c) for c in ("unit_id", "kind", "n", "width", "buckets", "values",
                                                            "token_ids", "activations", "effects")))
    for low, high in _unit_blocks(bind):
        out = []
        for unit_id, kind, n, width, buckets, values, ids, acts, effects in bind.execute(
                sa.select(*packed.c).where(packed.c.unit_id >= low, packed.c.unit_id < high)):
            bucket = [None] * n if buckets is None else np.frombuffer(buckets, "<i4").tolist()
            value, size = np.frombuffer(values, "<f4").tolist(), 4 * width
            for i in range(n):
                part = slice(i * size, (i + 1) * size)
                rank = sum(1 for b in bucket[:i] if b == bucket[i])
                out.append(dict(unit_id=unit_id, kind=kind, bucket=bucket[i], rank=rank, value=value[i],
                                token_ids=bytes(ids[part]), activations=bytes(acts[part]),
                                effects=None if effects is None else bytes(effects[part])))
        if out:
            bind.execute(windows.insert(), out)
    op.drop_table("example")
    op.rename_table("example_windows", "example")
    op.create_index("ix_example_unit", "example", ["unit_id", "kind", "bucket", "rank"])
