"""The unit list of a basis: filtered, searched, sorted and paginated in SQL."""

from __future__ import annotations

import math

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.store.models import Unit
from app.web.queries.bases import resolve, summary
from app.web.queries.labels import latest_labels, newest_label
from app.web.schemas import UnitList, UnitListParams, UnitRow
from app.web.unit_detail import split_top_tokens
from app.web.urls import unit_url


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _filtered(stmt, labels, params: UnitListParams, dialect: str):
    """Return `stmt` with the density, label, dead and search filters of `params` applied (`labels`: the basis's
    newest labels, joined into `stmt` when params.labelled asks about them). The search ignores case: ILIKE on
    PostgreSQL; plain LIKE on SQLite, which already folds ASCII case (as far as its lower() does) at ~60% of the cost of
    SQLAlchemy's lower(x) LIKE lower(p). A label match is an IN over the few labelled units, not a join per unit."""
    if params.min_density is not None:
        stmt = stmt.where(Unit.density >= params.min_density)
    if params.max_density is not None:
        stmt = stmt.where(Unit.density <= params.max_density)
    if params.labelled != "any":
        has = (labels.c.text.is_not(None)) & (labels.c.text != "")
        stmt = stmt.where(has if params.labelled == "yes" else ~has)
    if params.dead != "any":
        stmt = stmt.where(Unit.firing_count == 0 if params.dead == "only" else Unit.firing_count > 0)
    if params.q.strip():
        pattern = _like(params.q.strip())
        match = (lambda c: c.like(pattern, escape="\\")) if dialect == "sqlite" else \
            (lambda c: c.ilike(pattern, escape="\\"))
        stmt = stmt.where(or_(match(Unit.top_tokens),
                              Unit.index.in_(select(labels.c.unit_index).where(match(labels.c.text)))))
    return stmt


ROW_COLUMNS = (Unit.index, Unit.firing_count, Unit.density, Unit.log10_density, Unit.max_activation,
               Unit.mean_activation, Unit.top_token_entropy, Unit.top_tokens,
               newest_label(Unit.basis_id, Unit.index))  # not the unit's JSON documents


def unit_list(*, session: Session, basis: str, model: str | None, params: UnitListParams) -> UnitList:
    """Return one page of a basis's units, filtered, searched and sorted as `params` says.

    Two queries: the page's unit ids with the filtered total (a window count), found in the covering index
    ix_unit_search on SQLite (a search scans ~4k short index rows instead of ~4k unit rows of ~3 kB each), the newest
    labels joined only when they filter or sort; then those units' columns and labels by id. A page past the end
    counts apart."""
    b, m, model_param = resolve(session, basis, model)
    labels = latest_labels(b.id)
    by_label = params.labelled != "any" or params.sort == "label"
    dialect = session.get_bind().dialect.name

    def matching(*columns):
        stmt = select(*columns).where(Unit.basis_id == b.id)
        if by_label:
            stmt = stmt.outerjoin(labels, labels.c.unit_index == Unit.index)
        return _filtered(stmt, labels, params, dialect)

    label = labels.c.text
    columns = {"index": Unit.index, "density": Unit.density, "max_activation": Unit.max_activation,
               "label": func.lower(label)}  # as a reader sorts: "aardvark" before "Zebra"
    key = columns[params.sort]
    order = [key.desc() if params.desc else key.asc()]
    if params.sort == "label":  # unlabelled units last, whatever the direction
        order = [label.is_(None), (label == ""), *order]
    page = session.execute(matching(Unit.id, func.count().over()).order_by(*order, Unit.index)
                           .offset((params.page - 1) * params.per_page).limit(params.per_page)).all()
    total = page[0][1] if page else session.scalar(select(func.count()).select_from(matching(Unit.id).subquery()))
    found = {r[0]: r[1:] for r in session.execute(select(Unit.id, *ROW_COLUMNS)
                                                  .where(Unit.id.in_([unit_id for unit_id, _ in page])))}
    rows = [UnitRow(index=index, firing_count=firing, density=density, log10_density=log10_density,
                    max_activation=max_act, mean_activation=mean_act, top_token_entropy=entropy,
                    top_tokens=split_top_tokens(top_tokens), label=text or None,
                    url=unit_url(b.name, index, model_param))
            for index, firing, density, log10_density, max_act, mean_act, entropy, top_tokens, text
            in (found[unit_id] for unit_id, _ in page if unit_id in found)]  # a re-ingest committed in between
    return UnitList(basis=summary(b, m, model_param), params=params, total=total,
                    pages=max(1, math.ceil(total / params.per_page)), units=rows)
