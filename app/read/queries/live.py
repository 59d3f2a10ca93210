"""What live inference needs from the database: a model's run folder and its ready bases."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.read.queries.bases import NEWEST_MODEL_FIRST, NotFound, model_bases, model_param
from app.store.models import Model, Unit


@dataclass(frozen=True)
class BasisRef:
    id: int
    name: str
    kind: str
    n_units: int


@dataclass(frozen=True)
class LiveContext:
    model: str
    run_dir: str
    model_param: str | None
    bases: list[BasisRef]


def live_context(*, session: Session, model: str | None) -> LiveContext:
    """Return the run folder and ready bases of `model` (default: the newest model), for live inference."""
    stmt = select(Model).order_by(*NEWEST_MODEL_FIRST).limit(1)
    if model is not None:
        stmt = select(Model).where(Model.name == model)
    m = session.scalar(stmt)
    if m is None:
        raise NotFound(f"no model named {model!r}" if model else "no model is ingested yet")
    refs = [BasisRef(b.id, b.name, b.kind, b.n_units) for b in model_bases(session, m)]
    refs.sort(key=lambda r: (r.kind != "sae", r.name))  # features first: they are the point of the tool
    return LiveContext(model=m.name, run_dir=m.run_dir, model_param=model_param(session, m), bases=refs)


def max_activations(*, session: Session, basis_id: int, indexes: list[int]) -> dict[int, float]:
    """Return {unit index: max observed activation} of the given units of one basis (absent indexes are left out)."""
    rows = session.execute(select(Unit.index, Unit.max_activation)
                           .where(Unit.basis_id == basis_id, Unit.index.in_(sorted(set(indexes)))))
    return {int(i): float(v) for i, v in rows}
