"""A feature's family across dictionary sizes of one LM (the paper's feature splitting), from the best-match links
`monoscope match` wrote: the feature it split from (its best match in the next smaller dictionary) and the features
it split into (those of the next larger dictionary whose best match it is, at a correlation of at least
SPLIT_CORRELATION; the paper drew an edge at a masked activation cosine of about 0.4)."""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, aliased

from app.store.models import Basis, Unit, UnitLink
from app.web.queries.labels import labels
from app.web.schemas import Family, FamilyNode
from app.web.unit_detail import split_top_tokens
from app.web.urls import unit_url

SPLIT_CORRELATION = 0.4
_OTHER_SIZES = select(Basis.id).where(Basis.model_id == bindparam("model_id"), Basis.kind == "sae",
                                      Basis.status == "ready", Basis.n_units != bindparam("n_units")).limit(1)


def family(session: Session, b: Basis, unit: Unit, model_param: str | None) -> Family | None:
    """Return the family of an SAE unit, or None when no dictionary of another size is matched with its own."""
    if b.kind != "sae" or not session.scalar(_OTHER_SIZES, {"model_id": b.model_id, "n_units": b.n_units}):
        return None  # one cheap query where the model has one dictionary size (building the two below costs ms)
    source = aliased(Basis)
    smaller = session.execute(
        select(Basis.id, Basis.name, Basis.n_units, UnitLink.target_index, UnitLink.weight)
        .join(Basis, Basis.id == UnitLink.target_basis_id)
        .where(UnitLink.unit_id == unit.id, UnitLink.kind == "best_match", Basis.model_id == b.model_id,
               Basis.kind == "sae", Basis.n_units < b.n_units, Basis.status == "ready")
        .order_by(Basis.n_units.desc())).first()
    larger = session.execute(
        select(source.id, source.name, source.n_units, Unit.index, UnitLink.weight)
        .select_from(UnitLink).join(Unit, Unit.id == UnitLink.unit_id).join(source, source.id == Unit.basis_id)
        .where(UnitLink.kind == "best_match", UnitLink.target_basis_id == b.id, UnitLink.target_index == unit.index,
               source.model_id == b.model_id, source.kind == "sae", source.n_units > b.n_units,
               source.status == "ready", UnitLink.weight >= SPLIT_CORRELATION)
        .order_by(source.n_units, UnitLink.weight.desc())).all()
    larger = [r for r in larger if r.n_units == larger[0].n_units] if larger else []  # the next size up only
    if smaller is None and not larger:
        return None
    wanted: dict[int, list[int]] = {}
    for basis_id, _, _, index, _ in ([smaller] if smaller else []) + larger:
        wanted.setdefault(basis_id, []).append(index)
    names = _top_tokens(session, wanted)
    found = labels(session, wanted)

    def node(basis_id: int, name: str, n_units: int, index: int, weight: float) -> FamilyNode:
        return FamilyNode(basis=name, n_units=n_units, index=index, correlation=weight,
                          top_tokens=names.get((basis_id, index), [])[:3], label=found.get((basis_id, index)),
                          url=unit_url(name, index, model_param))

    return Family(parent=node(*smaller) if smaller else None, children=[node(*r) for r in larger],
                  threshold=SPLIT_CORRELATION)


def _top_tokens(session: Session, wanted: dict[int, list[int]]) -> dict[tuple[int, int], list[str]]:
    out = {}
    for basis_id, indices in wanted.items():
        rows = session.execute(select(Unit.index, Unit.top_tokens)
                               .where(Unit.basis_id == basis_id, Unit.index.in_(indices))).all()
        out.update({(basis_id, i): split_top_tokens(t) for i, t in rows})
    return out
