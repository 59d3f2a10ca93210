"""The feature map page: every mapped unit of one model with what the map colours and hovers by."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.read.match_schemas import FeatureMap, MapPoint
from app.read.queries.bases import NEWEST_MODEL_FIRST, find_model_id, model_bases, model_param
from app.read.queries.labels import labels
from app.read.unit_data import split_top_tokens
from app.read.urls import unit_url
from app.store.models import Basis, Model, Unit


def feature_map(*, session: Session, model: str | None) -> FeatureMap:
    """Return the mapped units of `model` (default: the most recently ingested model with a map)."""
    stmt = select(Model).join(Basis, Basis.model_id == Model.id).join(Unit, Unit.basis_id == Basis.id).where(
        Unit.map_x.is_not(None), Basis.status == "ready")
    if model is not None:
        find_model_id(session, model)
        stmt = stmt.where(Model.name == model)
    m = session.scalar(stmt.order_by(*NEWEST_MODEL_FIRST).limit(1))
    if m is None:
        return FeatureMap(model=model, bases=[], points=[])
    param = model_param(session, m)
    bases = [b for b in model_bases(session, m) if b.kind == "sae"]
    rows = session.execute(select(Unit.basis_id, Unit.index, Unit.map_x, Unit.map_y, Unit.log10_density,
                                  Unit.top_tokens)
                           .where(Unit.basis_id.in_([b.id for b in bases]), Unit.map_x.is_not(None))
                           .order_by(Unit.basis_id, Unit.index)).all()
    names = {b.id: b.name for b in bases}
    wanted: dict[int, list[int]] = {}
    for r in rows:
        wanted.setdefault(r.basis_id, []).append(r.index)
    found = labels(session, wanted)
    points = [MapPoint.model_construct(basis=names[r.basis_id], index=r.index, x=r.map_x, y=r.map_y,
                                       log10_density=r.log10_density, label=found.get((r.basis_id, r.index)),
                                       top_tokens=split_top_tokens(r.top_tokens)[:3],
                                       url=unit_url(names[r.basis_id], r.index, param)) for r in rows]
    return FeatureMap(model=m.name, bases=sorted({p.basis for p in points}), points=points)
