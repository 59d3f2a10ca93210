"""The matches page: for every pair of bases joined by `monoscope match`, the distribution of each unit's best
activation correlation in the other basis (the paper's universality figure: features against neurons)."""

from __future__ import annotations

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from app.store.models import Basis, Model, Unit, UnitLink
from app.web.schemas import MatchDistribution, Matches
from app.web.urls import basis_url

BINS = 20  # histogram bins over correlations -1 .. 1


def matches(*, session: Session) -> Matches:
    """Return one distribution per (source basis, target basis) with best-match links, sources by model and name."""
    source, target = aliased(Basis), aliased(Basis)
    source_model, target_model = aliased(Model), aliased(Model)
    pairs = session.execute(
        select(source.id, source.name, source.kind, source_model.name, target.id, target.name, target_model.name,
               func.count())
        .select_from(UnitLink).join(Unit, Unit.id == UnitLink.unit_id).join(source, source.id == Unit.basis_id)
        .join(source_model, source_model.id == source.model_id).join(target, target.id == UnitLink.target_basis_id)
        .join(target_model, target_model.id == target.model_id)
        .where(UnitLink.kind == "best_match", source.status == "ready", target.status == "ready")
        .group_by(source.id, source.name, source.kind, source_model.name, target.id, target.name, target_model.name)
        .order_by(source_model.name, source.name, target_model.name, target.name)).all()
    several_models = session.scalar(select(func.count()).select_from(Model)) > 1
    out = []
    for s_id, s_name, s_kind, s_model, t_id, t_name, t_model, n in pairs:
        weights = np.array(session.scalars(
            select(UnitLink.weight).join(Unit, Unit.id == UnitLink.unit_id)
            .where(UnitLink.kind == "best_match", Unit.basis_id == s_id, UnitLink.target_basis_id == t_id)).all())
        counts, edges = np.histogram(weights, bins=BINS, range=(-1.0, 1.0))
        out.append(MatchDistribution(
            model=s_model, basis=s_name, kind=s_kind, other_model=t_model, other_basis=t_name, n_units=int(n),
            median=float(np.median(weights)), edges=edges.tolist(), counts=counts.tolist(),
            url=basis_url(s_name, s_model if several_models else None),
            other_url=basis_url(t_name, t_model if several_models else None)))
    return Matches(pairs=out)
