"""Ingest a run's analysis (runs/<run>/analysis/<basis>/) into the database.

Reads only JSON and numpy files (no torch). Each basis is one transaction: its row is marked 'building', its old
units (and their examples and links, by cascade) are deleted, the new ones bulk-inserted in chunks, and 'ready' is
set last; a failure anywhere rolls back to the previous version, which readers keep seeing throughout (SQLite WAL,
PostgreSQL MVCC). The basis row keeps its id across re-ingests, so labels and reviews stay attached.
Links point at other bases, so an SAE's links are inserted once every basis of the run is in; every link belongs to
its SAE's version, so re-ingesting the neuron basis carries its units' links over to the new rows (a later failed
SAE ingest then still finds its links in both directions). Unit (with its proxy statistics), example (one per unit and
kind, its windows packed) and link rows go in through the driver (COPY on PostgreSQL; app/store/bulk.py); analysis
arrays are memory-mapped (app/store/npz.py), so memory stays bounded.
A run rebuilt with another vocabulary hides its model's bases until each is ingested again (their token ids would
read as the wrong strings). Folders whose names start with a dot are a killed analysis's leftovers and are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from app.store.bulk import insert_rows
from app.store.chunks import UNIT_COLUMNS, Chunks
from app.store.db import checkpoint, session_factory
from app.store.example_rows import EXAMPLE_COLUMNS
from app.store.models import (
    MATCH_LINKS,
    TOP_TOKENS_SEPARATOR,
    Basis,
    Example,
    Model,
    Token,
    Unit,
    UnitLink,
)
from app.store.npz import read_npz
from app.store.proxy_columns import proxy_names
from sae.conventions import NEURON_BASIS
from sae.corpus.build import read_token_strings
from sae.errors import MonoscopeError, load_json
from sae.lm.config import read_lm_config
from sae.rundir import read_manifest

LINK_FIELDS = (UnitLink.kind, UnitLink.rank, UnitLink.target_basis_id, UnitLink.target_index, UnitLink.weight)
LINK_KINDS = {  # links.npz arrays -> (kind, source basis is the SAE?, ids array, weights array)
    "feature_neuron": (True, "feature_neuron_ids", "feature_neuron_weights"),
    "feature_feature": (True, "feature_feature_ids", "feature_feature_cosines"),
    "neuron_feature": (False, "neuron_feature_ids", "neuron_feature_weights"),
}


def _read_json(path: Path) -> dict | list:
    return load_json(path, "run the earlier stages first")


def _db_text(text: str) -> str:
    """Return text PostgreSQL can store, NUL (a byte-level BPE token of its own) shown as ␀ (U+2400), and the
    unit separator that joins `unit.top_tokens` shown as ␟ (U+241F)."""
    return text.replace("\x00", "\u2400").replace(TOP_TOKENS_SEPARATOR, "\u241f")


def _upsert_model(session: Session, run_dir: Path, strings: list[str]) -> Model:
    lm_dir = run_dir / "lm"
    config = read_lm_config(run_dir)
    metrics = _read_json(lm_dir / "metrics.json") if (lm_dir / "metrics.json").is_file() else {}
    model = session.scalar(select(Model).where(Model.name == run_dir.name))
    if model is None:
        model = Model(name=run_dir.name, run_dir=str(run_dir.resolve()), config=config, metrics=metrics)
        session.add(model)
        session.flush()
    else:
        model.run_dir, model.config, model.metrics = str(run_dir.resolve()), config, metrics
        stored = session.scalars(select(Token.text).where(Token.model_id == model.id).order_by(Token.token_id)).all()
        if stored == strings:
            return model
        # A new vocabulary: the model's ingested bases would show their token ids as the wrong strings, so they are
        # hidden until each is ingested again (a killed ingest leaves them hidden, never half right).
        session.execute(update(Basis).where(Basis.model_id == model.id).values(status="building"))
        session.execute(delete(Token).where(Token.model_id == model.id))
    session.execute(insert(Token), [dict(model_id=model.id, token_id=i, text=t) for i, t in enumerate(strings)])
    return model


def ingest_basis(session: Session, model: Model, basis_dir: Path, chunks: Chunks) -> Basis:
    """Replace one basis's units and examples inside the caller's transaction; return the ready basis row."""
    meta = _read_json(basis_dir / "basis.json")
    arrays = read_npz(basis_dir / "units.npz")
    n_units = int(meta["n_units"])
    if len(arrays.get("firing_count", ())) != n_units:
        raise MonoscopeError(f"{basis_dir}/units.npz does not hold {n_units} units: run `monoscope analyze --force`")
    if "proxy_names" in arrays and arrays["proxy_names"].tolist() != proxy_names(meta):
        raise MonoscopeError(f"{basis_dir}: basis.json's proxies are not units.npz's: run `monoscope analyze --force`")
    basis = session.scalar(select(Basis).where(Basis.model_id == model.id, Basis.name == meta["name"]))
    fields = dict(kind=meta["kind"], hook_name=meta["hook_name"], n_units=n_units, d_in=int(meta["d_in"]),
                  architecture=(meta.get("sae") or {}).get("architecture"), metrics=meta["metrics"],
                  density_histogram=meta["density_histogram"], status="building",
                  config={k: v for k, v in meta.items() if k not in ("metrics", "density_histogram")},
                  fingerprint=(read_manifest(basis_dir) or {}).get("fingerprint"))
    carried = []
    if basis is None:
        basis = Basis(model_id=model.id, name=meta["name"], version=1, **fields)
        session.add(basis)
    else:
        for key, value in fields.items():
            setattr(basis, key, value)
        basis.version += 1
        # Every decoder link belongs to an SAE's version: a neuron basis keeps all its units' links for the new rows,
        # an SAE drops the decoder links into it. Best matches and family edges (`monoscope match`) belong to the
        # match, whichever basis is re-ingested: both ends are kept, and the match's own ingest replaces them.
        own = select(Unit.index, *LINK_FIELDS).join(Unit, UnitLink.unit_id == Unit.id).where(Unit.basis_id == basis.id)
        carried = session.execute(own if basis.kind == "neuron" else own.where(UnitLink.kind.in_(MATCH_LINKS))).all()
        if basis.kind != "neuron":
            session.execute(delete(UnitLink).where(UnitLink.target_basis_id == basis.id,
                                                   UnitLink.kind.not_in(MATCH_LINKS)))
        session.execute(delete(Unit).where(Unit.basis_id == basis.id))  # examples and links cascade
    session.flush()
    before = int(meta["context_before"])
    for chunk in chunks.of(basis_dir / "units.npz", basis.id, model.name, before, n_units):
        insert_rows(session.connection(), Unit.__table__, UNIT_COLUMNS, chunk.units)
        start, stop = chunk.units[0][1], chunk.units[-1][1] + 1
        unit_ids = np.zeros(stop, np.int64)
        for index, unit_id in _unit_ids(session, basis.id, start, stop).items():
            unit_ids[index] = unit_id
        insert_rows(session.connection(), Example.__table__, EXAMPLE_COLUMNS,
                    [(int(unit_ids[index]), *rest) for index, *rest in chunk.examples])
    if carried:
        unit_ids = _unit_ids(session, basis.id)
        insert_rows(session.connection(), UnitLink.__table__, ("unit_id", *(f.key for f in LINK_FIELDS)),
                    [(unit_ids[index], *rest) for index, *rest in carried if index in unit_ids])
    return basis


def _unit_ids(session: Session, basis_id: int, start: int = 0, stop: int | None = None) -> dict[int, int]:
    """Return {unit index: unit row id} of a basis's units (those with index in [start, stop))."""
    stmt = select(Unit.index, Unit.id).where(Unit.basis_id == basis_id, Unit.index >= start)
    return dict(session.execute(stmt if stop is None else stmt.where(Unit.index < stop)).all())


