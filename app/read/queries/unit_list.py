"""The unit list of a basis: filtered, searched, sorted and paginated in memory.

A basis's unit rows change only when it is ingested again, so the columns the list shows, filters and sorts by are
read once per basis version (`BasisUnits`), and a request only tests arrays and the basis's distinct top-token
strings: no unit query at all, where a search in SQL scanned every unit row of the basis (LIKE '%text%' uses no
index) and its page's labels took a subquery per row. Labels change at any time: a basis's newest labels are read
again when their count or newest id does (one indexed aggregate per request); explanations likewise when autointerp
has written (app/read/queries/explanations.py). The search ignores case (str.lower, as PostgreSQL's ILIKE; SQLite's
LIKE folded only ASCII) and matches a label, an explanation or one of the top tokens (a term holding the tokens'
separator U+001F, which no token string holds, matches none). Labels sort by their lowercased code points (SQL
sorted by the database's collation).
"""

from __future__ import annotations

import math

import numpy as np
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from app.read.cache import Cache
from app.read.queries.bases import resolve, summary
from app.read.queries.explanations import basis_explanations
from app.read.unit_list_schemas import UnitList, UnitListParams, UnitRow
from app.read.unit_data import split_top_tokens
from app.read.urls import unit_url
from app.store.labels import newest_labels
from app.store.models import Basis, Label, Unit

_ROWS = (select(Unit.index, Unit.firing_count, Unit.density, Unit.log10_density, Unit.max_activation,
                Unit.mean_activation, Unit.top_token_entropy, Unit.top_tokens)
         .where(Unit.basis_id == bindparam("basis_id")).order_by(Unit.index))
_LABELS_STATE = select(func.count(Label.id), func.max(Label.id)).where(Label.basis_id == bindparam("basis_id"))
_CURRENT = newest_labels(Label.basis_id == bindparam("basis_id"))


class BasisUnits:
    """A basis's unit rows in index order, as the list needs them: numeric columns as arrays, the units of each
    distinct top token (lowercased) for the search, and the orders of the sortable columns (ties by index), computed
    once."""

    def __init__(self, rows: list[tuple]):
        self.rows = rows
        self.position = {row[0]: p for p, row in enumerate(rows)}
        self.firing = np.array([r[1] for r in rows], dtype=np.int64)
        self.density = np.array([r[2] for r in rows], dtype=np.float64)
        self.tokens = [split_top_tokens(r[7]) for r in rows]
        # a search term is found in a unit's top tokens when it is in one of them, so it is tested against each
        # distinct token string once (at most the vocabulary, whatever the basis size), not against every unit
        postings: dict[str, list[int]] = {}
        for p, tokens in enumerate(self.tokens):
            for token in tokens:
                postings.setdefault(token.lower(), []).append(p)  # a position twice (two cases of one token): harmless
        self.token_texts = list(postings)
        self.token_units = [np.array(units, dtype=np.int64) for units in postings.values()]
        index = np.array([r[0] for r in rows], dtype=np.int64)
        max_activation = np.array([r[4] for r in rows], dtype=np.float64)
        self.orders = {}
        for key, values in (("index", index), ("density", self.density), ("max_activation", max_activation)):
            self.orders[key, False] = np.lexsort((index, values))
            self.orders[key, True] = np.lexsort((index, -values))


_UNITS = Cache()  # state: the basis's ingest
# state: the basis's ingest, and the count and newest id of its labels. Labels are append-only (never deleted or
# rewritten; a basis's go only with the basis), so any new label changes both, even one committed after a newer id
# on PostgreSQL.
_LABELS = Cache()


def basis_units(session: Session, b: Basis) -> BasisUnits:
    """Return the BasisUnits of a resolved basis, read once per ingest of it."""
    def read() -> BasisUnits:
        return BasisUnits([tuple(r) for r in session.connection().execute(_ROWS, {"basis_id": b.id})])

    return _UNITS.get((str(session.get_bind().url), b.id), read, state=(b.version, str(b.ingested_at)))


def top_tokens_for(*, session: Session, basis_id: int, indexes: list[int]) -> dict[int, list[str]]:
    """Return {unit index: its distinct max tokens} of `indexes` of one basis (for lists that name units by them)."""
    if not indexes:
        return {}
    return {i: split_top_tokens(t) for i, t in session.execute(
        select(Unit.index, Unit.top_tokens).where(Unit.basis_id == basis_id, Unit.index.in_(sorted(set(indexes)))))}


