"""Units' proxy statistics as stored in their rows (app.store.proxy_columns): what rebuilds a UnitData's `proxies`
from the database alone (the unit page of a stale stored form, `monoscope db render`), equal to what ingest built from
units.npz."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.read.schemas import ProxyStat
from app.read.unit_data import proxy_stat_lists
from app.store.models import Basis, Unit
from app.store.proxy_columns import hists, proxy_names, stats_array


def unit_proxy_stats(session: Session, basis_id: int, indexes: list[int]) -> dict[int, list[ProxyStat]]:
    """Return {unit index: its ProxyStat list in the analysis's order} for the given units of one basis."""
    rows = session.execute(select(Unit.index, Unit.proxy_stats, Unit.proxy_hists).where(
        Unit.basis_id == basis_id, Unit.index.in_(indexes), Unit.proxy_stats.is_not(None))).all()
    if not rows:
        return {}
    unpacked = [hists(r.proxy_hists) for r in rows]
    names = proxy_names(session.get(Basis, basis_id).config)
    lists = proxy_stat_lists(names, stats_array([r.proxy_stats for r in rows]),
                             np.stack([h.counts for h in unpacked]), np.stack([h.acts for h in unpacked]))
    return {r.index: stats for r, stats in zip(rows, lists)}
