"""What writers can count on: a write answered 2xx survives the server being killed, and closed servers stay closed.

Real `monoscope serve` processes over the writable databases of conftest.py (SQLite and PostgreSQL).
"""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import text
from webapp_fixtures import SAE_NAME, start_server, stop_server

from app.store.db import make_engine

LABELS = f"/api/v1/bases/{SAE_NAME}/units/{{index}}/labels"


def test_every_answered_write_survives_a_kill(writable_site):
    victim = start_server(writable_site.site.db_url, writable_site.site.run_dir)
    answered: list[str] = []
    lock = threading.Lock()

    def write(i: int) -> None:
        try:
            r = httpx.post(victim.url + LABELS.format(index=50 + i % 5), json={"text": f"burst {i}"},
                           headers=writable_site.auth("alice"), timeout=30)
        except httpx.TransportError:
            return  # the server died under this request: no answer, no promise
        if r.status_code == 201:
            with lock:
                answered.append(f"burst {i}")
                if len(answered) == 40:
                    victim.process.send_signal(signal.SIGKILL)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(write, range(400)))
    victim.process.wait(timeout=30)
    assert victim.process.returncode == -signal.SIGKILL
    assert 40 <= len(answered) < 400

    again = start_server(writable_site.site.db_url, writable_site.site.run_dir)
    try:
        stored = []
        for index in range(50, 55):
            history = again.get(LABELS.format(index=index)).json()["history"]
            stored += [h["text"] for h in history]
        assert set(answered) <= set(stored)
        assert len(stored) == len(set(stored))  # no write landed twice
    finally:
        stop_server(again)
    with make_engine(writable_site.site.db_url).connect() as c:
        if c.dialect.name == "sqlite":
            assert c.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        count = c.execute(text("SELECT count(*) FROM label WHERE unit_index BETWEEN 50 AND 54")).scalar()
        assert count == len(stored)


def test_require_login_closes_reads_but_not_the_sign_in_page(writable_site):
    closed = start_server(writable_site.site.db_url, writable_site.site.run_dir,
                          env={"MONOSCOPE_REQUIRE_LOGIN": "true"})
    try:
        for path in ("/", "/api/v1/overview", f"/api/v1/bases/{SAE_NAME}/units/0", "/api/v1/labels"):
            r = closed.get(path)
            assert r.status_code == 401 and "sign in" in r.text, path
            assert closed.get(path, headers=writable_site.auth("bob")).status_code == 200, path
        assert closed.get("/login").status_code == 200
        assert closed.get("/static/monoscope.css").status_code == 200
    finally:
        stop_server(closed)
