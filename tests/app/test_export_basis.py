"""`monoscope export basis`: the real command in a subprocess, on SQLite and PostgreSQL databases ingested from the
shared analysed run, with a label and a review score written through the store; the files are read back with
pyarrow, pandas and json and checked against the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq  # noqa: E402
import pytest
from sqlalchemy import func, select, text
from webapp_fixtures import SAE_NAME, ingest_run

from app.store import rubric
from app.store.db import read_snapshot, session_factory, write_transaction
from app.store.example_rows import decoded
from app.store.labels import add_label
from app.store.models import OPEN_KINDS, Basis, Example, Token, Unit
from app.store.reviews import Answer, close_review, create_review, find_item, save_score
from app.store.users import add_user

EXE = Path(sys.executable).with_name("monoscope")
TABLES = ("units", "examples", "labels", "review_scores", "explanations")
AWKWARD_LABEL = "closes <b> & \"quotes\" 'too'\nsecond line \u2028 \U0001f642"
AWKWARD_CHARS = set("<>&\"'\n")
SCORES = {"confidence": 2, "token_consistency": 3, "logit_consistency": 1, "effect_gap": 1, "specificity": 2}  # 9


ONE_BACKEND = pytest.mark.parametrize("labelled_db", ["sqlite"], indirect=True)  # the same checks on either


def monoscope(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("monoscope: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def labelled_db(request, tmp_path_factory, analysed_run) -> str:
    """A database of the analysed run with an awkward label and one review score on the SAE, written by the store."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('export_db') / 'monoscope.db'}"
    else:
        url = request.getfixturevalue("new_postgres_database")()
    ingest_run(analysed_run, url)
    with write_transaction(session_factory(url)) as session:
        sae = session.scalar(select(Basis).where(Basis.name == SAE_NAME))
        alice, _ = add_user(session, "alice")
        add_label(session, basis=sae, index=3, author=alice, text="first try", note=None)
        add_label(session, basis=sae, index=3, author=alice, text=AWKWARD_LABEL, note="a <note> & more")
        neurons = session.scalar(select(Basis).where(Basis.name == "neurons"))
        review = create_review(session, name="export", bases=[neurons, sae], per_basis=2, creator=alice, seed=7)
        for position in (1, 2, 3, 4):
            save_score(session, review, find_item(session, review, position), alice,
                       Answer("a <hypothesis> & \"more\"", SCORES), n_intervals=11)
        open_one = create_review(session, name="still open", bases=[neurons, sae], per_basis=2, creator=alice, seed=8)
        save_score(session, open_one, find_item(session, open_one, 1), alice, Answer("open", SCORES), n_intervals=11)
        close_review(session, review, alice)  # only a closed review's scores leave: an open one's items stay blind
    return url


@pytest.fixture(scope="module")
def exported(labelled_db, tmp_path_factory) -> dict[str, dict[str, list[dict]]]:
    """Both formats exported by the real command; rows per format and table."""
    rows = {}
    for fmt in ("parquet", "jsonl"):
        out = tmp_path_factory.mktemp(f"export_{fmt}") / "out"
        result = monoscope("export", "basis", "--basis", SAE_NAME, "--format", fmt, "--out", out, "--db", labelled_db)
        assert result.returncode == 0, result.stderr
        assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}.{fmt}" for t in TABLES)  # no temporary left
        if fmt == "parquet":
            rows[fmt] = {t: pq.read_table(out / f"{t}.parquet").to_pylist() for t in TABLES}
        else:
            rows[fmt] = {t: [json.loads(line) for line in (out / f"{t}.jsonl").read_text(encoding="utf-8")
                             .split("\n") if line] for t in TABLES}
        rows[fmt]["folder"] = out
    return rows


