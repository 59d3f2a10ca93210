"""Example rows whose window arrays are zstd-compressed (`example.codec` 1; rows written before stay 0, as they are):
ingest wrote ~60 kB of arrays a unit, 1 GB for 16,384 features, twice on SQLite (its write-ahead log, then the
database). On PostgreSQL no value of the example rows or `unit.sections` (zstd already) is TOAST-compressed again:
pglz on the example rows had taken 70% of an ingest's writes (2,560 units: 2.5 s of COPY against 0.75 s without).
The downgrade decompresses the rows, a block at a time. Self-contained (no app imports).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
import zstandard
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None
ARRAYS = ("token_ids", "activations", "effects")  # zstd frames where codec = 1
BYTES = ("buckets", "values", *ARRAYS)
BLOCK = 2_000  # rows a step of the downgrade


def upgrade() -> None:
    with op.batch_alter_table("example") as batch:
        batch.add_column(sa.Column("codec", sa.Integer(), nullable=False, server_default="0"))
    if op.get_bind().dialect.name == "postgresql":
        for column in BYTES:
            op.execute(f'ALTER TABLE example ALTER COLUMN "{column}" SET STORAGE EXTERNAL')
        op.execute("ALTER TABLE unit ALTER COLUMN sections SET STORAGE EXTERNAL")


def downgrade() -> None:
    bind = op.get_bind()
    table = sa.table("example", sa.column("id", sa.Integer), sa.column("codec", sa.Integer),
                     *(sa.column(c, sa.LargeBinary) for c in ARRAYS))
    unzip = zstandard.ZstdDecompressor().decompress
    last = 0
    while rows := bind.execute(sa.select(table.c.id, *(table.c[c] for c in ARRAYS))
                               .where(table.c.codec == 1, table.c.id > last).order_by(table.c.id).limit(BLOCK)).all():
        bind.execute(sa.update(table).where(table.c.id == sa.bindparam("row_id")).values(
            {c: sa.bindparam(f"new_{c}") for c in ARRAYS}),
            [{"row_id": r.id, **{f"new_{c}": None if getattr(r, c) is None else unzip(getattr(r, c)) for c in ARRAYS}}
             for r in rows])
        last = rows[-1].id
    with op.batch_alter_table("example") as batch:
        batch.drop_column("codec")
    if bind.dialect.name == "postgresql":
        for column in BYTES:
            op.execute(f'ALTER TABLE example ALTER COLUMN "{column}" SET STORAGE EXTENDED')
        op.execute("ALTER TABLE unit ALTER COLUMN sections SET STORAGE EXTENDED")
