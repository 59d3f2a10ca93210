"""The comparison page: a neuron beside the SAE features that load on it, and every basis's distributions."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.read.queries.bases import (
    BasisRecord,
    ModelRecord,
    NotFound,
    model_bases,
    model_param,
    ready_bases,
    resolve_basis,
)
from app.read.queries.unit import detail
from app.read.schemas import BasisDistribution, Comparison
from app.store.models import Basis, Model, Unit


def _distributions(session: Session, m: Model, bases: list[Basis]) -> list[BasisDistribution]:
    """Return the log10 density and top-token entropy of every live unit of each basis."""
    dists = []
    for b in bases:
        rows = session.execute(select(Unit.log10_density, Unit.top_token_entropy)
                               .where(Unit.basis_id == b.id, Unit.firing_count > 0).order_by(Unit.index)).all()
        dists.append(BasisDistribution(model=m.name, name=b.name, kind=b.kind,
                                       log10_density=[r[0] for r in rows if r[0] is not None],
                                       top_token_entropy=[r[1] for r in rows if r[1] is not None]))
    return dists


def comparison(*, session: Session, basis: str | None, neuron: int | None, model: str | None,
               n_features: int = 4, n_top: int = 5) -> Comparison:
    """Return a neuron beside the features of an SAE basis that load on it (default basis: the first SAE of the
    newest model), and every basis's distributions."""
    if basis is not None:
        sae, m = resolve_basis(session, basis, model)
        if sae.kind != "sae":
            raise NotFound(f"no SAE basis named {basis!r} (that is the neuron basis): pick an SAE basis to compare "
                           "its neurons with")
    else:
        row = session.execute(ready_bases(model=model).limit(1)).first()
        if row is None:
            if model is not None:
                raise NotFound(f"no model named {model!r} with an ingested basis")
            return Comparison(model=None, basis=None, sae_bases=[], neuron=None, features=[], weights=[],
                              distributions=[])
        m, sae = row[1], None
    param = model_param(session, m)
    bases = model_bases(session, m)
    if basis is None:
        sae = next((b for b in bases if b.kind == "sae"), None)
    neurons = next((b for b in bases if b.kind == "neuron"), None)
    result = dict(model=m.name, basis=sae.name if sae else None, sae_bases=[b.name for b in bases if b.kind == "sae"],
                  distributions=_distributions(session, m, bases), neuron=None, features=[], weights=[])
    if neurons is None:
        return Comparison(**result)
    if neuron is None:  # the least specific live neuron: the paper's polysemantic example
        neuron = session.scalar(select(Unit.index).where(Unit.basis_id == neurons.id, Unit.firing_count > 0)
                                .order_by(Unit.top_token_entropy.desc().nulls_last(), Unit.index).limit(1)) or 0
    record = ModelRecord.of(m)
    result["neuron"] = detail(session, BasisRecord.of(neurons), record, neuron, param, n_top, False)
    if sae is not None:
        picked = [link for link in result["neuron"].links if link.kind == "neuron_feature" and link.basis == sae.name]
        picked = picked[:n_features]
        result["features"] = [detail(session, BasisRecord.of(sae), record, link.index, param, n_top, False)
                              for link in picked]
        result["weights"] = [link.weight for link in picked]
    return Comparison(**result)