def _db_examples(url: str, index: int) -> list[tuple]:
    """(kind, bucket, rank, token strings, activations, effects) of one SAE unit, straight from the tables."""
    with session_factory(url)() as session:
        basis = session.scalar(select(Basis).where(Basis.name == SAE_NAME))
        strings = dict(session.execute(select(Token.token_id, Token.text).where(Token.model_id == basis.model_id)).all())
        rows = session.execute(select(Example.kind, Example.n, Example.width, Example.buckets, Example.codec,
                                      Example.token_ids, Example.activations, Example.effects)
                               .join(Unit, Unit.id == Example.unit_id)
                               .where(Unit.basis_id == basis.id, Unit.index == index, Example.kind.in_(OPEN_KINDS))
                               .order_by(Example.kind.desc())).all()
    out = []
    for kind, n, width, buckets, codec, *blobs in rows:  # one row per kind, its windows packed in page order
        ids, acts, effects = (np.frombuffer(decoded(b, codec), t).reshape(n, width)
                              for b, t in zip(blobs, ("<i4", "<f4", "<f4")))
        bucket = [None] * n if buckets is None else np.frombuffer(buckets, "<i4").tolist()
        for i in range(n):
            keep = ids[i] >= 0
            out.append((kind, bucket[i], bucket[:i].count(bucket[i]), [strings[t] for t in ids[i][keep].tolist()],
                        acts[i][keep].tolist(), [None if np.isnan(e) else float(e) for e in effects[i][keep]]))
    return out


def test_export_matches_the_database(exported, labelled_db):
    with session_factory(labelled_db)() as session:
        basis = session.scalar(select(Basis).where(Basis.name == SAE_NAME))
        n_examples = session.scalar(select(func.sum(Example.n)).join(Unit).where(Unit.basis_id == basis.id,
                                                                                 Example.kind.in_(OPEN_KINDS)))
        unit = session.scalar(select(Unit).where(Unit.basis_id == basis.id, Unit.index == 3))
        strings = dict(session.execute(select(Token.token_id, Token.text).where(Token.model_id == basis.model_id)).all())
    for fmt in ("parquet", "jsonl"):
        tables = exported[fmt]
        assert [u["index"] for u in tables["units"]] == list(range(basis.n_units))
        assert len(tables["examples"]) == n_examples > basis.n_units
        u3 = tables["units"][3]
        assert (u3["density"], u3["max_activation"], u3["label"]) == (unit.density, unit.max_activation, AWKWARD_LABEL)
        assert u3["top_logit_ids"] == [i for i, _ in unit.top_logits]
        assert u3["top_logit_values"] == [v for _, v in unit.top_logits]
        mine = [(e["kind"], e["interval"], e["rank"], e["tokens"], e["activations"], e["effects"])
                for e in tables["examples"] if e["index"] == 3]
        assert mine == _db_examples(labelled_db, 3) and len(mine) > 20  # top contexts and interval samples
        spelled = [(e["tokens"], [strings[i] for i in e["token_ids"]]) for e in tables["examples"]]
        assert all(mine == stored for mine, stored in spelled)  # every token string as the database holds it
        assert {c for tokens, _ in spelled for t in tokens for c in t} >= {"<", "&", "\n"}  # awkward ones among them
        for e in tables["examples"][:50]:
            assert e["text"] == "".join(e["tokens"]) and len(e["token_ids"]) == len(e["tokens"])
            assert e["activations"][e["max_position"]] == pytest.approx(e["value"], rel=1e-6)
        labels = tables["labels"]
        assert [(lb["index"], lb["text"], lb["note"], lb["author"]) for lb in labels] == [
            (3, "first try", None, "alice"), (3, AWKWARD_LABEL, "a <note> & more", "alice")]
        scores = tables["review_scores"]
        assert len(scores) == 2 and {s["basis"] for s in scores} == {SAE_NAME}  # the neuron items stay out
        assert all(s["rater"] == "alice" and s["total"] == 9 and s["review"] == "export" for s in scores)
        assert all({name: s[name] for name in rubric.NAMES} == SCORES for s in scores)  # a column per component


