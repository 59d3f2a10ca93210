"""Labels, users, tokens and CSRF against a real `monoscope serve`, on SQLite and on PostgreSQL.

Each test writes to units of its own (distinct unit indexes), so they share one server and database per backend.
"""

from __future__ import annotations

import hashlib
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from webapp_fixtures import SAE_NAME

from app.read.queries.bases import RESOLVE_TTL_S

LABELS = f"/api/v1/bases/{SAE_NAME}/units/{{index}}/labels"


def _rows(site, sql: str) -> list[tuple]:
    from sqlalchemy import text

    from app.store.db import make_engine

    with make_engine(site.db_url).connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def test_tokens_are_stored_only_as_hashes(writable_site):
    rows = _rows(writable_site.site, 'SELECT name, token_hash FROM "user"')
    assert {name for name, _ in rows} == {"alice", "bob"}
    for name, stored in rows:
        token = writable_site.tokens[name]
        assert stored == hashlib.sha256(token.encode()).hexdigest()
        assert token not in stored


def test_no_write_without_a_valid_token(writable_site):
    site = writable_site.site
    for headers in ({}, {"Authorization": "Bearer mst_not-a-real-token"}, {"Authorization": "Basic YWxpY2U6eA=="}):
        r = site.post(LABELS.format(index=1), json={"text": "should not land"}, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["detail"]
    assert site.get(LABELS.format(index=1)).json()["history"] == []
    assert site.get("/api/v1/me").status_code == 401
    assert site.get("/api/v1/me", headers=writable_site.auth("bob")).json() == {"name": "bob"}


def test_label_history_is_append_only_and_newest_first(writable_site):
    site = writable_site.site
    first = site.post(LABELS.format(index=2), json={"text": "  closing brackets  "}, headers=writable_site.auth("alice"))
    assert first.status_code == 201, first.text
    assert first.json()["text"] == "closing brackets" and first.json()["author"] == "alice"
    second = site.post(LABELS.format(index=2), json={"text": "closing brackets in dict literals", "note": "not lists"},
                       headers=writable_site.auth("bob"))
    assert second.status_code == 201
    history = site.get(LABELS.format(index=2)).json()
    assert [h["text"] for h in history["history"]] == ["closing brackets in dict literals", "closing brackets"]
    assert history["current"]["author"] == "bob" and history["current"]["note"] == "not lists"
    unit = site.get(f"/api/v1/bases/{SAE_NAME}/units/2").json()
    assert unit["label"] == "closing brackets in dict literals"
    by_alice = site.get("/api/v1/labels", params={"basis": SAE_NAME, "author": "alice"}).json()
    # the site is shared by the session's write tests (the browser test labels as alice too): unit 2 is this test's
    assert [(l["index"], l["text"]) for l in by_alice["labels"] if l["index"] == 2] == [(2, "closing brackets")]
    assert all(l["author"] == "alice" for l in by_alice["labels"])
    later = site.get("/api/v1/labels", params={"since": second.json()["created"]}).json()["labels"]
    assert [l["id"] for l in later if l["index"] == 2] == [second.json()["id"]]
    everything = site.get("/api/v1/labels").json()
    assert site.get("/api/v1/labels", params={"since": ""}).status_code == 422  # the API keeps to its schema
    page = site.get("/labels", params={"since": "", "author": "", "basis": "", "model": ""})  # the page's empty boxes
    assert page.status_code == 200 and "closing brackets in dict literals" in page.text
    model = second.json()["model"]
    by_model = site.get("/api/v1/labels", params={"model": model}).json()
    assert by_model["total"] == everything["total"] and by_model["model"] == model and everything["model"] is None
    assert f'name="model" value="{model}"' in site.get("/labels", params={"model": model}).text  # the form keeps it
    unknown = site.get("/api/v1/labels", params={"model": "no-such-model"})
    assert unknown.status_code == 404 and "no-such-model" in unknown.json()["detail"]


@pytest.mark.parametrize("body, status, fragment", [
    ({"text": ""}, 422, "text"),
    ({"text": "   "}, 422, "blank"),
    ({"text": "x" * 201}, 422, "200"),
    ({"text": "ok", "note": "n" * 2001}, 422, "2000"),
    ({"note": "no text"}, 422, "text"),
])
def test_bad_labels_get_a_message_and_store_nothing(writable_site, body, status, fragment):
    site = writable_site.site
    r = site.post(LABELS.format(index=3), json=body, headers=writable_site.auth("alice"))
    assert r.status_code == status and fragment in r.json()["detail"], r.text
    assert site.get(LABELS.format(index=3)).json()["history"] == []


def test_labels_of_unknown_units_are_404(writable_site):
    site = writable_site.site
    n_units = site.get(f"/api/v1/bases/{SAE_NAME}").json()["basis"]["n_units"]
    for path in (LABELS.format(index=n_units), "/api/v1/bases/nope/units/0/labels"):
        r = site.post(path, json={"text": "x"}, headers=writable_site.auth("alice"))
        assert r.status_code == 404 and r.json()["detail"], r.text


def test_two_hundred_writes_at_concurrency_fifty_all_land_in_order(writable_site):
    site = writable_site.site
    index = 10
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda i: site.post(LABELS.format(index=index), json={"text": f"label {i}"},
                                                    headers=writable_site.auth("alice" if i % 2 else "bob")),
                                range(200)))
    assert [a.status_code for a in answers] == [201] * 200
    history = site.get(LABELS.format(index=index)).json()["history"]
    assert len(history) == 200
    assert {h["text"] for h in history} == {f"label {i}" for i in range(200)}
    assert [h["id"] for h in history] == sorted((h["id"] for h in history), reverse=True)
    assert [h["created"] for h in history] == sorted((h["created"] for h in history), reverse=True)