def current_labels(session: Session, b: Basis) -> dict[int, str | None]:
    """Return {unit index: current label} of every unit of a resolved basis that has label rows (None where its
    label was cleared: such units sort after the labelled ones and before the never labelled)."""
    def read() -> dict[int, str | None]:
        return {i: label for _, i, label in session.connection().execute(_CURRENT, {"basis_id": b.id})}

    state = (b.version, str(b.ingested_at), *session.connection().execute(_LABELS_STATE, {"basis_id": b.id}).one())
    return _LABELS.get((str(session.get_bind().url), b.id), read, state=state)


def _mask(units: BasisUnits, labels: dict[int, str | None], params: UnitListParams,
          explanations: dict[int, str]) -> np.ndarray:
    """Return which units (by position) pass the density, label, dead and search filters of `params` (the search
    also finds a unit's current explanation)."""
    mask = np.ones(len(units.rows), dtype=bool)
    if params.min_density is not None:
        mask &= units.density >= params.min_density
    if params.max_density is not None:
        mask &= units.density <= params.max_density
    if params.labelled != "any":
        labelled = np.zeros_like(mask)
        labelled[[units.position[i] for i, t in labels.items() if t and i in units.position]] = True
        mask &= labelled if params.labelled == "yes" else ~labelled
    if params.dead != "any":
        mask &= units.firing == 0 if params.dead == "only" else units.firing > 0
    needle = params.q.strip().lower()
    if needle:
        found = _top_token_matches(units, needle)
        found[[units.position[i] for i, t in labels.items()
               if t and needle in t.lower() and i in units.position]] = True
        found[[units.position[i] for i, t in explanations.items()
               if needle in t.lower() and i in units.position]] = True
        mask &= found
    return mask


def _top_token_matches(units: BasisUnits, needle: str) -> np.ndarray:
    """Return which units (by position) have `needle` in one of their lowercased top tokens."""
    found = np.zeros(len(units.rows), dtype=bool)
    hits = [positions for text, positions in zip(units.token_texts, units.token_units) if needle in text]
    if hits:
        found[np.concatenate(hits)] = True
    return found


def _ordered(units: BasisUnits, labels: dict[int, str | None], params: UnitListParams, mask: np.ndarray) -> np.ndarray:
    """Return the positions of the units in `mask`, in the order `params` sorts by (ties by index)."""
    if params.sort != "label":
        order = units.orders[params.sort, params.desc]
        return order[mask[order]]
    text = {units.position[i]: t for i, t in labels.items() if i in units.position}
    chosen = np.flatnonzero(mask).tolist()  # index order
    named = sorted((p for p in chosen if text.get(p)), key=lambda p: text[p].lower(), reverse=params.desc)
    cleared = [p for p in chosen if p in text and text[p] is None]  # then the cleared, then the never labelled
    return np.array(named + cleared + [p for p in chosen if p not in text], dtype=np.int64)


def unit_list(*, session: Session, basis: str, model: str | None, params: UnitListParams) -> UnitList:
    """Return one page of a basis's units, filtered, searched and sorted as `params` says."""
    b, m, model_param = resolve(session, basis, model)
    units = basis_units(session, b)
    labels = current_labels(session, b)
    explanations = basis_explanations(session, b.id)
    chosen = _ordered(units, labels, params, _mask(units, labels, params, explanations))
    start = (params.page - 1) * params.per_page
    rows = []
    for p in chosen[start:start + params.per_page].tolist():
        index, firing, density, log10_density, max_act, mean_act, entropy, _ = units.rows[p]
        rows.append(UnitRow(  # pydantic's Rust validator builds a row ~3x faster than model_construct
            index=index, firing_count=firing, density=density, log10_density=log10_density, max_activation=max_act,
            mean_activation=mean_act, top_token_entropy=entropy, top_tokens=list(units.tokens[p]),
            label=labels.get(index), explanation=explanations.get(index), url=unit_url(b.name, index, model_param)))
    total = len(chosen)
    return UnitList(basis=summary(b, m, model_param), params=params, total=total,
                    pages=max(1, math.ceil(total / params.per_page)), units=rows)
