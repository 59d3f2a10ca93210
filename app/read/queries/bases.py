"""Models and bases: the one "ready bases, newest model first" query, basis resolution and the overview."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.read.cache import Cache
from app.read.schemas import BasisMetrics, BasisSummary, DensityHistogram, Overview
from app.read.urls import basis_url
from app.store.models import Basis, Model
from sae.errors import MonoscopeError


class NotFound(MonoscopeError, LookupError):
    """An unknown model, basis or unit; the message says what is missing (the web answers 404, the CLI one line)."""


@dataclass(frozen=True)
class ModelRecord:
    """A model as the read model keeps it between requests (plain values: no ORM row outlives its session)."""

    id: int
    name: str
    run_dir: str
    created: datetime

    @classmethod
    def of(cls, m: Model) -> ModelRecord:
        return cls(m.id, m.name, m.run_dir, m.created)


@dataclass(frozen=True)
class BasisRecord:
    """A ready basis as the read model keeps it between requests."""

    id: int
    model_id: int
    name: str
    kind: str
    hook_name: str
    n_units: int
    d_in: int
    architecture: str | None
    metrics: dict
    density_histogram: dict
    config: dict
    version: int
    ingested_at: datetime

    @classmethod
    def of(cls, b: Basis) -> BasisRecord:
        return cls(b.id, b.model_id, b.name, b.kind, b.hook_name, b.n_units, b.d_in, b.architecture,
                   b.metrics or {}, b.density_histogram or {}, b.config or {}, b.version, b.ingested_at)

    @property
    def ingest(self) -> tuple:
        """What changes with every ingest of this basis: the key of everything cached from its units."""
        return self.id, self.version, str(self.ingested_at)


NEWEST_MODEL_FIRST = (Model.created.desc(), Model.id.desc())  # the most recently ingested model wins a tie


def ready_bases(*, name: str | None = None, model: str | None = None) -> Select:
    """Select (Basis, Model) of every ready basis (named `name`, of model `model`), newest model first; callers
    append their own order within a model."""
    stmt = select(Basis, Model).join(Model, Basis.model_id == Model.id).where(Basis.status == "ready")
    if name is not None:
        stmt = stmt.where(Basis.name == name)
    if model is not None:
        stmt = stmt.where(Model.name == model)
    return stmt.order_by(*NEWEST_MODEL_FIRST)


def check_unit(basis: Basis, index: int) -> None:
    """Raise NotFound unless `index` is a unit of `basis`."""
    if not 0 <= index < basis.n_units:
        raise NotFound(f"basis {basis.name!r} has units 0 to {basis.n_units - 1}; there is no unit {index}")


def model_bases(session: Session, model: Model) -> list[Basis]:
    """Return the ready bases of one model, neuron basis first, then by name."""
    return list(session.scalars(select(Basis).where(Basis.model_id == model.id, Basis.status == "ready")
                                .order_by(Basis.kind, Basis.name)))


def model_param(session: Session, model: Model | str) -> str | None:
    """The model name to put in links: only when several models make a basis name ambiguous."""
    return (model if isinstance(model, str) else model.name) if session.scalar(select(func.count(Model.id))) > 1 \
        else None


def find_model_id(session: Session, name: str) -> int:
    """Return the id of the model named `name`, or raise NotFound."""
    found = None if "\x00" in name else session.scalar(select(Model.id).where(Model.name == name))
    if found is None:
        raise NotFound(f"no model named {name!r}")
    return found


def resolve_basis(session: Session, name: str, model: str | None) -> tuple[Basis, Model]:
    """Return the ready basis `name` (of `model`, or of the newest model having it), or raise NotFound."""
    if "\x00" in name or (model is not None and "\x00" in model):
        raise NotFound("names cannot contain NUL characters")
    if model is not None:
        find_model_id(session, model)
    row = session.execute(ready_bases(name=name, model=model).limit(1)).first()
    if row is None:
        raise NotFound(f"no basis named {name!r}" + (f" in model {model!r}" if model else ""))
    return row[0], row[1]


RESOLVE_TTL_S = 2.0  # a re-ingested basis or a new model shows within this many seconds
_RESOLVED = Cache(ttl_s=RESOLVE_TTL_S)


def resolve(session: Session, name: str, model: str | None) -> tuple[BasisRecord, ModelRecord, str | None]:
    """Return (basis, model, model_param), remembered for RESOLVE_TTL_S: two queries fewer per page view."""
    def compute():
        b, m = resolve_basis(session, name, model)
        return BasisRecord.of(b), ModelRecord.of(m), model_param(session, m)

    return _RESOLVED.get((str(session.get_bind().url), name, model), compute)


def summary(basis: Basis | BasisRecord, model: Model | ModelRecord, model_param: str | None) -> BasisSummary:
    """Return the BasisSummary of a basis (metrics and histogram keys the schema does not know are dropped)."""
    metrics = {k: v for k, v in (basis.metrics or {}).items() if k in BasisMetrics.model_fields}
    hist = basis.density_histogram or {"edges": [], "counts": []}
    hist = {k: v for k, v in hist.items() if k in DensityHistogram.model_fields}
    return BasisSummary(model=model.name, name=basis.name, kind=basis.kind, hook_name=basis.hook_name,
                        n_units=basis.n_units, d_in=basis.d_in, architecture=basis.architecture,
                        metrics=BasisMetrics(**metrics), density_histogram=DensityHistogram(**hist),
                        url=basis_url(basis.name, model_param))


def overview(*, session: Session) -> Overview:
    """Return every ready basis of every model (newest model first; the neuron basis first within a model)."""
    rows = session.execute(ready_bases().order_by(Basis.kind, Basis.name)).all()
    multi = len({m.id for _, m in rows}) > 1
    return Overview(bases=[summary(b, m, m.name if multi else None) for b, m in rows])