def _csrf(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return re.search(r'name="csrftoken" value="([^"]+)"', page.text).group(1)


def test_browser_signs_in_labels_with_csrf_and_signs_out(writable_site):
    site = writable_site.site
    cookieless = site.post("/login", data={"token": writable_site.tokens["alice"]})
    assert cookieless.status_code == 403  # a cross-site page cannot sign a victim in as someone else
    odd = site.post(LABELS.format(index=4), json={"text": "x"}, headers={"x-csrftoken": "é".encode("latin-1"), "Cookie": "a=b"})
    assert odd.status_code == 403 and "CSRF" in odd.json()["detail"]  # a malformed token is refused, not a 500
    with site.client() as browser:
        token = _csrf(browser, "/login")
        bad = browser.post("/login", data={"token": "mst_wrong", "csrftoken": token})
        assert bad.status_code == 401 and "unknown or revoked" in bad.text
        signed = browser.post("/login", data={"token": writable_site.tokens["alice"], "csrftoken": token,
                                              "next": "https://evil.example/"})
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        cookie = next(c for c in signed.headers.get_list("set-cookie") if c.startswith("monoscope_session="))
        assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
        panel = f"/bases/{SAE_NAME}/units/4/labels"
        form_token = _csrf(browser, panel)
        assert "Save as alice" in browser.get(panel).text
        # A write with the session cookie but no CSRF token: refused, nothing stored.
        refused = browser.post(panel, data={"text": "forged"})
        assert refused.status_code == 403 and "CSRF" in refused.text
        refused_json = browser.post(LABELS.format(index=4), json={"text": "forged"})
        assert refused_json.status_code == 403 and "CSRF" in refused_json.json()["detail"]
        saved = browser.post(panel, data={"text": "string quotes", "csrftoken": form_token},
                             headers={"HX-Request": "true"})
        assert saved.status_code == 200 and 'id="current-label">string quotes<' in saved.text
        assert 'hx-swap-oob="true">· string quotes<' in saved.text  # the page's heading follows
        via_header = browser.post(LABELS.format(index=4), json={"text": "string quotes, both kinds"},
                                  headers={"x-csrftoken": form_token})
        assert via_header.status_code == 201 and via_header.json()["author"] == "alice"
        assert browser.get("/login").text.count("Signed in as") == 1
        browser.post("/logout", data={"csrftoken": _csrf(browser, "/login")})
        assert "Sign in" in browser.get("/login").text
        after = browser.post(panel, data={"text": "after logout", "csrftoken": _csrf(browser, "/login")})
        assert after.status_code == 401
    texts = [h["text"] for h in site.get(LABELS.format(index=4)).json()["history"]]
    assert texts == ["string quotes, both kinds", "string quotes"]


def test_a_hostile_label_renders_as_text_everywhere(writable_site):
    site = writable_site.site
    evil = '<script>alert("x")</script> & \'quotes\''
    r = site.post(LABELS.format(index=5), json={"text": evil, "note": "<b>bold?</b>"}, headers=writable_site.auth("bob"))
    assert r.status_code == 201 and r.json()["text"] == evil
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#39;quotes&#39;"
    pages = [f"/bases/{SAE_NAME}/units/5", f"/bases/{SAE_NAME}/units/5/labels", f"/bases/{SAE_NAME}?labelled=yes",
             "/labels?author=bob"]
    for path in pages:
        html = site.get(path).text
        assert "<script>alert" not in html and "<b>bold?</b>" not in html, path
        assert escaped in html, path


def test_unit_list_searches_filters_and_sorts_by_label(writable_site):
    site = writable_site.site
    for index, text in ((20, "Zebra stripes"), (21, "aardvark noses"), (22, "ZEBRA crossings")):
        assert site.post(LABELS.format(index=index), json={"text": text},
                         headers=writable_site.auth("alice")).status_code == 201
    found = site.get(f"/api/v1/bases/{SAE_NAME}", params={"q": "zebra", "labelled": "yes"}).json()["units"]
    assert {u["index"] for u in found} == {20, 22}
    labelled = site.get(f"/api/v1/bases/{SAE_NAME}", params={"labelled": "yes", "per_page": 500}).json()
    unlabelled = site.get(f"/api/v1/bases/{SAE_NAME}", params={"labelled": "no", "per_page": 500}).json()
    assert labelled["total"] + unlabelled["total"] == labelled["basis"]["n_units"]
    assert all(u["label"] for u in labelled["units"]) and not any(u["label"] for u in unlabelled["units"])
    ordered = site.get(f"/api/v1/bases/{SAE_NAME}", params={"sort": "label", "per_page": 500}).json()["units"]
    texts = [u["label"] for u in ordered if u["label"]]
    assert texts == sorted(texts, key=str.lower) and ordered[-1]["label"] is None  # unlabelled units last
    position = [u["index"] for u in ordered]
    assert position.index(21) < position.index(22) < position.index(20)  # aardvark, ZEBRA crossings, Zebra stripes
    assert site.post(LABELS.format(index=22), json={"text": "pedestrian crossings"},
                     headers=writable_site.auth("alice")).status_code == 201
    searched = site.get(f"/api/v1/bases/{SAE_NAME}", params={"q": "zebra"}).json()["units"]  # no labelled filter
    assert [(u["index"], u["label"]) for u in searched if u["index"] in (20, 21, 22)] == [(20, "Zebra stripes")]


def test_export_labels_writes_the_whole_history(writable_site, tmp_path):
    import csv
    import json
    import subprocess
    import sys
    from pathlib import Path

    site = writable_site.site
    assert site.post(LABELS.format(index=30), json={"text": 'comma, "quote"\nnewline'},
                     headers=writable_site.auth("alice")).status_code == 201
    assert site.post(LABELS.format(index=31), json={"text": "=HYPERLINK(1)"},
                     headers=writable_site.auth("alice")).status_code == 201
    exe = Path(sys.executable).with_name("monoscope")
    listed = site.get("/api/v1/labels").json()["labels"]
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"labels.{fmt}"
        done = subprocess.run([str(exe), "export", "labels", "--format", fmt, "--out", str(out), "--db", site.db_url],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        with out.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f)) if fmt == "csv" else [json.loads(line) for line in f]
        assert [int(r["id"]) for r in rows] == [l["id"] for l in listed]
        assert 'comma, "quote"\nnewline' in [r["text"] for r in rows]
        # CSV is opened by spreadsheets: a formula-like cell is kept as text; JSON lines keep it as typed.
        formula = "'=HYPERLINK(1)" if fmt == "csv" else "=HYPERLINK(1)"
        assert [r["text"] for r in rows] == [formula if l["text"] == "=HYPERLINK(1)" else l["text"] for l in listed]
    bad = subprocess.run([str(exe), "export", "labels", "--basis", "nope", "--db", site.db_url],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "no basis named" in bad.stderr


def test_labels_survive_a_re_ingest_of_their_basis(writable_site):
    from webapp_fixtures import ingest_run

    site = writable_site.site
    assert site.post(LABELS.format(index=40), json={"text": "kept across ingests", "note": "n"},
                     headers=writable_site.auth("bob")).status_code == 201
    before = site.get(LABELS.format(index=40)).json()
    ingest_run(site.run_dir, site.db_url)  # replaces every unit row of every basis
    assert site.get(LABELS.format(index=40)).json() == before
    assert site.get(f"/api/v1/bases/{SAE_NAME}/units/40").json()["label"] == "kept across ingests"


def test_revoked_users_can_no_longer_write(writable_site):
    import subprocess
    import sys
    from pathlib import Path

    from webapp_fixtures import add_user

    site = writable_site.site
    token = add_user(site.db_url, "carol")
    assert site.post(LABELS.format(index=41), json={"text": "before"},
                     headers={"Authorization": f"Bearer {token}"}).status_code == 201
    exe = Path(sys.executable).with_name("monoscope")
    done = subprocess.run([str(exe), "user", "revoke", "carol", "--db", site.db_url], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    r = site.post(LABELS.format(index=41), json={"text": "after"}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert [h["author"] for h in site.get(LABELS.format(index=41)).json()["history"]] == ["carol"]


def test_openapi_documents_the_bearer_scheme_on_every_write(writable_site):
    spec = writable_site.site.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer", "description": "The API token `monoscope user add NAME` printed."}
    computations = {"/api/v1/steer"}  # a POST that writes nothing (pinned sampling): open, the token optional
    posts = [(path, op) for path, ops in spec["paths"].items() for method, op in ops.items() if method == "post"]
    writes = [(path, op) for path, op in posts if path not in computations]
    assert len(writes) >= 5 and len(posts) == len(writes) + len(computations)
    for path, op in posts:
        if path in computations:
            assert op.get("security") == [{"HTTPBearer": []}, {}], path
            continue
        assert op.get("security") == [{"HTTPBearer": []}], path
        assert "401" in op["responses"], path


def test_a_refused_write_leaves_its_basis_readable(writable_site):
    # The write looked the basis up for everyone (a memo of RESOLVE_TTL_S); its rollback expired the shared row, and
    # every request for that basis failed with a 500 until the memo ran out (the schemathesis fuzz found it).
    ws, site = writable_site, writable_site.site
    path = LABELS.format(index=50)
    time.sleep(RESOLVE_TTL_S)  # so that the write below is the one that looks the basis up
    # a label the schema allows, refused inside the write's transaction (unit beyond the basis)
    refused = site.post(LABELS.format(index=10**6), json={"text": "fine"}, headers=ws.auth("alice"))
    assert refused.status_code == 404 and "unit" in refused.json()["detail"]
    assert site.get(path).status_code == 200
    assert site.get(f"/api/v1/bases/{SAE_NAME}/units/50").status_code == 200


def test_odd_filters_and_names_get_answers_not_server_errors(writable_site):
    site = writable_site.site
    assert site.get("/api/v1/labels", params={"since": "0001-01-01T00:00:00+05:00"}).status_code == 422
    unix = site.get("/api/v1/labels", params={"since": "1700000000"})  # pydantic alone read it as a Unix time
    assert unix.status_code == 422 and "ISO 8601" in unix.json()["detail"]
    nul = site.get("/api/v1/labels", params={"author": "a\x00b"})
    assert nul.status_code == 200 and nul.json()["total"] == 0
    r = site.post("/api/v1/reviews", json={"name": "n", "bases": ["neu\x00rons"], "per_basis": 1},
                  headers=writable_site.auth("alice"))
    assert r.status_code == 422 and "NUL" in r.json()["detail"]  # the schema's pattern says so too
