"""Every database read of the web app, as keyword-only functions returning app.web.schemas models.

Pages and their JSON twins call the same function, so they cannot disagree; routes hold no SQL. A basis in a URL is
its name; `?model=NAME` picks the model when several are ingested (without it: the most recently ingested model that
has the basis), and links carry `model=` only when the database holds more than one model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.store.models import Basis, Example, Label, Model, Token, Unit, UnitLink
from app.web.schemas import (
    BasisDistribution,
    BasisMetrics,
    BasisSummary,
    Comparison,
    DensityHistogram,
    Overview,
    UnitDetail,
    UnitList,
    UnitListParams,
    UnitRow,
)
from app.web.schemas import UnitLink as UnitLinkSchema
from app.web.unit_detail import build_unit_detail, split_top_tokens
from app.web.urls import basis_url, compare_url, unit_url
from sae.errors import MonoscopeError


class NotFound(LookupError):
    """An unknown model, basis or unit; the message says what is missing (the web answers 404)."""


# -- models and bases -------------------------------------------------------------------------------------------------

def _model_param(session: Session, model: Model) -> str | None:
    """The model name to put in links: only when several models make a basis name ambiguous."""
    return model.name if session.scalar(select(func.count(Model.id))) > 1 else None


def _resolve_basis(session: Session, name: str, model: str | None) -> tuple[Basis, Model]:
    """Return the ready basis `name` (of `model`, or of the newest model having it), or raise NotFound."""
    if "\x00" in name or (model is not None and "\x00" in model):
        raise NotFound("names cannot contain NUL characters")
    stmt = (select(Basis, Model).join(Model, Basis.model_id == Model.id)
            .where(Basis.name == name, Basis.status == "ready"))
    if model is not None:
        if session.scalar(select(Model.id).where(Model.name == model)) is None:
            raise NotFound(f"no model named {model!r}")
        stmt = stmt.where(Model.name == model)
    row = session.execute(stmt.order_by(Model.created.desc(), Model.id.desc()).limit(1)).first()
    if row is None:
        raise NotFound(f"no basis named {name!r}" + (f" in model {model!r}" if model else ""))
    return row[0], row[1]


RESOLVE_TTL_S = 2.0  # a re-ingested basis or a new model shows within this many seconds
_RESOLVED: dict[tuple[str, str, str | None], tuple[float, Basis, Model, str | None]] = {}


def _resolve(session: Session, name: str, model: str | None) -> tuple[Basis, Model, str | None]:
    """Return (basis, model, model_param), remembered for RESOLVE_TTL_S: two queries fewer per page view."""
    key = (str(session.get_bind().url), name, model)
    hit = _RESOLVED.get(key)
    if hit is not None and time.monotonic() - hit[0] < RESOLVE_TTL_S:
        return hit[1], hit[2], hit[3]
    b, m = _resolve_basis(session, name, model)
    model_param = _model_param(session, m)
    _RESOLVED[key] = (time.monotonic(), b, m, model_param)
    return b, m, model_param


def unit_version(*, session: Session, basis: str, index: int, model: str | None) -> tuple:
    """Return a key that changes whenever the page of unit (basis, index) would: the basis's ingest and version,
    and the newest label anywhere (the page shows labels of linked units too). For the rendered-page cache."""
    b, m, model_param = _resolve(session, basis, model)
    newest_label = session.scalar(select(func.max(Label.id))) or 0
    return (b.id, getattr(b, "version", None), str(getattr(b, "ingested_at", "")), index, newest_label, model_param)


def _summary(basis: Basis, model: Model, model_param: str | None) -> BasisSummary:
    metrics = {k: v for k, v in (basis.metrics or {}).items() if k in BasisMetrics.model_fields}
    hist = basis.density_histogram or {"edges": [], "counts": []}
    hist = {k: v for k, v in hist.items() if k in DensityHistogram.model_fields}
    return BasisSummary(model=model.name, name=basis.name, kind=basis.kind, hook_name=basis.hook_name,
                        n_units=basis.n_units, d_in=basis.d_in, architecture=basis.architecture,
                        metrics=BasisMetrics(**metrics), density_histogram=DensityHistogram(**hist),
                        url=basis_url(basis.name, model_param))


def overview(*, session: Session) -> Overview:
    """Return every ready basis of every model (newest model first; the neuron basis first within a model)."""
    rows = session.execute(select(Basis, Model).join(Model, Basis.model_id == Model.id)
                           .where(Basis.status == "ready")
                           .order_by(Model.created.desc(), Model.id.desc(), Basis.kind, Basis.name)).all()
    multi = len({m.id for _, m in rows}) > 1
    return Overview(bases=[_summary(b, m, m.name if multi else None) for b, m in rows])


# -- labels -----------------------------------------------------------------------------------------------------------

def _latest_labels(basis_id: int):
    """Subquery (unit_index, text) of the newest label of each labelled unit of a basis (labels are append-only)."""
    newest = (select(func.max(Label.id).label("id")).where(Label.basis_id == basis_id)
              .group_by(Label.unit_index).subquery())
    return select(Label.unit_index, Label.text).join(newest, Label.id == newest.c.id).subquery()


def labels_for(*, session: Session, basis_id: int, indexes: list[int]) -> dict[int, str]:
    """Return {unit index: current label} for those of `indexes` that have a non-empty label."""
    return {i: t for (_, i), t in _labels(session, {basis_id: indexes}).items()}


def _labels(session: Session, wanted: dict[int, list[int]]) -> dict[tuple[int, int], str]:
    """Return {(basis id, unit index): newest non-empty label} for {basis id: [unit indexes]}, in one query."""
    wanted = {b: idx for b, idx in wanted.items() if idx}
    if not wanted:
        return {}
    where = or_(*[(Label.basis_id == b) & Label.unit_index.in_(sorted(set(idx))) for b, idx in wanted.items()])
    newest: dict[tuple[int, int], str] = {}
    for b, i, text in session.execute(select(Label.basis_id, Label.unit_index, Label.text).where(where)
                                      .order_by(Label.id)):
        newest[(b, i)] = text  # append-only history: the last one wins
    return {key: text for key, text in newest.items() if text}


# -- unit list --------------------------------------------------------------------------------------------------------

def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def unit_list(*, session: Session, basis: str, model: str | None, params: UnitListParams) -> UnitList:
    """Return one page of a basis's units, filtered, searched and sorted as `params` says."""
    b, m, model_param = _resolve(session, basis, model)
    labels = _latest_labels(b.id)
    label = labels.c.text
    stmt = select(Unit, label).outerjoin(labels, labels.c.unit_index == Unit.index).where(Unit.basis_id == b.id)
    if params.min_density is not None:
        stmt = stmt.where(Unit.density >= params.min_density)
    if params.max_density is not None:
        stmt = stmt.where(Unit.density <= params.max_density)
    if params.labelled != "any":
        has = (label.is_not(None)) & (label != "")
        stmt = stmt.where(has if params.labelled == "yes" else ~has)
    if params.dead != "any":
        stmt = stmt.where(Unit.firing_count == 0 if params.dead == "only" else Unit.firing_count > 0)
    if params.q.strip():
        pattern = _like(params.q.strip())
        stmt = stmt.where(or_(label.ilike(pattern, escape="\\"), Unit.top_tokens.ilike(pattern, escape="\\")))
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    columns = {"index": Unit.index, "density": Unit.density, "max_activation": Unit.max_activation, "label": label}
    key = columns[params.sort]
    order = [key.desc() if params.desc else key.asc()]
    if params.sort == "label":  # unlabelled units last, whatever the direction
        order = [label.is_(None), (label == ""), *order]
    stmt = stmt.order_by(*order, Unit.index).offset((params.page - 1) * params.per_page).limit(params.per_page)
    rows = [UnitRow(index=u.index, firing_count=u.firing_count, density=u.density, log10_density=u.log10_density,
                    max_activation=u.max_activation, mean_activation=u.mean_activation,
                    top_token_entropy=u.top_token_entropy, top_tokens=split_top_tokens(u.top_tokens),
                    label=text or None, url=unit_url(b.name, u.index, model_param))
            for u, text in session.execute(stmt)]
    return UnitList(basis=_summary(b, m, model_param), params=params, total=total,
                    pages=max(1, math.ceil(total / params.per_page)), units=rows)


