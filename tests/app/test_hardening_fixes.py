"""Smaller holes found by trying the lab server as an attacker would (issue 23), each against the real server or the
real command: form values parsed through one validated path, messages that say what is wrong, retried label writes
stored once, the SQLite write-ahead log truncated after an ingest, and clean command-line output."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from webapp_fixtures import SAE_NAME, ingest_run, monoscope, start_server, stop_server

from app.read.text_rules import NOT_BLANK_NO_NUL

EXE = Path(sys.executable).with_name("monoscope")
LABELS = f"/api/v1/bases/{SAE_NAME}/units/{{index}}/labels"
RUBRIC = {"hypothesis": "h", "confidence": 1, "token_consistency": 1, "logit_consistency": 1, "effect_gap": 0,
          "specificity": 1}


def _review(ws, name: str) -> int:
    r = ws.site.post("/api/v1/reviews", json={"name": name, "bases": ["neurons", SAE_NAME], "per_basis": 1},
                     headers=ws.auth("alice"))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_odd_numbers_in_the_item_form_are_a_422_not_a_500(writable_site):
    ws = writable_site
    review_id = _review(ws, "odd numbers")
    for n_intervals in ("²", "٣", "1e3", "-1", "9" * 5000, "65"):
        r = ws.site.post(f"/reviews/{review_id}/items/1", data={**RUBRIC, "n_intervals": n_intervals},
                         headers=ws.auth("bob"))
        assert r.status_code == 422 and "n_intervals" in r.text, (n_intervals, r.status_code)
    r = ws.site.post(f"/reviews/{review_id}/items/1", data={**RUBRIC, "confidence": "²", "n_intervals": "11"},
                     headers=ws.auth("bob"))
    assert r.status_code == 422 and "confidence" in r.text
    assert ws.site.get(f"/api/v1/reviews/{review_id}/items/1", headers=ws.auth("bob")).json()["mine"] is None
    saved = ws.site.post(f"/reviews/{review_id}/items/1", data={**RUBRIC, "n_intervals": "11", "interval_0": "2"},
                         headers=ws.auth("bob"))
    assert saved.status_code == 303
    mine = ws.site.get(f"/api/v1/reviews/{review_id}/items/1", headers=ws.auth("bob")).json()["mine"]
    assert mine["interval_scores"] == [2] + [None] * 10
    # the page's live-inference position box: a superscript digit is no position
    assert ws.site.get("/infer", params={"text": "def f(x):", "position": "²"}).status_code == 200


def test_the_results_gate_says_a_skipped_item_does_not_count(writable_site):
    ws = writable_site
    review_id = _review(ws, "skip does not count")
    items = [1, 2]
    ws.site.post(f"/api/v1/reviews/{review_id}/items/{items[0]}/score", json=RUBRIC, headers=ws.auth("bob"))
    ws.site.post(f"/api/v1/reviews/{review_id}/items/{items[1]}/skip", headers=ws.auth("bob"))
    r = ws.site.get(f"/api/v1/reviews/{review_id}/results", headers=ws.auth("bob"))
    assert r.status_code == 403
    assert "scored or skipped" not in r.json()["detail"] and "skipped item still counts" in r.json()["detail"]


def test_a_nul_in_a_name_is_named_not_counted(writable_site):
    ws = writable_site
    for body, field in (({"name": "a\x00b", "bases": ["neurons"], "per_basis": 1}, "name"),
                        ({"name": "fine", "bases": ["neurons"], "per_basis": 1, "model": None}, None)):
        r = ws.site.post("/api/v1/reviews", json=body, headers=ws.auth("alice"))
        if field is None:
            assert r.status_code == 201, r.text
            continue
        assert r.status_code == 422 and "NUL" in r.json()["detail"] and "characters, got" not in r.json()["detail"]
    for body in ({"text": "a\x00b"}, {"text": "ok", "note": "a\x00b"}):
        r = ws.site.post(LABELS.format(index=80), json=body, headers=ws.auth("alice"))
        assert r.status_code == 422 and "NUL" in r.json()["detail"], r.text
    page = ws.site.post("/reviews", data={"name": "a\x00b", "bases": "neurons", "per_basis": "1"},
                        headers=ws.auth("alice"))
    assert page.status_code == 422 and "NUL" in page.text


def test_a_retried_label_write_is_stored_once(writable_site):
    ws = writable_site
    path = LABELS.format(index=81)
    key = {"Idempotency-Key": "retry-81-a"}
    first = ws.site.post(path, json={"text": "once"}, headers={**ws.auth("alice"), **key})
    again = ws.site.post(path, json={"text": "once"}, headers={**ws.auth("alice"), **key})  # the connection dropped
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    other = ws.site.post(path, json={"text": "something else"}, headers={**ws.auth("alice"), **key})
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["detail"]
    bob = ws.site.post(path, json={"text": "once"}, headers={**ws.auth("bob"), **key})  # keys are per user
    assert bob.status_code == 201 and bob.json()["id"] != first.json()["id"]
    bad = ws.site.post(path, json={"text": "x"}, headers={**ws.auth("alice"), "Idempotency-Key": "two words"})
    assert bad.status_code == 422
    assert [h["author"] for h in ws.site.get(path).json()["history"]] == ["bob", "alice"]
    # The unit page's form carries a key of its own: the same form sent twice is one label.
    with ws.site.client() as browser:
        token = browser.get("/login").text.split('name="csrftoken" value="')[1].split('"')[0]
        browser.post("/login", data={"token": ws.tokens["alice"], "csrftoken": token})
        panel = browser.get(f"/bases/{SAE_NAME}/units/82/labels").text
        fields = {name: panel.split(f'name="{name}" value="')[1].split('"')[0] for name in ("csrftoken", "request_key")}
        for _ in range(2):
            sent = browser.post(f"/bases/{SAE_NAME}/units/82/labels", data={**fields, "text": "double click"})
            assert sent.status_code == 303
    assert [h["text"] for h in ws.site.get(LABELS.format(index=82)).json()["history"]] == ["double click"]


def test_the_write_ahead_log_is_truncated_after_an_ingest(analysed_run, tmp_path):
    db = tmp_path / "monoscope.db"
    url = f"sqlite:///{db}"
    ingest_run(analysed_run, url)
    server = start_server(url, analysed_run)  # a reader keeps the database open, so the log is not deleted
    try:
        assert server.get("/api/v1/overview").status_code == 200
        done = subprocess.run([str(EXE), "ingest", "--run", str(analysed_run), "--db", url], capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        wal = db.with_name(db.name + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0, wal.stat().st_size
        assert server.get(f"/api/v1/bases/{SAE_NAME}/units/0").status_code == 200
    finally:
        stop_server(server)


def test_map_help_names_the_extra(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERMINAL_WIDTH", "200")
    code, out, _ = monoscope(monkeypatch, capsys, "map", "--help")
    assert code == 0 and "pip install 'monoscope[map]'" in " ".join(out.split()), out
    code, out, _ = monoscope(monkeypatch, capsys, "analyze", "--help")
    assert code == 0 and "monoscope[ray]" in "".join(out.split()), out


def test_match_prints_no_numpy_warning(analysed_run, tmp_path):
    from safetensors.numpy import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(analysed_run, run)
    weights = run / "saes" / SAE_NAME / "sae_weights.safetensors"
    tensors = load_file(weights)
    tensors["b_enc"][0] = -1e6  # feature 0 never fires: a unit that never varies (the demo's SAE has some)
    save_file(tensors, weights)
    done = subprocess.run([str(EXE), "match", "--run", str(run), "--basis", "neurons", "--other-basis", SAE_NAME,
                           "--tokens", "2048", "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "divide" not in done.stderr, done.stderr


def test_dead_units_have_no_correlation_and_no_warning():
    import warnings

    import numpy as np

    from sae.analysis.correlation import CorrelationSums

    sums = CorrelationSums.zeros(3, 2)
    rng = np.random.default_rng(0)
    a = rng.random((50, 3))
    a[:, 1] = 0  # a dead unit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sums.update(a, rng.random((50, 2)))
        best, corr, _, _ = sums.best_matches()
    assert best[1] == -1 and np.isnan(corr[1]) and np.isfinite(corr[[0, 2]]).all()


def test_the_text_pattern_is_the_servers_rule():
    import re

    pattern = re.compile(NOT_BLANK_NO_NUL)
    for c in range(0x3100):
        text = chr(c)
        assert bool(pattern.fullmatch(text)) == (bool(text.strip()) and c != 0), hex(c)
