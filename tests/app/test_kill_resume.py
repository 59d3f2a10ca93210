"""Killing `monoscope analyze` or `monoscope ingest` midway (SIGKILL, the real commands in subprocesses) and running
it again: nothing half-done is ever visible, and the rerun ends where an uninterrupted run ends.

The kill points are found from outside, by polling: analyze is killed once its spill folder exists (pass 1 running);
ingest once the neuron basis is committed and the next basis's write transaction is open (SQLite's write lock is
taken; PostgreSQL shows a backend with a transaction id), so that basis is half-written when the process dies.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from webapp_fixtures import SAE_NAME, ingest_run

from app.store.db import make_engine
from sae import rundir

EXE = Path(sys.executable).with_name("monoscope")
# Fewer tokens than analysed_run's analysis (different contents); one CPU thread, as `reanalysed_run` is made with,
# so the command's arrays equal the fixture's bit for bit.
ANALYZE = ("--tokens", "4096", "--batch", "32", "--device", "cpu")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
BASES = ("neurons", SAE_NAME)


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([str(EXE), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **ONE_THREAD, "PYTHONUNBUFFERED": "1"})


def run(*args) -> subprocess.CompletedProcess:
    result = subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, **ONE_THREAD})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def wait_for_line(process: subprocess.Popen, start_of_line: str) -> None:
    for line in process.stdout:
        if line.startswith(start_of_line):
            return
    raise AssertionError(f"exited {process.wait()} before printing {start_of_line!r}")


def poll(condition, process: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"exited {process.returncode} before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.001)


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL  # it was still running: the kill landed midway
    process.stdout.close()


def fresh_run(analysed_run: Path, folder: Path) -> Path:
    """A copy of the analysed run (corpus, LM, SAE) without its analysis, named like it (the same model)."""
    target = folder / analysed_run.name
    shutil.copytree(analysed_run, target, ignore=shutil.ignore_patterns("analysis"))
    return target


def stage_arrays(basis_dir: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for name in ("units.npz", "links.npz"):
        if (basis_dir / name).is_file():
            with np.load(basis_dir / name) as z:
                arrays.update({f"{name}:{k}": z[k] for k in z.files})
    return arrays


@pytest.fixture(scope="module")
def reanalysed_run(analysed_run, tmp_path_factory) -> Path:
    """The analysed run's twin (same model name) analysed over fewer tokens: a newer version of both bases."""
    import torch

    from sae.analysis.run import run_analysis
    from sae.analysis.shard import AnalysisConfig

    run_dir = fresh_run(analysed_run, tmp_path_factory.mktemp("reanalysed"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_analysis(run_dir, cfg=AnalysisConfig(n_tokens=4096, batch_sequences=32), device="cpu", progress=False,
                     log=lambda message: None)
    finally:
        torch.set_num_threads(threads)
    return run_dir


def test_a_killed_analyze_leaves_no_stage_and_a_rerun_equals_an_uninterrupted_one(analysed_run, reanalysed_run,
                                                                                    tmp_path):
    killed, reference = fresh_run(analysed_run, tmp_path), reanalysed_run
    analysis = killed / "analysis"
    process = start("analyze", "--run", killed, *ANALYZE)
    wait_for_line(process, "analysing neurons, tiny-sae")
    poll(lambda: any(analysis.glob(".spill-*")), process, "a spill folder")
    kill(process)

    assert [p.name for p in analysis.iterdir() if not p.name.startswith(".")] == []  # no stage, half or whole
    # What a kill between a stage's basis.json and its rename leaves (too brief a moment to hit from outside):
    # a complete-looking temporary folder. Neither ingest nor analyze may take it for the stage.
    shutil.copytree(analysed_run / "analysis" / "neurons", analysis / ".neurons.tmp-deadbeef")
    (analysis / ".neurons.tmp-deadbeef" / rundir.MANIFEST).unlink()
    refused = subprocess.run([str(EXE), "ingest", "--run", killed, "--db", f"sqlite:///{tmp_path / 'x.db'}"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "no analysed bases" in refused.stderr, refused.stderr

    again = run("analyze", "--run", killed, *ANALYZE).stdout
    assert "analysing neurons, tiny-sae" in again
    assert sorted(p.name for p in analysis.iterdir()) == sorted(BASES)  # leftovers gone
    for name in BASES:
        mine, theirs = rundir.read_manifest(analysis / name), rundir.read_manifest(reference / "analysis" / name)
        assert (mine["config"], mine["inputs"]) == (theirs["config"], theirs["inputs"])
        assert rundir.is_current(analysis / name, config=mine["config"], inputs=mine["inputs"])
        meta = [json.loads((r / "analysis" / name / "basis.json").read_text()) for r in (killed, reference)]
        assert meta[0] == meta[1] and meta[0]["n_tokens"] == 4096
        arrays, expected = stage_arrays(analysis / name), stage_arrays(reference / "analysis" / name)
        assert arrays.keys() == expected.keys() and "units.npz:top_effects" in arrays
        for key, value in expected.items():
            np.testing.assert_array_equal(arrays[key], value, err_msg=key)


def second_database(request, tmp_path, url: str) -> str:
    if url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'reference.db'}"
    return request.getfixturevalue("new_postgres_database")()


def writer_busy(url: str) -> bool:
    """Whether another connection holds an open write transaction on the database."""
    if url.startswith("sqlite"):
        probe = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError as e:
            assert "locked" in str(e)
            return True
        finally:
            probe.close()
    with make_engine(url).connect() as c:
        return bool(c.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                   "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL")).scalar())


def kill_ingest_midway(run_dir: Path, url: str) -> None:
    """Start `monoscope ingest` and kill it while the basis after the neurons is half-written."""
    process = start("ingest", "--run", run_dir, "--db", url)
    wait_for_line(process, "ingested neurons")
    poll(lambda: writer_busy(url), process, f"the {SAE_NAME} transaction")
    kill(process)


def bases(url: str) -> dict[str, tuple]:
    """{name: (status, fingerprint, units, examples)} of every basis row, as any reader sees the database now."""
    with make_engine(url).connect() as c:
        rows = c.execute(text(
            "SELECT b.name, b.status, b.fingerprint, (SELECT count(*) FROM unit u WHERE u.basis_id = b.id), "
            "(SELECT coalesce(sum(e.n), 0) FROM example e JOIN unit u ON u.id = e.unit_id WHERE u.basis_id = b.id) "
            "FROM basis b"))
        return {name: tuple(rest) for name, *rest in rows}


def expected(run_dir: Path, name: str) -> tuple:
    """(status, fingerprint, units, examples) of a complete ingest of one basis of a run."""
    with np.load(run_dir / "analysis" / name / "units.npz") as z:
        n_units, n_examples = len(z["density"]), sum(int(z[counts].sum()) for counts in (
            "top_count", "interval_sample_count", "review_top_count", "review_interval_sample_count"))
    return "ready", rundir.read_manifest(run_dir / "analysis" / name)["fingerprint"], n_units, n_examples


def contents(url: str) -> list[list[tuple]]:
    """Everything an ingest writes, without row ids, versions or times: equal for equal ingests."""
    queries = (
        "SELECT name, config, metrics FROM model",
        "SELECT token_id, text FROM token ORDER BY token_id",
        "SELECT name, kind, hook_name, n_units, d_in, architecture, metrics, density_histogram, config, status, "
        "fingerprint FROM basis ORDER BY name",
        "SELECT b.name, u.\"index\", u.firing_count, u.density, u.max_activation, u.mean_activation, u.top_tokens, "
        "u.act_hist, u.logit_hist, u.top_logits, u.bottom_logits, u.interval_edges, u.interval_counts "
        "FROM unit u JOIN basis b ON b.id = u.basis_id ORDER BY b.name, u.\"index\"",
        "SELECT b.name, u.\"index\", e.kind, e.n, e.width, e.buckets, e.\"values\", e.token_ids, e.activations, "
        "e.effects FROM example e JOIN unit u ON u.id = e.unit_id JOIN basis b ON b.id = u.basis_id "
        "ORDER BY b.name, u.\"index\", e.kind",
        "SELECT b.name, u.\"index\", l.kind, l.rank, t.name, l.target_index, l.weight FROM unit_link l "
        "JOIN unit u ON u.id = l.unit_id JOIN basis b ON b.id = u.basis_id JOIN basis t ON t.id = l.target_basis_id "
        "ORDER BY b.name, u.\"index\", l.kind, l.rank",
    )
    with make_engine(url).connect() as c:
        return [[tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in c.execute(text(q))]
                for q in queries]


def test_a_killed_ingest_shows_the_old_basis_or_none_and_a_rerun_equals_an_uninterrupted_one(
        request, database_url, analysed_run, reanalysed_run, tmp_path):
    old, new = analysed_run, reanalysed_run
    run("db", "upgrade", "--db", database_url)
    kill_ingest_midway(old, database_url)  # a first ingest: the SAE is not there at all
    assert bases(database_url) == {"neurons": expected(old, "neurons")}
    run("ingest", "--run", old, "--db", database_url)
    assert bases(database_url) == {name: expected(old, name) for name in BASES}

    kill_ingest_midway(new, database_url)  # a re-ingest: the old SAE, whole, until the new one is in
    assert bases(database_url) == {"neurons": expected(new, "neurons"), SAE_NAME: expected(old, SAE_NAME)}
    with make_engine(database_url).connect() as c:
        if c.dialect.name == "sqlite":
            assert c.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    run("ingest", "--run", new, "--db", database_url)  # no stale lock or leftover stops it
    assert bases(database_url) == {name: expected(new, name) for name in BASES}

    reference = second_database(request, tmp_path, database_url)
    ingest_run(old, reference)
    ingest_run(new, reference)
    assert contents(database_url) == contents(reference)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # one transaction's logic: one backend is enough
def test_a_new_vocabulary_hides_the_old_bases_until_each_is_ingested_again(database_url, analysed_run, tmp_path):
    """The same run rebuilt with another vocabulary: an old basis must not show its token ids as the new strings."""
    from app.read.queries.bases import NotFound, resolve_basis
    from app.store.db import session_factory

    renamed = fresh_run(analysed_run, tmp_path)
    shutil.copytree(analysed_run / "analysis", renamed / "analysis")
    strings = json.loads((renamed / "corpus" / "token_strings.json").read_text())
    strings[5] = "a new <token>"
    (renamed / "corpus" / "token_strings.json").write_text(json.dumps(strings))
    ingest_run(analysed_run, database_url)

    kill_ingest_midway(renamed, database_url)
    status = {name: row[0] for name, row in bases(database_url).items()}
    assert status == {"neurons": "ready", SAE_NAME: "building"}  # hidden, not shown with the wrong strings
    with session_factory(database_url)() as session:
        with pytest.raises(NotFound):
            resolve_basis(session, SAE_NAME, None)
    run("ingest", "--run", renamed, "--db", database_url)
    assert bases(database_url) == {name: expected(renamed, name) for name in BASES}
