"""What writers can count on: a write answered 2xx survives the server being killed, and closed servers stay closed.

Real `monoscope serve` processes over the writable databases of conftest.py (SQLite and PostgreSQL).
"""

from __future__ import annotations

import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import text
from webapp_fixtures import SAE_NAME, start_server, stop_server

from app.store.db import make_engine

LABELS = f"/api/v1/bases/{SAE_NAME}/units/{{index}}/labels"


def test_every_answered_write_survives_a_kill(writable_site):
    """A burst of label writes and review scores; the server is killed (SIGKILL) in the middle of it."""
    victim = start_server(writable_site.site.db_url, writable_site.site.run_dir)
    review = httpx.post(victim.url + "/api/v1/reviews", json={"name": "kill burst", "bases": ["neurons", SAE_NAME],
                                                               "per_basis": 30}, headers=writable_site.auth("bob"))
    assert review.status_code == 201, review.text
    review_id = review.json()["id"]
    answered: list[str] = []
    scored: list[int] = []
    lock = threading.Lock()

    def write(i: int) -> None:
        try:
            if i % 2:
                r = httpx.post(victim.url + LABELS.format(index=50 + i % 5), json={"text": f"burst {i}"},
                               headers=writable_site.auth("alice"), timeout=30)
            else:
                item = i // 2 % 60 + 1
                r = httpx.post(victim.url + f"/api/v1/reviews/{review_id}/items/{item}/score",
                               json={"hypothesis": f"burst {item}", "confidence": 1, "token_consistency": 1,
                                     "logit_consistency": 1, "effect_gap": 0, "specificity": 1},
                               headers=writable_site.auth("bob"), timeout=30)
        except httpx.TransportError:
            return  # the server died under this request: no answer, no promise
        with lock:
            if r.status_code in (200, 201):
                (answered.append(f"burst {i}") if i % 2 else scored.append(i // 2 % 60 + 1))
            if len(answered) + len(scored) == 60:
                victim.process.send_signal(signal.SIGKILL)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(write, range(400)))
    victim.process.wait(timeout=30)
    assert victim.process.returncode == -signal.SIGKILL
    assert answered and scored and len(answered) + len(scored) < 400

    again = start_server(writable_site.site.db_url, writable_site.site.run_dir)
    try:
        stored = []
        for index in range(50, 55):
            history = again.get(LABELS.format(index=index)).json()["history"]
            stored += [h["text"] for h in history]
        assert set(answered) <= set(stored)
        assert len(stored) == len(set(stored))  # no write landed twice
        for item in set(scored):
            mine = again.get(f"/api/v1/reviews/{review_id}/items/{item}", headers=writable_site.auth("bob")).json()
            assert mine["mine"]["hypothesis"] == f"burst {item}" and mine["mine"]["total"] == 4
    finally:
        stop_server(again)
    with make_engine(writable_site.site.db_url).connect() as c:
        if c.dialect.name == "sqlite":
            assert c.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        count = c.execute(text("SELECT count(*) FROM label WHERE unit_index BETWEEN 50 AND 54")).scalar()
        assert count == len(stored)
        per_item = c.execute(text("SELECT count(*), count(DISTINCT review_unit_id) FROM review_score s JOIN "
                                  "review_unit u ON u.id = s.review_unit_id WHERE u.review_id = :r"),
                             {"r": review_id}).one()
        assert per_item[0] == per_item[1] >= len(set(scored))  # one row per (item, rater), never two


def test_require_login_closes_reads_but_not_the_sign_in_page(writable_site):
    closed = start_server(writable_site.site.db_url, writable_site.site.run_dir,
                          env={"MONOSCOPE_REQUIRE_LOGIN": "true", "MONOSCOPE_SECURE_COOKIES": "true"})
    try:
        for path in ("/", "/api/v1/overview", f"/api/v1/bases/{SAE_NAME}/units/0", "/api/v1/labels"):
            r = closed.get(path)
            assert r.status_code == 401 and "sign in" in r.text, path
            assert closed.get(path, headers=writable_site.auth("bob")).status_code == 200, path
        login = closed.get("/login")
        assert login.status_code == 200
        assert closed.get("/static/monoscope.css").status_code == 200
        csrf_cookie = next(c for c in login.headers.get_list("set-cookie") if c.startswith("monoscope_csrf="))
        assert "secure" in csrf_cookie.lower()  # behind HTTPS, cookies stay on HTTPS
        token = re.search(r'name="csrftoken" value="([^"]+)"', login.text).group(1)
        signed = httpx.post(closed.url + "/login", data={"token": writable_site.tokens["bob"], "csrftoken": token},
                            cookies={"monoscope_csrf": login.cookies["monoscope_csrf"]})
        session_cookie = next(c for c in signed.headers.get_list("set-cookie") if c.startswith("monoscope_session="))
        assert signed.status_code == 303 and "secure" in session_cookie.lower()
    finally:
        stop_server(closed)
