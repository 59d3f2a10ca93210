"""Ingest round trip on SQLite and PostgreSQL from a real analysed run; failures keep the previous version."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, insert, select
from webapp_fixtures import SAE_NAME

from app.store.db import session_factory, upgrade
from app.store.example_rows import ZSTD, decoded
from app.store.ingest import ingest_run
from app.store.models import Basis, Example, Label, Model, Token, Unit, UnitLink
from app.store.npz import load_npz
from sae.errors import MonoscopeError

QUIET = lambda message: None  # noqa: E731


def load_units(run_dir: Path, basis: str) -> dict[str, np.ndarray]:
    with np.load(run_dir / "analysis" / basis / "units.npz") as z:
        return dict(z)


def test_round_trip(database_url, analysed_run):
    upgrade(database_url)
    assert ingest_run(analysed_run, url=database_url, log=QUIET) == ["neurons", SAE_NAME]
    strings = json.loads((analysed_run / "corpus" / "token_strings.json").read_text())
    with session_factory(database_url)() as session:
        model = session.scalar(select(Model))
        assert model.name == analysed_run.name
        assert session.scalar(select(func.count()).select_from(Token)) == len(strings)
        assert session.scalar(select(Token.text).where(Token.token_id == 5)) == strings[5]
        assert "\x00" in strings  # the byte-level vocabulary has NUL, which PostgreSQL text cannot hold: shown as ␀
        assert session.scalar(select(Token.text).where(Token.token_id == strings.index("\x00"))) == "\u2400"
        for name in ("neurons", SAE_NAME):
            arrays = load_units(analysed_run, name)
            basis = session.scalar(select(Basis).where(Basis.name == name))
            assert basis.status == "ready" and basis.n_units == len(arrays["density"])
            meta = json.loads((analysed_run / "analysis" / name / "basis.json").read_text())
            assert basis.metrics == meta["metrics"]
            units = session.scalars(select(Unit).where(Unit.basis_id == basis.id).order_by(Unit.index)).all()
            assert [u.firing_count for u in units] == arrays["firing_count"].tolist()
            np.testing.assert_allclose([u.max_activation for u in units], arrays["max_activation"], rtol=1e-6)
            busiest = int(np.argmax(arrays["firing_count"]))
            unit = units[busiest]
            assert unit.act_hist["counts"] == arrays["act_hist_counts"][busiest].tolist()
            top = session.scalar(select(Example).where(Example.unit_id == unit.id, Example.kind == "top"))
            n_top = int(arrays["top_count"][busiest])
            assert (top.n, top.width, top.buckets) == (n_top, arrays["top_token_ids"].shape[2], None)
            assert top.codec == ZSTD  # the window arrays compressed, read back as the analysis wrote them
            np.testing.assert_array_equal(np.frombuffer(decoded(top.token_ids, top.codec), "<i4")
                                          .reshape(top.n, top.width), arrays["top_token_ids"][busiest, :n_top])
            np.testing.assert_array_equal(np.frombuffer(decoded(top.activations, top.codec), "<f4")
                                          .reshape(top.n, top.width), arrays["top_acts"][busiest, :n_top])
            np.testing.assert_array_equal(np.frombuffer(top.values, "<f4"), arrays["top_values"][busiest, :n_top])
            interval = session.scalar(select(Example).where(Example.unit_id == unit.id, Example.kind == "interval"))
            counts = arrays["interval_sample_count"][busiest]
            assert interval.n == counts.sum()
            np.testing.assert_array_equal(np.frombuffer(interval.buckets, "<i4"), np.repeat(np.arange(len(counts)),
                                                                                           counts))
        with np.load(analysed_run / "analysis" / SAE_NAME / "links.npz") as links:
            sae = session.scalar(select(Basis).where(Basis.name == SAE_NAME))
            feature0 = session.scalar(select(Unit.id).where(Unit.basis_id == sae.id, Unit.index == 0))
            neurons = session.scalars(select(UnitLink.target_index).where(
                UnitLink.unit_id == feature0, UnitLink.kind == "feature_neuron").order_by(UnitLink.rank)).all()
            assert neurons == links["feature_neuron_ids"][0].tolist()


def link_rows(session) -> list[tuple]:
    """Every link as (source basis, source index, kind, rank, target basis, target index), sorted."""
    return sorted(session.execute(select(Unit.basis_id, Unit.index, UnitLink.kind, UnitLink.rank,
                                         UnitLink.target_basis_id, UnitLink.target_index)
                                  .join(Unit, UnitLink.unit_id == Unit.id)).all())


def test_reingest_replaces_atomically_and_keeps_labels(database_url, analysed_run, tmp_path):
    upgrade(database_url)
    ingest_run(analysed_run, url=database_url, log=QUIET)
    factory = session_factory(database_url)
    with factory.begin() as session:
        sae = session.scalar(select(Basis).where(Basis.name == SAE_NAME))
        sae_id, n_examples = sae.id, session.scalar(select(func.count()).select_from(Example))
        links = link_rows(session)
        assert {kind for _, _, kind, *_ in links} == {"feature_neuron", "feature_feature", "neuron_feature"}
        session.execute(insert(Label), [dict(basis_id=sae.id, unit_index=3, text="closing quotes")])

    run = tmp_path / analysed_run.name  # same model name, a corrupt SAE analysis
    shutil.copytree(analysed_run, run)
    units = load_units(run, SAE_NAME)
    units["top_count"][-1] = units["top_values"].shape[1] + 5  # found only after the old units were deleted
    np.savez(run / "analysis" / SAE_NAME / "units.npz", **units)
    with pytest.raises(MonoscopeError, match="keeps its previous version"):
        ingest_run(run, url=database_url, log=QUIET)
    with factory() as session:
        sae = session.scalar(select(Basis).where(Basis.name == SAE_NAME))
        assert (sae.id, sae.status, sae.version) == (sae_id, "ready", 1)
        assert session.scalar(select(func.count()).select_from(Example)) == n_examples
        assert link_rows(session) == links  # the neuron basis was re-ingested, the SAE's links in both directions kept

    ingest_run(analysed_run, url=database_url, log=QUIET)  # a good re-ingest: new version, same row, label kept
    with factory() as session:
        sae = session.scalar(select(Basis).where(Basis.name == SAE_NAME))
        assert (sae.id, sae.version) == (sae_id, 2)
        assert session.scalar(select(Label.text).where(Label.basis_id == sae_id)) == "closing quotes"
        assert session.scalar(select(func.count()).select_from(Example)) == n_examples
        assert session.scalar(select(func.count()).select_from(Basis)) == 2
        assert link_rows(session) == links


def test_load_npz_maps_stored_members_and_reads_compressed_ones(analysed_run, tmp_path):
    path = analysed_run / "analysis" / SAE_NAME / "units.npz"
    expected = load_units(analysed_run, SAE_NAME)
    mapped = load_npz(path)
    np.savez_compressed(tmp_path / "c.npz", **expected)
    for arrays in (mapped, load_npz(tmp_path / "c.npz")):
        assert arrays.keys() == expected.keys()
        for name, array in expected.items():
            same = np.array_equal(arrays[name], array, equal_nan=array.dtype.kind == "f")  # effects hold NaN
            assert arrays[name].dtype == array.dtype and same, name
    assert isinstance(mapped["interval_token_ids"].base, np.memmap)  # not read into memory


SAE_ROW = select(Basis.id, Basis.version, Basis.status).where(Basis.name == SAE_NAME)


def test_truncated_units_file_is_one_clear_error_and_changes_nothing(analysed_run, tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    ingest_run(analysed_run, url=url, log=QUIET)
    with session_factory(url)() as session:
        before = session.execute(SAE_ROW).one(), link_rows(session)
    run = tmp_path / analysed_run.name
    shutil.copytree(analysed_run, run)
    units = run / "analysis" / SAE_NAME / "units.npz"
    units.write_bytes(units.read_bytes()[: units.stat().st_size // 2])  # a killed copy, say
    with pytest.raises(MonoscopeError, match="units.npz is unreadable"):
        ingest_run(run, url=url, log=QUIET)
    with session_factory(url)() as session:
        assert (session.execute(SAE_ROW).one(), link_rows(session)) == before


def test_cli_ingest_and_bad_input(analysed_run, tmp_path):
    exe = [sys.executable, "-m", "app.cli"]
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    done = subprocess.run([*exe, "ingest", "--run", str(analysed_run), "--db", url], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"ingested {SAE_NAME}" in done.stdout
    empty = tmp_path / "empty_run"
    empty.mkdir()
    bad = subprocess.run([*exe, "ingest", "--run", str(empty), "--db", url], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "monoscope analyze" in bad.stderr
    wrong = subprocess.run([*exe, "ingest", "--run", str(analysed_run), "--db", "mysql://x"], capture_output=True,
                           text=True)
    assert wrong.returncode == 2 and "unsupported database" in wrong.stderr


def _stored(url: str) -> tuple[list, list]:
    with session_factory(url)() as session:
        units = session.execute(select(Basis.name, Unit.index, Unit.sections, Unit.top_tokens, Unit.act_hist,
                                       Unit.proxy_stats, Unit.proxy_hists)
                                .join(Basis).order_by(Basis.name, Unit.index)).all()
        examples = session.execute(select(Basis.name, Unit.index, Example.kind, Example.n, Example.width,
                                          Example.buckets, Example.values, Example.token_ids, Example.activations,
                                          Example.effects)
                                   .join(Unit, Unit.id == Example.unit_id).join(Basis)
                                   .order_by(Basis.name, Unit.index, Example.kind)).all()
    return [tuple(u) for u in units], [tuple(e) for e in examples]


def test_chunks_made_by_worker_processes_are_the_ones_this_process_makes(analysed_run, tmp_path, monkeypatch):
    """A basis of several chunks is built in spawned workers (app/store/chunks.py): the database is the same, byte for
    byte, as the one built in this process, in unit order."""
    import app.store.chunks as chunks

    monkeypatch.setattr(chunks, "CHUNK", 16)  # the tiny run's bases become several chunks each
    urls = {}
    for workers in (1, 2):
        urls[workers] = f"sqlite:///{tmp_path / f'w{workers}.db'}"
        upgrade(urls[workers])
        ingest_run(analysed_run, url=urls[workers], log=QUIET, workers=workers)
    serial, parallel = _stored(urls[1]), _stored(urls[2])
    n_units = sum(len(load_units(analysed_run, b)["density"]) for b in ("neurons", SAE_NAME))
    assert len(serial[0]) == n_units > 2 * 16 and len(serial[1]) > 0
    assert parallel == serial


def test_making_a_chunk_leaves_the_cycle_collector_as_it_found_it(analysed_run):
    """make_chunk pauses Python's cycle collector while it works (app/store/chunks.py) and restores it, also when the
    chunk fails, and leaves a collector someone else paused paused."""
    import gc

    from app.store.chunks import make_chunk

    npz = analysed_run / "analysis" / "neurons" / "units.npz"
    assert gc.isenabled()
    assert len(make_chunk(npz, 1, "m", 2, 0, 3).units) == 3 and gc.isenabled()
    with pytest.raises(MonoscopeError):
        make_chunk(analysed_run / "missing.npz", 1, "m", 2, 0, 3)
    assert gc.isenabled()
    gc.disable()
    try:
        make_chunk(npz, 1, "m", 2, 0, 3)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_ingest_refuses_no_workers_in_one_line(monkeypatch, capsys, analysed_run, tmp_path):
    from webapp_fixtures import assert_one_line_error, monoscope

    result = monoscope(monkeypatch, capsys, "ingest", "--run", analysed_run, "--db", f"sqlite:///{tmp_path / 'x.db'}",
                       "--workers", "0")
    assert_one_line_error(result, "--workers must be at least 1")
    assert not (tmp_path / "x.db").exists()  # refused before anything was written

