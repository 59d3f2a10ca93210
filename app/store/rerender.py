"""`monoscope db render`: render again the unit page sections another version of Monoscope stored (or none stored),
from the database alone. After an upgrade changes how sections look (app.unit_sections.VERSION), pages render them
live, ~10x slower, until their basis is ingested again; this makes them current without the run folders."""

from __future__ import annotations

from typing import Callable

from sqlalchemy import select

from app.store.db import session_factory, write_transaction
from app.store.example_rows import PAGE_ORDER
from app.store.models import Basis, Example, Model, Unit
from app.store.vocabulary import token_strings
from app.unit_sections import pack, render_sections, unpack

CHUNK = 512  # units per transaction: bounded memory, and readers never wait long for the write lock


def render_stale_sections(url: str, log: Callable[[str], None] = print) -> int:
    """Render the sections of every unit of every ready basis whose stored ones are missing or stale, CHUNK units a
    transaction; return how many were rendered."""
    sessions = session_factory(url)
    with sessions() as session:
        bases = session.execute(select(Basis.id, Basis.name, Basis.config, Model.id, Model.name).join(Model)
                                .where(Basis.status == "ready").order_by(Basis.id)).all()
    total = 0
    for basis_id, name, config, model_id, model_name in bases:
        with sessions() as session:
            strings = token_strings(session, model_id)
            ids = session.scalars(select(Unit.id).where(Unit.basis_id == basis_id).order_by(Unit.index)).all()
        before = int((config or {}).get("context_before", 24))
        done = 0
        for start in range(0, len(ids), CHUNK):
            with write_transaction(sessions) as session:
                stale = [i for i, blob in session.execute(select(Unit.id, Unit.sections)
                                                          .where(Unit.id.in_(ids[start:start + CHUNK])))
                         if unpack(blob) is None]
                if not stale:
                    continue
                windows: dict[int, list] = {i: [] for i in stale}
                for unit_id, *row in session.execute(
                        select(Example.unit_id, Example.kind, Example.bucket, Example.value, Example.token_ids,
                               Example.activations, Example.effects)
                        .where(Example.unit_id.in_(stale)).order_by(Example.unit_id, *PAGE_ORDER)):
                    windows[unit_id].append(row)
                for unit in session.scalars(select(Unit).where(Unit.id.in_(stale))):
                    unit.sections = pack(render_sections(unit, model_name, strings, windows[unit.id], before))
                done += len(stale)
        log(f"{name} (model {model_name}): {done} of {len(ids)} units rendered")
        total += done
    return total