def _ingest_links(session: Session, sae_basis: Basis, neuron_basis: Basis, links: dict[str, np.ndarray]) -> None:
    """Insert an SAE's links (both directions) between it and the neuron basis of its hook."""
    ids = {b.id: _unit_ids(session, b.id) for b in (sae_basis, neuron_basis)}
    rows = []
    for kind, (from_sae, ids_key, weights_key) in LINK_KINDS.items():
        source, target = (sae_basis, neuron_basis) if from_sae else (neuron_basis, sae_basis)
        if kind == "feature_feature":
            target = sae_basis
        for index, (targets, weights) in enumerate(zip(links[ids_key].tolist(), links[weights_key].tolist())):
            unit_id = ids[source.id][index]
            rows.extend((unit_id, kind, rank, target.id, t, w) for rank, (t, w) in enumerate(zip(targets, weights))
                        if t >= 0)
    session.execute(delete(UnitLink).where(UnitLink.kind == "neuron_feature", UnitLink.target_basis_id == sae_basis.id))
    insert_rows(session.connection(), UnitLink.__table__,
                ("unit_id", "kind", "rank", "target_basis_id", "target_index", "weight"), rows)


def ingest_run(run_dir: Path, *, url: str, log: Callable[[str], None] = print,
               workers: int | None = None) -> list[str]:
    """Ingest every analysed basis of a run (neurons first); return the basis names now ready. `workers` processes
    (default: one a core, at most 8) build the units of a large basis while this one writes them."""
    run_dir = Path(run_dir)
    analysis = run_dir / "analysis"
    # Dot-folders are a killed analysis's leftovers (.<basis>.tmp-*, .<basis>.old-*, .spill-*), never a stage.
    basis_dirs = sorted((p for p in analysis.iterdir() if not p.name.startswith(".") and (p / "basis.json").is_file()),
                        key=lambda p: p.name != NEURON_BASIS) if analysis.is_dir() else []
    if not basis_dirs:
        raise MonoscopeError(f"no analysed bases under {analysis}: run `monoscope analyze --run {run_dir}` first")
    factory = session_factory(url)
    strings = [_db_text(t) for t in read_token_strings(run_dir)]
    with factory.begin() as session:
        model_id = _upsert_model(session, run_dir, strings).id
    done: dict[str, Basis] = {}
    with Chunks(strings, workers) as chunks:
        for basis_dir in basis_dirs:
            basis = _ingest_one(factory, model_id, basis_dir, chunks, done)
            log(f"ingested {basis.name}: {basis.n_units} units ({basis.kind})")
    for folder in sorted((analysis / "matches").glob("*/match.json")) if (analysis / "matches").is_dir() else []:
        with factory.begin() as session:
            log(_ingest_matches(session, session.get(Model, model_id), folder.parent))
    if (analysis / "map" / "map.json").is_file():
        with factory.begin() as session:
            log(_ingest_map(session, model_id, analysis / "map"))
    checkpoint(url)
    return list(done)


