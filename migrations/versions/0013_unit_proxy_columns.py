"""A unit's statistics against the specificity proxies as two byte columns of its row (`unit.proxy_stats`: float32
[K, 5], NaN where undefined; `unit.proxy_hists`: a zstd frame of int32 K, I, B, then int32 counts and float64
activation sums [K, I, B]; app/store/proxy_columns.py) in place of `unit_proxy`'s row per unit and proxy: fourteen rows
a unit, each with a foreign key and a unique index, had been a quarter of a PostgreSQL ingest. K is the basis's proxies
in `basis.config["proxies"]` order (`unit_proxy.position`). Values move unchanged both ways (the statistics are the
analysis's float32; the sums stay as stored, rounded to 3 decimals, which rounding again keeps); columns are added and
dropped in place (see 0006). The steps go a block of units at a time. Self-contained (no app imports).

Revision ID: 0013
Revises: 0012
"""

import numpy as np
import sqlalchemy as sa
import zstandard
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None
STATS = ("corr", "corr_pos", "fire_share", "act_share", "recall")
BLOCK = 2_000  # units a step

_proxy = sa.table("unit_proxy", sa.column("basis_id", sa.Integer), sa.column("unit_index", sa.Integer),
                  sa.column("position", sa.Integer), sa.column("proxy", sa.String),
                  *(sa.column(c, sa.Float) for c in STATS), sa.column("hist_counts", sa.JSON),
                  sa.column("hist_acts", sa.JSON))
_unit = sa.table("unit", sa.column("basis_id", sa.Integer), sa.column("index", sa.Integer),
                 sa.column("proxy_stats", sa.LargeBinary), sa.column("proxy_hists", sa.LargeBinary))


def upgrade() -> None:
    op.add_column("unit", sa.Column("proxy_stats", sa.LargeBinary(), nullable=True))
    op.add_column("unit", sa.Column("proxy_hists", sa.LargeBinary(), nullable=True))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":  # a zstd frame: TOAST's pglz would only spend time on it
        op.execute("ALTER TABLE unit ALTER COLUMN proxy_hists SET STORAGE EXTERNAL")
    compress = zstandard.ZstdCompressor(level=1).compress
    tops = sa.select(_proxy.c.basis_id, sa.func.max(_proxy.c.unit_index)).group_by(_proxy.c.basis_id)
    for basis_id, top in bind.execute(tops).all():
        for low in range(0, top + 1, BLOCK):
            units: dict[int, list] = {}
            for r in bind.execute(sa.select(_proxy).where(
                    _proxy.c.basis_id == basis_id, _proxy.c.unit_index >= low, _proxy.c.unit_index < low + BLOCK)
                    .order_by(_proxy.c.unit_index, _proxy.c.position)):
                units.setdefault(r.unit_index, []).append(r)
            if units:
                bind.execute(sa.update(_unit).where(_unit.c.basis_id == basis_id, _unit.c.index == sa.bindparam("u"))
                             .values(proxy_stats=sa.bindparam("s"), proxy_hists=sa.bindparam("h")),
                             [dict(u=u, s=_stats(ps), h=_hists(ps, compress)) for u, ps in units.items()])
    op.drop_table("unit_proxy")


def _stats(rows: list) -> bytes:
    return np.array([[np.nan if getattr(r, c) is None else getattr(r, c) for c in STATS] for r in rows],
                    "<f4").tobytes()


def _hists(rows: list, compress) -> bytes:
    counts = np.array([r.hist_counts for r in rows], "<i4")
    acts = np.array([r.hist_acts for r in rows], "<f8")
    if counts.ndim != 3:  # no intervals
        counts, acts = counts.reshape(len(rows), 0, 0), acts.reshape(len(rows), 0, 0)
    return compress(np.array(counts.shape, "<i4").tobytes() + counts.tobytes() + acts.tobytes())


def downgrade() -> None:
    op.create_table(
        "unit_proxy",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("basis_id", sa.Integer(), sa.ForeignKey("basis.id", ondelete="CASCADE"), nullable=False),
        sa.Column("unit_index", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("proxy", sa.String(300), nullable=False),
        *(sa.Column(c, sa.Float(), nullable=True) for c in STATS),
        sa.Column("hist_counts", sa.JSON(), nullable=False),
        sa.Column("hist_acts", sa.JSON(), nullable=False),
        sa.UniqueConstraint("basis_id", "proxy", "unit_index"),
    )
    bind = op.get_bind()
    unzip = zstandard.ZstdDecompressor().decompress
    basis = sa.table("basis", sa.column("id", sa.Integer), sa.column("config", sa.JSON))
    for basis_id, config in bind.execute(sa.select(basis.c.id, basis.c.config)).all():
        names = [p["name"] for p in (config or {}).get("proxies", [])]
        last = -1
        while rows := bind.execute(sa.select(_unit).where(
                _unit.c.basis_id == basis_id, _unit.c.index > last, _unit.c.proxy_stats.is_not(None))
                .order_by(_unit.c.index).limit(BLOCK)).all():
            out = []
            for r in rows:
                stats = np.frombuffer(r.proxy_stats, "<f4").reshape(-1, len(STATS)).astype(np.float64)
                raw = unzip(r.proxy_hists)
                shape = tuple(np.frombuffer(raw, "<i4", 3))
                n = int(np.prod(shape))
                counts = np.frombuffer(raw, "<i4", n, 12).reshape(shape).tolist()
                acts = np.frombuffer(raw, "<f8", n, 12 + 4 * n).reshape(shape).tolist()
                out += [dict(basis_id=basis_id, unit_index=r.index, position=k, proxy=name, hist_counts=counts[k],
                             hist_acts=acts[k], **{c: None if v != v else v for c, v in zip(STATS, stats[k].tolist())})
                        for k, name in enumerate(names)]
            if out:
                bind.execute(sa.insert(_proxy), out)
            last = rows[-1].index
    op.drop_column("unit", "proxy_hists")
    op.drop_column("unit", "proxy_stats")
