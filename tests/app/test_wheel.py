"""A plain (non-editable) `pip install` of the wheel works outside the checkout: templates, static files and
migrations travel inside it, and the installed `monoscope` finds them."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from webapp_fixtures import start_server, stop_server

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list, cwd: Path) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_wheel_installs_and_serves_outside_the_checkout(tmp_path):
    # Built without isolation so no build backend is fetched: hatchling comes with the dev extras.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist",
          ROOT], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("monoscope-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("app/templates/base.html", "app/static/monoscope.css", "app/migrations/env.py", "app/alembic.ini"):
        assert shipped in names
    assert not any(n.startswith(("tests/", "bench/")) for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    _run([venv / "bin/python", "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check", wheel],
         cwd=tmp_path)
    # The dependencies come from this environment's site-packages, after the new venv's own: `app` and `sae`
    # resolve to the installed wheel (this venv's editable finder is a .pth file, which a path entry does not run).
    new_site = _run([venv / "bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd=tmp_path).strip()
    Path(new_site, "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = _run([venv / "bin/python", "-c", "import app, sae; print(app.__file__); print(sae.__file__)"],
                 cwd=tmp_path).split()
    assert len(where) == 2 and all(w.startswith(new_site) for w in where), where

    exe = venv / "bin/monoscope"
    assert "train-sae" in _run([exe, "--help"], cwd=tmp_path)
    db_url = f"sqlite:///{tmp_path / 'wheel.db'}"
    _run([exe, "db", "upgrade", "--db", db_url], cwd=tmp_path)
    site = start_server(db_url, None, exe=exe, cwd=tmp_path)
    try:
        page = site.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        css = site.get("/static/monoscope.css")
        assert css.status_code == 200 and css.text == (ROOT / "static" / "monoscope.css").read_text()
    finally:
        stop_server(site)
