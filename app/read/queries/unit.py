"""One unit (neuron or feature alike), for its page and its JSON twin: one read, one UnitView; and its cache key."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from app.present import unit_sections
from app.present.window_batch import windows_html, windows_json
from app.present.window_pieces import Vocabulary
from app.read.cache import Cache
from app.read.queries.bases import BasisRecord, ModelRecord, NotFound, check_unit, resolve, summary
from app.read.queries.explanations import explanations_state, newest_explanation, unit_explanations
from app.read.queries.family import SHOWN_EDGE, family
from app.read.queries.labels import newest_label
from app.read.unit_proxies import unit_proxy_stats
from app.read.schemas import UnitAround, UnitData, UnitDetail
from app.read.schemas import UnitLink as UnitLinkSchema
from app.read.unit_data import context_before, unit_data
from app.read.urls import compare_url, labels_url, unit_url
from app.read.windows import Batch, open_batch, row_windows
from app.store.example_rows import OPEN, PAGE_ORDER, WINDOW_COLUMNS
from app.store.models import Basis, Example, Label, Model, Unit, UnitLink
from app.store.vocabulary import token_strings


def unit_version(*, session: Session, basis: str, index: int, model: str | None) -> tuple:
    """Return a key that changes whenever the page of unit (basis, index) would: the basis's ingest and version,
    every other basis's (best matches and families link across bases), and the newest label of the units the page
    shows labels of (itself, its links' targets, its family: edges stored from either end), so labelling one unit
    leaves every other cached page alone; and the explanations' state (an autointerp run, rare, changes every page:
    its unit's explanations and those its links show). For the rendered-page cache."""
    b, _, model_param = resolve(session, basis, model)
    stmt = _VERSION if b.kind == "sae" else _VERSION_NO_FAMILY  # a neuron is the target of hundreds of links
    version = tuple(session.connection().execute(stmt, {"basis_id": b.id, "index": index}).one())
    return (*b.ingest, index, model_param, version, explanations_state(session))


class UnitView(NamedTuple):
    """One unit as its page and its JSON twin both show it: what changes without an ingest (`around`), the stored
    UnitData and the page sections rendered from it at ingest, both without windows, and the unit's windows (its open
    example rows), which each rendering puts in: the page renders `around` and splices `page_sections()`; the twin
    splices `around`'s JSON with `data_json`'s, windows put in: the same object, two renderings."""

    around: UnitAround
    data_json: bytes  # UnitData as JSON, without windows (app.present.unit_sections.without_windows)
    sections: tuple[bytes, bytes, bytes]  # UTF-8 HTML rendered from it, a marker where each group of windows goes
    windows: Batch
    vocab: Vocabulary
    before: int
    scale: float  # the unit's max activation: the windows' colour scale

    def page_sections(self) -> tuple[bytes, bytes, bytes]:
        """Return the page's sections, windows in."""
        scales = {0: (self.scale, self.windows.max_abs_effect() or None)}
        made = windows_html(self.windows, scales, self.vocab, self.before)
        stats, body, examples = self.sections
        return stats, body, unit_sections.fill_windows(examples, {g: html for (_, g), html in made.items()})

    def json(self) -> bytes:
        """Return the UnitDetail JSON (the twin's body): both objects' fields, without parsing either again."""
        made = windows_json(self.windows, self.vocab, self.before)
        data = unit_sections.fill_windows_json(self.data_json, {g: j for (_, g), j in made.items()})
        return self.around.model_dump_json().encode()[:-1] + b"," + data[1:]

    def detail(self) -> UnitDetail:
        """Return the UnitDetail as one object (for views that trim or embed it: /compare, reviews)."""
        return UnitDetail.model_validate_json(self.json())


def unit_view(*, session: Session, basis: str, index: int, model: str | None) -> UnitView:
    """Return unit `index` of basis `basis` (neuron or feature alike): its stored UnitData and sections, made now from
    its rows when another version of the code stored them, and its windows."""
    b, m, model_param = resolve(session, basis, model)
    return view(session, b, m, index, model_param)


def view(session: Session, b: BasisRecord, m: ModelRecord, index: int, model_param: str | None) -> UnitView:
    """Return the UnitView of unit `index` of a resolved basis, or raise NotFound."""
    check_unit(b, index)
    row = session.connection().execute(_PAGE_UNIT, {"basis_id": b.id, "index": index}).first()
    if row is None:  # a basis mid-re-ingest never shows (status), so only a damaged database gets here
        raise NotFound(f"unit {index} of basis {b.name!r} is missing from the database")
    unit_id, blob, scale, label = row
    windows = open_batch(row_windows(session.connection().execute(_WINDOWS, {"unit_id": unit_id})))
    data_json, sections = unit_sections.unpack(blob)
    before = context_before(b.config)
    if data_json is None:
        data_json = unit_data(session.get(Unit, unit_id), [], vocabulary(session, b), before,
                              {"proxies": unit_proxy_stats(session, b.id, [index]).get(index, []),
                               "max_abs_effect": windows.max_abs_effect()}).model_dump_json().encode()
    if sections is None:
        data = UnitData.model_validate_json(data_json)
        sections = tuple(part.encode() for part in unit_sections.render_sections(data, m.name, windows.groups_of(0)))
    return UnitView(_around(session, b, m, unit_id, index, label or None, model_param), data_json, sections, windows,
                    window_vocabulary(session, b), before, float(scale))


def detail(session: Session, b: BasisRecord, m: ModelRecord, index: int, model_param: str | None,
           n_top: int | None = None, intervals: bool = True) -> UnitDetail:
    """Return the UnitDetail of unit `index` of a resolved basis; `n_top`/`intervals` trim it for side-by-side views."""
    d = view(session, b, m, index, model_param).detail()
    if n_top is None and intervals:
        return d
    return d.model_copy(update={"top_examples": d.top_examples[:n_top] if n_top is not None else d.top_examples,
                                "intervals": d.intervals if intervals else []})


# Statements built once (building one costs more than SQLite takes to run it); a first render makes: the cache
# key's one (unit_version), the unit's sections with its label, its links with their labels, and its family's. They
# select columns, not entities, and run on the session's Connection: the ORM's execution layer would add ~50 µs each.
_ME = (bindparam("basis_id"), bindparam("index"))
_VERSION_NO_FAMILY = select(  # every ingest; the newest label of the unit and of its links' targets
    select(func.sum(Basis.version)).scalar_subquery(), select(func.count(Basis.id)).scalar_subquery(),
    select(func.max(Label.id)).where(Label.basis_id == _ME[0], Label.unit_index == _ME[1]).scalar_subquery(),
    select(func.max(Label.id)).select_from(UnitLink).join(Unit, Unit.id == UnitLink.unit_id)
    .join(Label, (Label.basis_id == UnitLink.target_basis_id) & (Label.unit_index == UnitLink.target_index))
    .where(Unit.basis_id == _ME[0], Unit.index == _ME[1], (UnitLink.kind != "family") | SHOWN_EDGE).scalar_subquery())
_VERSION = _VERSION_NO_FAMILY.add_columns(  # and of its family's other end (edges stored from the other feature)
    select(func.max(Label.id)).select_from(UnitLink).join(Unit, Unit.id == UnitLink.unit_id)
    .join(Label, (Label.basis_id == Unit.basis_id) & (Label.unit_index == Unit.index))
    .where(UnitLink.target_basis_id == _ME[0], UnitLink.target_index == _ME[1], SHOWN_EDGE).scalar_subquery())
_WINDOWS = select(*WINDOW_COLUMNS).where(Example.unit_id == bindparam("unit_id"), OPEN).order_by(*PAGE_ORDER)
_PAGE_UNIT = select(Unit.id, Unit.sections, Unit.max_activation, newest_label(Unit.basis_id, Unit.index)).where(
    Unit.basis_id == bindparam("basis_id"), Unit.index == bindparam("index"))
_LINKS = (select(UnitLink.kind, Basis.name, UnitLink.target_index, UnitLink.weight, Basis.model_id,
                 Model.name.label("model"),
                 newest_label(UnitLink.target_basis_id, UnitLink.target_index).label("label"),
                 newest_explanation(UnitLink.target_basis_id, UnitLink.target_index).label("explanation"))
          .join(Basis, Basis.id == UnitLink.target_basis_id).join(Model, Model.id == Basis.model_id)
          .where(UnitLink.unit_id == bindparam("unit_id"), UnitLink.kind != "family")  # the family is drawn apart
          .order_by(UnitLink.kind, Basis.name, UnitLink.rank))


def _around(session: Session, b: BasisRecord, m: ModelRecord, unit_id: int, index: int, label: str | None,
            model_param: str | None) -> UnitAround:
    """Return what a unit's page and twin show besides the unit's own rows: its basis, label, neighbours' URLs, links
    (with their targets' labels and explanations), the compare view of a neuron, a feature's family, and its
    explanations."""
    links = _links(session, unit_id, model_param, b.model_id)
    return UnitAround(basis=summary(b, m, model_param), index=index, label=label,
                      url=unit_url(b.name, index, model_param), labels_url=labels_url(b.name, index, model_param),
                      prev_url=unit_url(b.name, index - 1, model_param) if index > 0 else None,
                      next_url=unit_url(b.name, index + 1, model_param) if index + 1 < b.n_units else None,
                      links=links, compare_url=_compare_url(b, index, links, model_param),
                      family=family(session, b, unit_id, index, model_param),
                      explanations=unit_explanations(session, b.id, index))


def _compare_url(b: BasisRecord, index: int, links: list[UnitLinkSchema], model_param: str | None) -> str | None:
    """A neuron's side-by-side view with the features of the SAE its links name."""
    sae = next((link.basis for link in links if link.kind == "neuron_feature"), None) if b.kind == "neuron" else None
    return compare_url(sae, index, model_param) if sae else None


_STRINGS = Cache(max_size=64)
_VOCABULARIES = Cache(max_size=8)


def vocabulary(session: Session, b: BasisRecord) -> list[str]:
    """Return the display string of every token id of basis `b`'s model, as its current ingest saw them (cached per
    process). Keyed by the basis's ingest: a re-ingest that brings a new vocabulary replaces the model's token rows
    in place and hides every basis of the model until each is ingested again with it."""
    return _STRINGS.get((str(session.get_bind().url), b.id), lambda: token_strings(session, b.model_id),
                        state=b.ingest)


def window_vocabulary(session: Session, b: BasisRecord) -> Vocabulary:
    """Return the window renderer's tables of basis `b`'s vocabulary (cached per process, as `vocabulary`)."""
    return _VOCABULARIES.get((str(session.get_bind().url), b.id), lambda: Vocabulary(vocabulary(session, b)),
                             state=b.ingest)


def _links(session: Session, unit_id: int, model_param: str | None, own_model: int) -> list[UnitLinkSchema]:
    """Return the unit's links with their targets' current labels, in one query."""
    return [UnitLinkSchema(
        kind=r.kind, basis=r.name, model=None if r.model_id == own_model else r.model, index=r.target_index,
        weight=r.weight, label=r.label or None, explanation=r.explanation,
        url=unit_url(r.name, r.target_index, model_param if r.model_id == own_model else r.model))
        for r in session.connection().execute(_LINKS, {"unit_id": unit_id})]
