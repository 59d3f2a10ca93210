"""One unit's page (neuron or feature alike): its row, examples, links with their labels, and its cache key."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from app import unit_sections
from app.store.example_rows import PAGE_ORDER
from app.store.models import Basis, Example, Label, Model, Unit, UnitLink
from app.store.vocabulary import token_strings
from app.web.cache import Memo
from app.web.queries.bases import NotFound, check_unit, resolve, summary
from app.web.queries.family import family
from app.web.queries.labels import newest_label
from app.web.schemas import BasisSummary, Family, UnitDetail
from app.web.schemas import UnitLink as UnitLinkSchema
from app.web.unit_detail import build_unit_detail
from app.web.urls import compare_url, labels_url, unit_url


def unit_version(*, session: Session, basis: str, index: int, model: str | None) -> tuple:
    """Return a key that changes whenever the page of unit (basis, index) would: the basis's ingest and version,
    every other basis's (best matches and families link across bases), and the newest label of the units the page
    shows labels of (itself, its links' targets, the larger features whose best match it is: its family's children),
    so labelling one unit leaves every other cached page alone. For the rendered-page cache."""
    b, m, model_param = resolve(session, basis, model)
    stmt = _VERSION if b.kind == "sae" else _VERSION_NO_FAMILY  # a neuron is the target of hundreds of links
    version = tuple(session.connection().execute(stmt, {"basis_id": b.id, "index": index}).one())
    return (b.id, getattr(b, "version", None), str(getattr(b, "ingested_at", "")), index, model_param, version)


def unit_detail(*, session: Session, basis: str, index: int, model: str | None, n_top: int | None = None,
                intervals: bool = True) -> UnitDetail:
    """Return the page of one unit (neuron or feature alike); `n_top`/`intervals` trim it for side-by-side views."""
    b, m, model_param = resolve(session, basis, model)
    return detail(session, b, m, index, model_param, n_top, intervals)


def detail(session: Session, b: Basis, m: Model, index: int, model_param: str | None, n_top: int | None = None,
           intervals: bool = True) -> UnitDetail:
    """Return the UnitDetail of unit `index` of a resolved basis, or raise NotFound."""
    unit, label = _unit_row(session, b, index)
    stmt = _WINDOWS if intervals else _TOP_WINDOWS
    examples = session.execute(stmt, {"unit_id": unit.id}).all()
    if n_top is not None:
        top = [e for e in examples if e[0] == "top"][:n_top]
        examples = top + [e for e in examples if e[0] != "top"]
    return _build(session, b, m, unit, label, model_param, examples)


class UnitPage(NamedTuple):
    """What a unit page shows: the ingest-only Sections (rendered at ingest), and around them what labelling or a
    later ingest of another basis changes (its label, its links and family with their labels)."""

    basis: BasisSummary
    index: int
    label: str | None
    labels_url: str
    prev_url: str | None
    next_url: str | None
    links: list[UnitLinkSchema]
    compare_url: str | None
    family: Family | None
    sections: tuple[bytes, bytes, bytes]  # UTF-8 HTML, spliced into the page as they are (unit_sections.splice)


def unit_page(*, session: Session, basis: str, index: int, model: str | None) -> UnitPage:
    """Return unit `index`'s page: its stored sections, or sections rendered now when its basis was ingested by
    other code (an older revision, other templates)."""
    b, m, model_param = resolve(session, basis, model)
    check_unit(b, index)
    row = session.connection().execute(_PAGE_UNIT, {"basis_id": b.id, "index": index}).first()
    if row is None:
        raise NotFound(f"unit {index} of basis {b.name!r} is missing from the database")
    unit_id, blob, label = row
    sections = unit_sections.unpack(blob)
    if sections is None:
        unit, _ = _unit_row(session, b, index)
        windows = session.execute(_WINDOWS, {"unit_id": unit_id}).all()
        rendered = unit_sections.render_sections(unit, m.name, _token_strings(session, m, b), windows,
                                                 unit_sections.context_before(b.config))
        sections = tuple(part.encode() for part in rendered)
    return UnitPage(**_around(session, b, m, unit_id, index, label or None, model_param), sections=sections)


# Statements built once (building one costs more than SQLite takes to run it); a first render makes: the cache
# key's one (unit_version), the unit's sections with its label, its links with their labels, and its family's. They
# select columns, not entities, and run on the session's Connection: the ORM's execution layer would add ~50 µs each.
_ME = (bindparam("basis_id"), bindparam("index"))
_VERSION_NO_FAMILY = select(  # every ingest; the newest label of the unit and of its links' targets
    select(func.sum(Basis.version)).scalar_subquery(), select(func.count(Basis.id)).scalar_subquery(),
    select(func.max(Label.id)).where(Label.basis_id == _ME[0], Label.unit_index == _ME[1]).scalar_subquery(),
    select(func.max(Label.id)).select_from(UnitLink).join(Unit, Unit.id == UnitLink.unit_id)
    .join(Label, (Label.basis_id == UnitLink.target_basis_id) & (Label.unit_index == UnitLink.target_index))
    .where(Unit.basis_id == _ME[0], Unit.index == _ME[1]).scalar_subquery())
_VERSION = _VERSION_NO_FAMILY.add_columns(  # and of its family's children (larger features whose best match it is)
    select(func.max(Label.id)).select_from(UnitLink).join(Unit, Unit.id == UnitLink.unit_id)
    .join(Label, (Label.basis_id == Unit.basis_id) & (Label.unit_index == Unit.index))
    .where(UnitLink.target_basis_id == _ME[0], UnitLink.target_index == _ME[1], UnitLink.kind == "best_match")
    .scalar_subquery())
_UNIT = select(Unit, newest_label(Unit.basis_id, Unit.index)).where(Unit.basis_id == bindparam("basis_id"),
                                                                    Unit.index == bindparam("index"))
_WINDOWS = (select(Example.kind, Example.bucket, Example.value, Example.token_ids, Example.activations,
                   Example.effects).where(Example.unit_id == bindparam("unit_id")).order_by(*PAGE_ORDER))
_TOP_WINDOWS = _WINDOWS.where(Example.kind == "top")
_PAGE_UNIT = select(Unit.id, Unit.sections, newest_label(Unit.basis_id, Unit.index)).where(
    Unit.basis_id == bindparam("basis_id"), Unit.index == bindparam("index"))
_LINKS = (select(UnitLink.kind, Basis.name, UnitLink.target_index, UnitLink.weight, Basis.model_id,
                 Model.name.label("model"), newest_label(UnitLink.target_basis_id, UnitLink.target_index).label("label"))
          .join(Basis, Basis.id == UnitLink.target_basis_id).join(Model, Model.id == Basis.model_id)
          .where(UnitLink.unit_id == bindparam("unit_id")).order_by(UnitLink.kind, Basis.name, UnitLink.rank))


def _unit_row(session: Session, b: Basis, index: int) -> tuple[Unit, str | None]:
    """Return (unit `index` of basis b, its current label), or raise NotFound."""
    check_unit(b, index)
    row = session.execute(_UNIT, {"basis_id": b.id, "index": index}).first()
    if row is None:  # a basis mid-re-ingest never shows (status), so only a damaged database gets here
        raise NotFound(f"unit {index} of basis {b.name!r} is missing from the database")
    return row[0], row[1] or None  # an empty label clears the previous ones


def _build(session: Session, b: Basis, m: Model, unit: Unit, label: str | None, model_param: str | None,
           examples: list) -> UnitDetail:
    return build_unit_detail(unit=unit, examples=examples, strings=_token_strings(session, m, b),
                             context_before=unit_sections.context_before(b.config),
                             url=unit_url(b.name, unit.index, model_param),
                             **_around(session, b, m, unit.id, unit.index, label, model_param))


def _around(session: Session, b: Basis, m: Model, unit_id: int, index: int, label: str | None,
            model_param: str | None) -> dict:
    """Return what a unit's page and twin show besides the unit's own rows: its basis, label, neighbours' URLs, links
    (with their targets' labels), the compare view of a neuron, and a feature's family."""
    links = _links(session, unit_id, model_param, b.model_id)
    return dict(basis=summary(b, m, model_param), index=index, label=label,
                labels_url=labels_url(b.name, index, model_param),
                prev_url=unit_url(b.name, index - 1, model_param) if index > 0 else None,
                next_url=unit_url(b.name, index + 1, model_param) if index + 1 < b.n_units else None,
                links=links, compare_url=_compare_url(b, index, links, model_param),
                family=family(session, b, unit_id, index, model_param))


def _compare_url(b: Basis, index: int, links: list[UnitLinkSchema], model_param: str | None) -> str | None:
    """A neuron's side-by-side view with the features of the SAE its links name."""
    sae = next((link.basis for link in links if link.kind == "neuron_feature"), None) if b.kind == "neuron" else None
    return compare_url(sae, index, model_param) if sae else None


_STRINGS = Memo()


def _token_strings(session: Session, model: Model, b: Basis) -> list[str]:
    """Return the display string of every token id of a model, as basis `b`'s current ingest saw them (cached per
    process). Keyed by the basis's ingest: a re-ingest that brings a new vocabulary replaces the model's token rows
    in place and hides every basis of the model until each is ingested again with it."""
    return _STRINGS.get((str(session.get_bind().url), model.id, b.id, b.version, str(b.ingested_at)),
                        lambda: token_strings(session, model.id))


def _links(session: Session, unit_id: int, model_param: str | None, own_model: int) -> list[UnitLinkSchema]:
    """Return the unit's links with their targets' current labels, in one query."""
    return [UnitLinkSchema(
        kind=r.kind, basis=r.name, model=None if r.model_id == own_model else r.model, index=r.target_index,
        weight=r.weight, label=r.label or None,
        url=unit_url(r.name, r.target_index, model_param if r.model_id == own_model else r.model))
        for r in session.connection().execute(_LINKS, {"unit_id": unit_id})]