def test_both_formats_hold_the_same_rows_and_awkward_strings_byte_for_byte(exported):
    parquet, jsonl = exported["parquet"], exported["jsonl"]
    for table in TABLES:
        as_json = [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
                   for row in parquet[table]]
        assert as_json == jsonl[table], table
    awkward = {t for e in jsonl["examples"] for t in e["tokens"] if AWKWARD_CHARS & set(t)}
    assert awkward and all(t in {t for e in parquet["examples"] for t in e["tokens"]} for t in awkward)
    raw = (exported["jsonl"]["folder"] / "labels.jsonl").read_bytes()
    # UTF-8 as is; escaped only what JSON must escape, and U+2028, which str.splitlines() would take for a line end
    assert json.dumps(AWKWARD_LABEL, ensure_ascii=False).replace("\u2028", "\\u2028").encode() in raw


def test_pandas_reads_both_formats(exported):
    import pandas as pd  # comes with sae-lens (dev)

    from_parquet = pd.read_parquet(exported["parquet"]["folder"] / "examples.parquet")
    from_jsonl = pd.read_json(exported["jsonl"]["folder"] / "examples.jsonl", lines=True)
    assert len(from_parquet) == len(from_jsonl) == len(exported["jsonl"]["examples"])
    assert list(from_parquet["tokens"].iloc[0]) == from_jsonl["tokens"].iloc[0]
    assert from_parquet["value"].dtype == "float64"


@ONE_BACKEND
def test_bad_input_is_one_line(labelled_db, tmp_path):
    out = tmp_path / "out"
    assert_one_line_error(monoscope("export", "basis", "--basis", "nope", "--out", out, "--db", labelled_db),
                          "no basis named 'nope'")
    assert_one_line_error(monoscope("export", "basis", "--basis", SAE_NAME, "--model", "nope", "--out", out,
                                    "--db", labelled_db), "no model named 'nope'")
    assert_one_line_error(monoscope("export", "basis", "--basis", SAE_NAME, "--format", "csv", "--out", out,
                                    "--db", labelled_db), "--format must be parquet or jsonl")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert_one_line_error(monoscope("export", "basis", "--basis", SAE_NAME, "--out", blocker / "out",
                                    "--db", labelled_db), f"cannot write to {blocker / 'out'}")
    assert not out.exists()


@ONE_BACKEND
def test_jsonl_needs_no_pyarrow_and_parquet_says_what_to_install(labelled_db, tmp_path):
    shadow = tmp_path / "no_pyarrow" / "pyarrow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('pyarrow is not installed here')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")])}
    result = monoscope("export", "basis", "--basis", SAE_NAME, "--format", "jsonl", "--out", tmp_path / "j",
                       "--db", labelled_db, env=env)
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "j" / "units.jsonl").read_text().splitlines()) == 128
    assert_one_line_error(monoscope("export", "basis", "--basis", SAE_NAME, "--format", "parquet", "--out",
                                    tmp_path / "p", "--db", labelled_db, env=env), "pip install 'monoscope[export]'")
    labels = monoscope("export", "labels", "--format", "jsonl", "--db", labelled_db, env=env)  # the old command stays
    assert labels.returncode == 0 and AWKWARD_LABEL in [json.loads(line)["text"] for line in labels.stdout.splitlines()]


def test_a_read_snapshot_does_not_see_a_later_commit(labelled_db):
    """The export reads in one snapshot: a re-ingest committing meanwhile cannot mix two versions in its files."""
    sessions = session_factory(labelled_db)
    with read_snapshot(sessions) as reader:
        before = reader.scalar(text("SELECT count(*) FROM label"))
        with write_transaction(sessions) as writer:
            sae = writer.scalar(select(Basis).where(Basis.name == SAE_NAME))
            alice = writer.scalar(text("SELECT id FROM \"user\" WHERE name = 'alice'"))
            writer.execute(text("INSERT INTO label (basis_id, unit_index, author_id, text, created) "
                                "VALUES (:b, 5, :a, 'later', CURRENT_TIMESTAMP)"), {"b": sae.id, "a": alice})
        assert reader.scalar(text("SELECT count(*) FROM label")) == before
    with sessions() as fresh:
        assert fresh.scalar(text("SELECT count(*) FROM label")) == before + 1
        fresh.execute(text("DELETE FROM label WHERE text = 'later'"))
        fresh.commit()