# -- unit page --------------------------------------------------------------------------------------------------------

def unit_detail(*, session: Session, basis: str, index: int, model: str | None, n_top: int | None = None,
                intervals: bool = True) -> UnitDetail:
    """Return the page of one unit (neuron or feature alike); `n_top`/`intervals` trim it for side-by-side views."""
    b, m, model_param = _resolve(session, basis, model)
    return _detail(session, b, m, index, model_param, n_top, intervals)


def _detail(session, b: Basis, m: Model, index: int, model_param, n_top=None, intervals=True) -> UnitDetail:
    unit = session.scalar(select(Unit).where(Unit.basis_id == b.id, Unit.index == index))
    if unit is None:
        raise NotFound(f"basis {b.name!r} has units 0 to {b.n_units - 1}; there is no unit {index}")
    links, label = _links(session, unit, model_param, b.id)
    compare = None
    if b.kind == "neuron":
        sae = next((link.basis for link in links if link.kind == "neuron_feature"), None)
        compare = compare_url(sae, index, model_param) if sae else None
    stmt = (select(Example.kind, Example.bucket, Example.value, Example.token_ids, Example.activations)
            .where(Example.unit_id == unit.id).order_by(Example.kind.desc(), Example.bucket, Example.rank))
    if not intervals:
        stmt = stmt.where(Example.kind == "top")
    examples = session.execute(stmt).all()
    if n_top is not None:
        top = [e for e in examples if e[0] == "top"][:n_top]
        examples = top + [e for e in examples if e[0] != "top"]
    return build_unit_detail(
        basis=b, unit=unit, examples=examples, strings=_token_strings(session, m), summary=_summary(b, m, model_param),
        label=label, links=links,
        url=unit_url(b.name, index, model_param),
        prev_url=unit_url(b.name, index - 1, model_param) if index > 0 else None,
        next_url=unit_url(b.name, index + 1, model_param) if index + 1 < b.n_units else None,
        compare_url=compare)


