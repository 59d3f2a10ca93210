"""A feature's family across dictionary sizes of one LM (the paper's feature splitting), from the family edges
`monoscope match` wrote (sae/analysis/masked_cosine.py): the features of the next smaller dictionary joined to it
(its parents) and those of the next larger one (its children), each by the masked cosine of their activations, at
FAMILY_THRESHOLD or more. A graph, not a tree: a feature can have several parents (families merge as well as split).
Ultralow features have no edges."""

from __future__ import annotations

from sqlalchemy import bindparam, exists, select
from sqlalchemy.orm import Session, aliased

from app.read.queries.bases import BasisRecord
from app.read.queries.explanations import newest_explanation
from app.read.queries.labels import newest_label
from app.read.schemas import Family, FamilyNode
from app.read.unit_data import split_top_tokens
from app.read.urls import unit_url
from app.store.models import Basis, Unit, UnitLink
from sae.conventions import FAMILY_THRESHOLD

MAX_SHOWN = 8  # relatives drawn per side, strongest first (the counts say how many there are)

# Statements built once: building these costs ~20x what SQLite takes to run them (a 16,384-feature page: 2.6 ms).
SHOWN_EDGE = (UnitLink.kind == "family") & (UnitLink.weight >= FAMILY_THRESHOLD)  # the edges a page draws
_OTHER = aliased(Basis)
_OUT = (select(_OTHER.id, _OTHER.name, _OTHER.n_units, UnitLink.target_index, UnitLink.weight)
        .join(_OTHER, _OTHER.id == UnitLink.target_basis_id)
        .where(UnitLink.unit_id == bindparam("unit_id"), SHOWN_EDGE, _OTHER.status == "ready"))
_IN = (select(_OTHER.id, _OTHER.name, _OTHER.n_units, Unit.index, UnitLink.weight)
       .select_from(UnitLink).join(Unit, Unit.id == UnitLink.unit_id).join(_OTHER, _OTHER.id == Unit.basis_id)
       .where(UnitLink.target_basis_id == bindparam("basis_id"), UnitLink.target_index == bindparam("index"),
              SHOWN_EDGE, _OTHER.status == "ready"))
_ME = aliased(Unit)
_IDS = select(Unit.id).where(Unit.basis_id == bindparam("basis_id"))
_HAS_EDGES = select(  # whether any match gave this basis family edges, either way; both through ix_unit_link_kind_target
    exists().where(UnitLink.kind == "family", UnitLink.target_basis_id == bindparam("basis_id"))
    | exists().where(UnitLink.kind == "family", UnitLink.target_basis_id.in_(select(Basis.id)),
                     # the basis's id range narrows the scan to O(log n); the unit check keeps it exact
                     UnitLink.unit_id.between(_IDS.order_by(Unit.id).limit(1).scalar_subquery(),
                                              _IDS.order_by(Unit.id.desc()).limit(1).scalar_subquery()),
                     exists().where(_ME.id == UnitLink.unit_id, _ME.basis_id == bindparam("basis_id"))))
_NODES = select(Unit.index, Unit.top_tokens, newest_label(Unit.basis_id, Unit.index),
                newest_explanation(Unit.basis_id, Unit.index)).where(
    Unit.basis_id == bindparam("basis_id"), Unit.index.in_(bindparam("indices", expanding=True)))


def family(session: Session, b: BasisRecord, unit_id: int, index: int, model_param: str | None) -> Family | None:
    """Return the family of an SAE unit, or None when no match gave its dictionary family edges."""
    if b.kind != "sae":
        return None
    c = session.connection()
    rows = [*c.execute(_OUT, {"unit_id": unit_id}), *c.execute(_IN, {"basis_id": b.id, "index": index})]
    if not rows and not c.scalar(_HAS_EDGES, {"basis_id": b.id}):
        return None
    smaller = max((r.n_units for r in rows if r.n_units < b.n_units), default=None)  # the next size down
    larger = min((r.n_units for r in rows if r.n_units > b.n_units), default=None)  # and up
    parents = sorted((r for r in rows if r.n_units == smaller), key=lambda r: -r.weight)
    children = sorted((r for r in rows if r.n_units == larger), key=lambda r: -r.weight)
    wanted: dict[int, list[int]] = {}
    for basis_id, _, _, i, _ in parents[:MAX_SHOWN] + children[:MAX_SHOWN]:
        wanted.setdefault(basis_id, []).append(i)
    nodes = {(basis_id, i): (split_top_tokens(tokens), label or None, explanation)
             for basis_id, indices in wanted.items()
             for i, tokens, label, explanation in c.execute(_NODES, {"basis_id": basis_id, "indices": indices})}

    def node(basis_id: int, name: str, n_units: int, i: int, weight: float) -> FamilyNode:
        tokens, label, explanation = nodes.get((basis_id, i), ([], None, None))
        return FamilyNode(basis=name, n_units=n_units, index=i, score=weight, top_tokens=tokens[:3], label=label,
                          explanation=explanation, url=unit_url(name, i, model_param))

    return Family(parents=[node(*r) for r in parents[:MAX_SHOWN]], children=[node(*r) for r in children[:MAX_SHOWN]],
                  n_parents=len(parents), n_children=len(children), threshold=FAMILY_THRESHOLD)