def _ingest_one(factory, model_id: int, basis_dir: Path, chunks: Chunks, done: dict[str, Basis]) -> Basis:
    """Ingest one basis (and an SAE's links) in one transaction: all of it or none of it; add it to `done`."""
    try:
        with factory.begin() as session:
            basis = ingest_basis(session, session.get(Model, model_id), basis_dir, chunks)
            if basis.kind == "sae" and NEURON_BASIS in done and (basis_dir / "links.npz").is_file():
                _ingest_links(session, basis, session.merge(done[NEURON_BASIS]), read_npz(basis_dir / "links.npz"))
            session.execute(update(Basis).where(Basis.id == basis.id).values(status="ready"))
            done[basis.name] = basis
            return basis
    except (KeyError, IndexError, ValueError, TypeError) as e:  # a malformed analysis file, found mid-way
        raise MonoscopeError(f"ingest of {basis_dir.name} failed ({type(e).__name__}: {e}); "
                             "the database keeps its previous version: run `monoscope analyze --force`") from None


def _ingest_map(session: Session, model_id: int, folder: Path) -> str:
    """Set the feature-map coordinates of the mapped dictionaries' units; return a line for the log."""
    arrays = read_npz(folder / "map.npz")
    done = 0
    for name in _read_json(folder / "map.json")["saes"]:
        basis = session.scalar(select(Basis).where(Basis.model_id == model_id, Basis.name == name))
        if basis is None:
            continue  # mapped but not analysed: nothing to place
        xs, ys = arrays[f"{name}.x"].tolist(), arrays[f"{name}.y"].tolist()
        session.execute(update(Unit).where(Unit.basis_id == basis.id).values(map_x=None, map_y=None))
        table = Unit.__table__  # Core executemany: one statement, a row of parameters per unit
        session.connection().execute(
            update(table).where(table.c.basis_id == bindparam("b"), table.c.index == bindparam("i"))
            .values(map_x=bindparam("x"), map_y=bindparam("y")),
            [{"b": basis.id, "i": i, "x": x, "y": y} for i, (x, y) in enumerate(zip(xs, ys))])
        done += len(xs)
    return f"ingested the feature map: {done:,} units placed"


def _ingest_matches(session: Session, model: Model, folder: Path) -> str:
    """Replace the best-match links of one `monoscope match` result, both directions; return a line for the log.

    The other run's basis must be in the database already (ingest that run first): links join two ready bases.
    """
    summary = _read_json(folder / "match.json")
    other = session.scalar(select(Model).where(Model.run_dir == summary["run_b"]))
    a, b = (session.scalar(select(Basis).where(Basis.model_id == m.id, Basis.name == name, Basis.status == "ready"))
            if m is not None else None for m, name in ((model, summary["basis_a"]), (other, summary["basis_b"])))
    if a is None or b is None:
        return (f"match {folder.name} left out: ingest the run at {summary['run_b']} (and analyse both bases) "
                "first, then this run again")
    m = read_npz(folder / "matches.npz")
    rows, ids = [], {a.id: _unit_ids(session, a.id), b.id: _unit_ids(session, b.id)}
    for source, target, best, corr in ((a, b, m["a_best"], m["a_corr"]), (b, a, m["b_best"], m["b_corr"])):
        session.execute(delete(UnitLink).where(UnitLink.kind.in_(MATCH_LINKS), UnitLink.target_basis_id == target.id,
                                               UnitLink.unit_id.in_(select(Unit.id).where(Unit.basis_id == source.id))))
        rows.extend((ids[source.id][i], "best_match", 0, target.id, int(t), float(w))
                    for i, (t, w) in enumerate(zip(best.tolist(), corr.tolist())) if t >= 0 and i in ids[source.id])
    n_best = len(rows)
    if "family_score" in m:  # one row per edge, from A's feature to B's (app.read.queries.family reads both ways)
        rows.extend((ids[a.id][i], "family", 0, b.id, int(j), float(w))
                    for i, j, w in zip(m["family_a"].tolist(), m["family_b"].tolist(), m["family_score"].tolist())
                    if i in ids[a.id])
    insert_rows(session.connection(), UnitLink.__table__,
                ("unit_id", "kind", "rank", "target_basis_id", "target_index", "weight"), rows)
    families = f", {len(rows) - n_best} family edges" if "family_score" in m else ""
    return f"ingested match {folder.name}: {n_best} best-match links{families}"
