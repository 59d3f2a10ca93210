"""A feature's family across dictionary sizes of one LM (the paper's feature splitting), from the best-match links
`monoscope match` wrote: the feature it split from (its best match in the next smaller dictionary) and the features
it split into (those of the next larger dictionary whose best match it is, at a correlation of at least
SPLIT_CORRELATION; the paper drew an edge at a masked activation cosine of about 0.4)."""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, aliased

from app.read.queries.explanations import newest_explanation
from app.read.queries.labels import newest_label
from app.read.schemas import Family, FamilyNode
from app.read.unit_data import split_top_tokens
from app.read.urls import unit_url
from app.store.models import Basis, Unit, UnitLink

SPLIT_CORRELATION = 0.4
# Statements built once: building these costs ~20x what SQLite takes to run them (a 16,384-feature page: 2.6 ms).
_OTHER_SIZES = select(Basis.id).where(Basis.model_id == bindparam("model_id"), Basis.kind == "sae",
                                      Basis.status == "ready", Basis.n_units != bindparam("n_units")).limit(1)
_SMALLER = (select(Basis.id, Basis.name, Basis.n_units, UnitLink.target_index, UnitLink.weight)
            .join(Basis, Basis.id == UnitLink.target_basis_id)
            .where(UnitLink.unit_id == bindparam("unit_id"), UnitLink.kind == "best_match",
                   Basis.model_id == bindparam("model_id"), Basis.kind == "sae", Basis.n_units < bindparam("n_units"),
                   Basis.status == "ready")
            .order_by(Basis.n_units.desc()).limit(1))
_SOURCE = aliased(Basis)
_LARGER = (select(_SOURCE.id, _SOURCE.name, _SOURCE.n_units, Unit.index, UnitLink.weight)
           .select_from(UnitLink).join(Unit, Unit.id == UnitLink.unit_id).join(_SOURCE, _SOURCE.id == Unit.basis_id)
           .where(UnitLink.kind == "best_match", UnitLink.target_basis_id == bindparam("basis_id"),
                  UnitLink.target_index == bindparam("index"), _SOURCE.model_id == bindparam("model_id"),
                  _SOURCE.kind == "sae", _SOURCE.n_units > bindparam("n_units"), _SOURCE.status == "ready",
                  UnitLink.weight >= SPLIT_CORRELATION)
           .order_by(_SOURCE.n_units, UnitLink.weight.desc()))
_NODES = select(Unit.index, Unit.top_tokens, newest_label(Unit.basis_id, Unit.index),
                newest_explanation(Unit.basis_id, Unit.index)).where(
    Unit.basis_id == bindparam("basis_id"), Unit.index.in_(bindparam("indices", expanding=True)))


def family(session: Session, b: Basis, unit_id: int, index: int, model_param: str | None) -> Family | None:
    """Return the family of an SAE unit, or None when no dictionary of another size is matched with its own."""
    size = {"model_id": b.model_id, "n_units": b.n_units}
    if b.kind != "sae" or not session.connection().scalar(_OTHER_SIZES, size):
        return None  # one query where the model has one dictionary size
    smaller = session.connection().execute(_SMALLER, {"unit_id": unit_id, **size}).first()
    larger = session.connection().execute(_LARGER, {"basis_id": b.id, "index": index, **size}).all()
    larger = [r for r in larger if r.n_units == larger[0].n_units] if larger else []  # the next size up only
    if smaller is None and not larger:
        return None
    wanted: dict[int, list[int]] = {}
    for basis_id, _, _, index, _ in ([smaller] if smaller else []) + larger:
        wanted.setdefault(basis_id, []).append(index)
    nodes = {(basis_id, i): (split_top_tokens(tokens), label or None, explanation)
             for basis_id, indices in wanted.items()
             for i, tokens, label, explanation in session.connection().execute(_NODES, {"basis_id": basis_id,
                                                                                        "indices": indices})}

    def node(basis_id: int, name: str, n_units: int, index: int, weight: float) -> FamilyNode:
        tokens, label, explanation = nodes.get((basis_id, index), ([], None, None))
        return FamilyNode(basis=name, n_units=n_units, index=index, correlation=weight, top_tokens=tokens[:3],
                          label=label, explanation=explanation, url=unit_url(name, index, model_param))

    return Family(parent=node(*smaller) if smaller else None, children=[node(*r) for r in larger],
                  threshold=SPLIT_CORRELATION)