_STRINGS: dict[tuple[str, int, str], list[str]] = {}


def _token_strings(session: Session, model: Model) -> list[str]:
    """Return the display string of every token id of a model (cached per process: a vocabulary never changes
    for a given model row and creation time)."""
    key = (str(session.get_bind().url), model.id, str(model.created))
    if key not in _STRINGS:
        rows = session.execute(select(Token.token_id, Token.text).where(Token.model_id == model.id)).all()
        strings = [""] * (max((r[0] for r in rows), default=-1) + 1)
        for token_id, text in rows:
            strings[token_id] = text
        _STRINGS[key] = strings
    return _STRINGS[key]


def _links(session: Session, unit: Unit, model_param: str | None, own_basis: int
           ) -> tuple[list[UnitLinkSchema], str | None]:
    """Return (the unit's links, with their targets' labels; the unit's own label), in two queries."""
    rows = session.execute(select(UnitLink.kind, Basis.name, UnitLink.target_basis_id, UnitLink.target_index,
                                  UnitLink.weight).join(Basis, Basis.id == UnitLink.target_basis_id)
                           .where(UnitLink.unit_id == unit.id).order_by(UnitLink.kind, Basis.name, UnitLink.rank)).all()
    wanted: dict[int, list[int]] = {own_basis: [unit.index]}
    for r in rows:
        wanted.setdefault(r.target_basis_id, []).append(r.target_index)
    labels = _labels(session, wanted)
    links = [UnitLinkSchema.model_construct(kind=r.kind, basis=r.name, index=r.target_index, weight=r.weight,
                                            label=labels.get((r.target_basis_id, r.target_index)),
                                            url=unit_url(r.name, r.target_index, model_param)) for r in rows]
    return links, labels.get((own_basis, unit.index))


