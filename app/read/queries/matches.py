"""The matches page: for every pair of bases joined by `monoscope match`, the distribution of each unit's best
activation correlation in the other basis (the paper's universality figure: features against neurons)."""

from __future__ import annotations

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from app.read.match_schemas import MatchDistribution, Matches
from app.read.queries.family import SPLIT_CORRELATION
from app.read.urls import basis_url
from app.store.models import Basis, Model, Unit, UnitLink

BINS = 20  # histogram bins over correlations -1 .. 1
MAX_SPLIT = 5  # split counts are 0, 1, ..., MAX_SPLIT or more


def matches(*, session: Session) -> Matches:
    """Return one distribution per (source basis, target basis) with best-match links, sources by model and name."""
    source, target = aliased(Basis), aliased(Basis)
    source_model, target_model = aliased(Model), aliased(Model)
    pairs = session.execute(
        select(source.id, source.name, source.kind, source_model.name, target.id, target.name, target_model.name,
               func.count(), source.n_units, target.n_units, target.kind, source.model_id == target.model_id)
        .select_from(UnitLink).join(Unit, Unit.id == UnitLink.unit_id).join(source, source.id == Unit.basis_id)
        .join(source_model, source_model.id == source.model_id).join(target, target.id == UnitLink.target_basis_id)
        .join(target_model, target_model.id == target.model_id)
        .where(UnitLink.kind == "best_match", source.status == "ready", target.status == "ready")
        .group_by(source.id, source.name, source.kind, source_model.name, target.id, target.name, target_model.name,
                  source.n_units, target.n_units, target.kind, source.model_id, target.model_id)
        .order_by(source_model.name, source.name, target_model.name, target.name)).all()
    several_models = session.scalar(select(func.count()).select_from(Model)) > 1
    out = []
    for s_id, s_name, s_kind, s_model, t_id, t_name, t_model, n, s_units, t_units, t_kind, same_model in pairs:
        rows = session.execute(
            select(UnitLink.weight, UnitLink.target_index).join(Unit, Unit.id == UnitLink.unit_id)
            .where(UnitLink.kind == "best_match", Unit.basis_id == s_id, UnitLink.target_basis_id == t_id)).all()
        weights = np.array([r[0] for r in rows])
        counts, edges = np.histogram(weights, bins=BINS, range=(-1.0, 1.0))
        splits = None
        if same_model and s_kind == t_kind == "sae" and s_units > t_units:  # a larger dictionary against a smaller
            parents = np.array([r[1] for r in rows if r[0] >= SPLIT_CORRELATION], dtype=np.int64)
            children = np.bincount(parents, minlength=t_units)  # [t_units] features each one split into
            splits = np.bincount(np.minimum(children, MAX_SPLIT), minlength=MAX_SPLIT + 1).tolist()
        out.append(MatchDistribution(
            model=s_model, basis=s_name, kind=s_kind, other_model=t_model, other_basis=t_name, n_units=int(n),
            median=float(np.median(weights)), edges=edges.tolist(), counts=counts.tolist(), split_counts=splits,
            url=basis_url(s_name, s_model if several_models else None),
            other_url=basis_url(t_name, t_model if several_models else None)))
    return Matches(pairs=out)
