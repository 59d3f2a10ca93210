"""`monoscope db render`: build again the stored UnitData and page sections that another version of Monoscope stored
(or none stored), from the database alone. After an upgrade changes them (app.present.unit_sections.FORMAT, or the
templates), pages make them live, several times slower, until their basis is ingested again; this makes them current
without the run folders."""

from __future__ import annotations

from typing import Callable

from sqlalchemy import bindparam, select, update

from app.present.unit_sections import pack, unpack
from app.read.unit_proxies import unit_proxy_stats
from app.read.unit_data import context_before, unit_data
from app.store.db import checkpoint, session_factory, write_transaction
from app.read.windows import open_batch, row_windows
from app.store.example_rows import OPEN, PAGE_ORDER, WINDOW_COLUMNS
from app.store.models import Basis, Example, Model, Unit
from app.store.vocabulary import token_strings

CHUNK = 512  # units a transaction: bounded memory, and label writers never wait long for the write lock
_WRITE = update(Unit).where(Unit.id == bindparam("unit_id")).values(sections=bindparam("sections"))


def render_stale_sections(url: str, log: Callable[[str], None] = print) -> int:
    """Render the sections of every unit of every ready basis whose stored ones are missing or stale, CHUNK units a
    transaction; return how many were written. Each chunk is read and rendered outside the write transaction, which
    then writes it only if its basis is still the same ingest (a concurrent re-ingest wins; the basis is skipped)."""
    sessions = session_factory(url)
    with sessions() as session:
        bases = session.execute(select(Basis.id, Basis.name, Basis.version, Basis.config, Model.id, Model.name)
                                .join(Model).where(Basis.status == "ready").order_by(Basis.id)).all()
    total = 0
    for basis_id, name, version, config, model_id, model_name in bases:
        with sessions() as session:
            strings = token_strings(session, model_id)
            ids = session.scalars(select(Unit.id).where(Unit.basis_id == basis_id).order_by(Unit.index)).all()
        done, skipped = 0, False
        for start in range(0, len(ids), CHUNK):
            rendered = _render_chunk(sessions, ids[start:start + CHUNK], model_name, strings, context_before(config))
            if not rendered:
                continue
            with write_transaction(sessions) as session:
                now = session.execute(select(Basis.status, Basis.version).where(Basis.id == basis_id)
                                      .with_for_update()).first()
                if now is None or tuple(now) != ("ready", version):
                    skipped = True
                    break
                written = session.connection().execute(_WRITE, rendered).rowcount  # units deleted since: not counted
                done += written if written >= 0 else len(rendered)
        log(f"{name} (model {model_name}): {done} of {len(ids)} units rendered"
            + (" (it is being ingested again: skipped the rest)" if skipped else ""))
        total += done
    checkpoint(url)
    return total


def _render_chunk(sessions, ids: list[int], model_name: str, strings: list[str], before: int) -> list[dict]:
    """Return [{unit_id, sections}] for the units of `ids` whose stored sections are missing or stale."""
    with sessions() as session:
        stale = [i for i, blob in session.execute(select(Unit.id, Unit.sections).where(Unit.id.in_(ids)))
                 if unpack(blob).sections is None]
        if not stale:
            return []
        rows: dict[int, list] = {i: [] for i in stale}
        for unit_id, *row in session.execute(select(Example.unit_id, *WINDOW_COLUMNS)
                                             .where(Example.unit_id.in_(stale), OPEN)
                                             .order_by(Example.unit_id, *PAGE_ORDER)):
            rows[unit_id].append(row)
        units = session.scalars(select(Unit).where(Unit.id.in_(stale))).all()
        proxies = unit_proxy_stats(session, units[0].basis_id, [u.index for u in units]) if units else {}
        out = []
        for unit in units:
            windows = open_batch(row_windows(rows[unit.id]))
            data = unit_data(unit, [], strings, before, {"proxies": proxies.get(unit.index, []),
                                                         "max_abs_effect": windows.max_abs_effect()})
            out.append({"unit_id": unit.id, "sections": pack(data, model_name, windows.groups_of(0))})
        return out
