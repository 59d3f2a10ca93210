"""The lab-server deployment without a Docker engine: docker-compose.yml and the Dockerfile say what they must
(PostgreSQL with a named volume and a health check; the app from the wheel, migrations on start, 0.0.0.0, non-root),
and the app started the way the image starts it, with the compose file's environment against the tests' PostgreSQL
server, serves pages."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from webapp_fixtures import free_port

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_declares_postgres_and_the_app(compose):
    assert set(compose["services"]) == {"db", "app"} and set(compose["volumes"]) == {"pgdata"}
    db, app = compose["services"]["db"], compose["services"]["app"]
    assert db["image"].startswith("postgres:") and "pgdata:/var/lib/postgresql/data" in db["volumes"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert app["depends_on"] == {"db": {"condition": "service_healthy"}} and app["build"] == "."
    url = urlsplit(app["environment"]["MONOSCOPE_DATABASE_URL"])
    assert url.scheme == "postgresql+psycopg" and url.hostname == "db" and url.port == 5432
    env = db["environment"]
    assert (url.username, url.password, url.path.lstrip("/")) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"],
                                                                  env["POSTGRES_DB"])
    assert app["environment"]["MONOSCOPE_HOST"] == "0.0.0.0"
    published = app["ports"][0].rsplit(":", 1)[-1]
    assert published == str(app["environment"]["MONOSCOPE_PORT"])
    for service in compose["services"].values():  # only this machine reaches the published ports
        assert all(str(p).startswith("127.0.0.1:") for p in service.get("ports", []))


def test_dockerfile_installs_the_wheel_migrates_and_runs_unprivileged():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert any(line.startswith("RUN") and "pip wheel" in line for line in lines)
    assert any("pip install" in line and "/dist/*.whl" in line for line in lines)
    user = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user and user[-1] not in ("root", "0")
    cmd = json.loads(next(line for line in lines if line.startswith("CMD"))[3:].strip())
    assert "monoscope db upgrade" in cmd[-1] and cmd[-1].endswith("monoscope serve")


def test_the_image_command_with_the_compose_environment_serves_pages(compose, postgres_server, tmp_path):
    from conftest import _new_postgres_database  # the session's PostgreSQL cluster (no engine: no `db` service)

    env = {key: str(value) for key, value in compose["services"]["app"]["environment"].items()}
    env["MONOSCOPE_DATABASE_URL"] = _new_postgres_database(postgres_server)  # `db` is this test's server
    env["MONOSCOPE_PORT"] = str(free_port())  # 8000 may be taken on a test machine
    cmd = json.loads(next(line for line in (ROOT / "Dockerfile").read_text().splitlines()
                          if line.startswith("CMD"))[3:].strip())
    exe_dir = Path(sys.executable).parent  # this venv's `monoscope`, as the image's PATH has its own
    process = subprocess.Popen(cmd, env={**os.environ, **env, "PATH": f"{exe_dir}:{os.environ['PATH']}"},
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{env['MONOSCOPE_PORT']}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            assert process.poll() is None, process.stdout.read()
            try:
                page = httpx.get(url + "/", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail(f"no answer from {shlex.join(cmd)} within 90 s")
        assert page.status_code == 200 and "Bases" in page.text  # migrated and serving on 0.0.0.0
        assert httpx.get(url + "/api/v1/bases", timeout=10).json() == []
    finally:
        process.terminate()
        process.wait(timeout=20)
