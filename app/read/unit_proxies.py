"""Units' proxy statistics as stored in `unit_proxy`: what rebuilds a UnitData's `proxies` from the database alone
(the unit page of a stale stored form, `monoscope db render`), equal to what ingest built from units.npz."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.read.schemas import ProxyStat
from app.read.unit_data import PROXY_ARRAYS
from app.store.models import UnitProxy


def unit_proxy_stats(session: Session, basis_id: int, indexes: list[int]) -> dict[int, list[ProxyStat]]:
    """Return {unit index: its ProxyStat list in the analysis's order} for the given units of one basis."""
    rows = session.execute(select(UnitProxy).where(UnitProxy.basis_id == basis_id, UnitProxy.unit_index.in_(indexes))
                           .order_by(UnitProxy.unit_index, UnitProxy.position)).scalars()
    out: dict[int, list[ProxyStat]] = {}
    for r in rows:
        out.setdefault(r.unit_index, []).append(ProxyStat.model_construct(
            name=r.proxy, **{f: getattr(r, f) for f in PROXY_ARRAYS}, hist_counts=r.hist_counts,
            hist_acts=r.hist_acts))
    return out