# -- comparison -------------------------------------------------------------------------------------------------------

def comparison(*, session: Session, basis: str | None, neuron: int | None, model: str | None,
               n_features: int = 4, n_top: int = 5) -> Comparison:
    """Return a neuron beside the features of an SAE basis that load on it, and every basis's distributions."""
    if basis is not None:
        sae, m = _resolve_basis(session, basis, model)
        if sae.kind != "sae":
            raise MonoscopeError(f"basis {basis!r} is a neuron basis; pick an SAE basis to compare with")
    else:
        stmt = select(Basis, Model).join(Model, Basis.model_id == Model.id).where(Basis.status == "ready")
        if model is not None:
            stmt = stmt.where(Model.name == model)
        row = session.execute(stmt.order_by(Model.created.desc(), Model.id.desc(), Basis.kind.desc(),
                                            Basis.name)).first()
        if row is None:
            if model is not None:
                raise NotFound(f"no model named {model!r} with an ingested basis")
            return Comparison(model=None, basis=None, sae_bases=[], neuron=None, features=[], weights=[],
                              distributions=[])
        m = row[1]
        sae = session.scalar(select(Basis).where(Basis.model_id == m.id, Basis.kind == "sae", Basis.status == "ready")
                             .order_by(Basis.name).limit(1))
    model_param = _model_param(session, m)
    bases = session.scalars(select(Basis).where(Basis.model_id == m.id, Basis.status == "ready")
                            .order_by(Basis.kind, Basis.name)).all()
    dists = []
    for b in bases:
        rows = session.execute(select(Unit.log10_density, Unit.top_token_entropy)
                               .where(Unit.basis_id == b.id, Unit.firing_count > 0).order_by(Unit.index)).all()
        dists.append(BasisDistribution(model=m.name, name=b.name, kind=b.kind,
                                       log10_density=[r[0] for r in rows if r[0] is not None],
                                       top_token_entropy=[r[1] for r in rows if r[1] is not None]))
    neurons = next((b for b in bases if b.kind == "neuron"), None)
    result = dict(model=m.name, basis=sae.name if sae else None, sae_bases=[b.name for b in bases if b.kind == "sae"],
                  distributions=dists, neuron=None, features=[], weights=[])
    if neurons is None:
        return Comparison(**result)
    if neuron is None:  # the least specific live neuron: the paper's polysemantic example
        neuron = session.scalar(select(Unit.index).where(Unit.basis_id == neurons.id, Unit.firing_count > 0)
                                .order_by(Unit.top_token_entropy.desc().nulls_last(), Unit.index).limit(1)) or 0
    result["neuron"] = _detail(session, neurons, m, neuron, model_param, n_top, False)
    if sae is not None:
        picked = [link for link in result["neuron"].links if link.kind == "neuron_feature" and link.basis == sae.name]
        picked = picked[:n_features]
        result["features"] = [_detail(session, sae, m, link.index, model_param, n_top, False) for link in picked]
        result["weights"] = [link.weight for link in picked]
    return Comparison(**result)


# -- live inference ---------------------------------------------------------------------------------------------------

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
    stmt = select(Model).order_by(Model.created.desc(), Model.id.desc()).limit(1)
    if model is not None:
        stmt = select(Model).where(Model.name == model)
    m = session.scalar(stmt)
    if m is None:
        raise NotFound(f"no model named {model!r}" if model else "no model is ingested yet")
    bases = session.scalars(select(Basis).where(Basis.model_id == m.id, Basis.status == "ready")
                            .order_by(Basis.kind, Basis.name)).all()
    refs = [BasisRef(b.id, b.name, b.kind, b.n_units) for b in bases]
    refs.sort(key=lambda r: (r.kind != "sae", r.name))  # features first: they are the point of the tool
    return LiveContext(model=m.name, run_dir=m.run_dir, model_param=_model_param(session, m), bases=refs)
