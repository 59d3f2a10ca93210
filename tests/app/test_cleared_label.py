"""A unit's current label has one rule (app/store/labels.py): its newest label row wins, and an empty text there means
the unit has no label. Labelled, then cleared, a unit says so alike in the API's unit JSON, the unit list's JSON,
its label history, its pages and both formats of `monoscope export basis` (null), and in `monoscope export labels`
CSV (an empty cell). On SQLite and PostgreSQL, against a real `monoscope serve`."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from webapp_fixtures import SAE_NAME

from app.store.db import session_factory, write_transaction
from app.store.models import Basis, Label

EXE = Path(sys.executable).with_name("monoscope")
INDEX = 77  # a unit no other test labels (tests/app/test_labels.py keeps to its own)
LABEL = "soon cleared"


def clear(db_url: str, index: int) -> None:
    """Append a label row with an empty text, as an older version of the app or a script writing the table does
    (the store refuses empty labels)."""
    with write_transaction(session_factory(db_url)) as session:
        basis_id = session.scalar(select(Basis.id).where(Basis.name == SAE_NAME))
        session.add(Label(basis_id=basis_id, unit_index=index, text=""))


def export(*args) -> subprocess.CompletedProcess:
    done = subprocess.run([str(EXE), "export", *map(str, args)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done


def test_a_cleared_label_is_no_label_everywhere(writable_site, tmp_path):
    ws, site = writable_site, writable_site.site
    unit = f"/api/v1/bases/{SAE_NAME}/units/{INDEX}"
    listed = f"/api/v1/bases/{SAE_NAME}"
    assert site.post(f"{unit}/labels", json={"text": LABEL}, headers=ws.auth("alice")).status_code == 201
    assert site.get(unit).json()["label"] == LABEL
    clear(site.db_url, INDEX)

    assert site.get(unit).json()["label"] is None
    rows = site.get(listed, params={"per_page": 500}).json()["units"]
    assert [u["label"] for u in rows if u["index"] == INDEX] == [None]
    assert INDEX not in [u["index"] for u in site.get(listed, params={"labelled": "yes", "per_page": 500}).json()[
        "units"]]
    assert INDEX not in [u["index"] for u in site.get(listed, params={"q": LABEL}).json()["units"]]
    history = site.get(f"{unit}/labels").json()
    assert history["current"] is None and [h["text"] for h in history["history"]] == ["", LABEL]
    assert LABEL not in site.get(f"/bases/{SAE_NAME}/units/{INDEX}").text
    assert 'id="current-label-none"' in site.get(f"/bases/{SAE_NAME}/units/{INDEX}/labels").text

    for fmt in ("jsonl", "parquet"):
        if fmt == "parquet":
            pq = pytest.importorskip("pyarrow.parquet")
        out = tmp_path / fmt
        export("basis", "--basis", SAE_NAME, "--format", fmt, "--out", out, "--db", site.db_url)
        if fmt == "jsonl":
            units = [json.loads(line) for line in (out / "units.jsonl").read_text(encoding="utf-8").splitlines()]
        else:
            units = pq.read_table(out / "units.parquet").to_pylist()
        assert units[INDEX]["index"] == INDEX and units[INDEX]["label"] is None, fmt
    written = export("labels", "--format", "csv", "--basis", SAE_NAME, "--db", site.db_url).stdout
    mine = [row["text"] for row in csv.DictReader(written.splitlines()) if row["index"] == str(INDEX)]
    assert mine == [LABEL, ""]  # the history as written: the newest row, the clearing one, is an empty cell
