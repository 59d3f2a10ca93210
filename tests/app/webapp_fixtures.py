"""Fixtures of the web tests: a real run (tiny LM + SAE + analysis), a database ingested from it, and
`monoscope serve` running on a free port. Imported by tests/app/test_api.py, test_pages.py and test_escaping.py.

Everything goes through the real pipeline functions (analysis, migrations, ingest) and the real server process;
nothing of ours is mocked. Session-scoped: built once (a few seconds), shared read-only by the web tests.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

SAE_NAME = "tiny-sae"
QUIET = lambda message: None  # noqa: E731
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's, through Playwright from PyPI: never `playwright install`); skipped with the
    reason when missing, except in CI (CI=true), where that is a failure."""
    if not CHROMIUM.exists():
        message = "Chromium is missing: apt-get install -y --no-install-recommends chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def add_sae(run_dir: Path, name: str = SAE_NAME, seed: int = 0) -> None:
    """Train a small SAE on the tiny LM's MLP activations into saes/<name> (the `monoscope train-sae` stage)."""
    import torch

    from sae.dictionary import SAETrainConfig, train_sae_on_run

    torch.set_num_threads(min(2, torch.get_num_threads()))
    cfg = SAETrainConfig(d_sae=128, l1_coefficient=1.0, tokens=40_960, batch_size=512, seed=seed,
                         log_every=10, checkpoint_every=1000, eval_tokens=4096, init_sample_tokens=4096,
                         resample_sample_tokens=4096, precision="fp32")
    train_sae_on_run(run_dir, name, cfg, device="cpu", progress=False, log=QUIET)


def analyse(run_dir: Path) -> None:
    """Run `monoscope analyze` on every basis of the run (neurons + each SAE)."""
    from sae.analysis.run import run_analysis
    from sae.analysis.shard import AnalysisConfig

    run_analysis(run_dir, cfg=AnalysisConfig(n_tokens=8192, batch_sequences=32), device="cpu", progress=False,
                 log=QUIET)


def ingest_run(run_dir: Path, url: str) -> None:
    """Create the database by its migrations and ingest every analysed basis of the run."""
    from app.store.db import upgrade
    from app.store.ingest import ingest_run as ingest

    upgrade(url)
    ingest(run_dir, url=url, log=QUIET)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Site:
    """A running `monoscope serve` and what the tests need to know about the run behind it."""

    url: str
    run_dir: Path
    db_url: str
    process: subprocess.Popen

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return httpx.post(self.url + path, timeout=30, **kwargs)

    def client(self) -> httpx.Client:
        """A client that keeps cookies, as a browser does."""
        return httpx.Client(base_url=self.url, timeout=30)

    def units(self, basis: str) -> dict[str, np.ndarray]:
        with np.load(self.run_dir / "analysis" / basis / "units.npz") as z:
            return dict(z)


def start_server(db_url: str, run_dir: Path | None, *, exe: Path | None = None, cwd: Path | None = None,
                 port_from_env: bool = False, env: dict[str, str] | None = None) -> Site:
    """Start `monoscope serve --db URL --port P` (this venv's, or `exe`) and wait until it answers;
    `port_from_env` gives the port as MONOSCOPE_PORT (and the host as MONOSCOPE_HOST) instead of flags."""
    port = free_port()
    exe = exe or Path(sys.executable).with_name("monoscope")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if port_from_env:
        env.update(MONOSCOPE_PORT=str(port), MONOSCOPE_HOST="127.0.0.1")
    flags = [] if port_from_env else ["--port", str(port)]
    process = subprocess.Popen([str(exe), "serve", "--db", db_url, *flags], cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"monoscope serve exited {process.returncode}: {process.stdout.read()}")
        try:
            if httpx.get(url + "/static/monoscope.css", timeout=2).status_code == 200:
                return Site(url=url, run_dir=run_dir, db_url=db_url, process=process)
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("monoscope serve did not answer within 60 s")


def stop_server(site: Site) -> None:
    site.process.terminate()
    try:
        site.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        site.process.kill()


@pytest.fixture(scope="session")
def analysed_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of tiny_run with a trained SAE and the analysis of both bases (read-only for tests)."""
    run_dir = tmp_path_factory.mktemp("web_run") / "run"
    shutil.copytree(tiny_run, run_dir)
    add_sae(run_dir)
    analyse(run_dir)
    return run_dir


@pytest.fixture(scope="session")
def site(tmp_path_factory, analysed_run) -> Site:
    """`monoscope serve` over a SQLite database ingested from `analysed_run`."""
    db_url = f"sqlite:///{tmp_path_factory.mktemp('web_db') / 'monoscope.db'}"
    ingest_run(analysed_run, db_url)
    site = start_server(db_url, analysed_run)
    yield site
    stop_server(site)


def corpus_strings(run_dir: Path) -> list[str]:
    return json.loads((run_dir / "corpus" / "token_strings.json").read_text())


def add_user(db_url: str, name: str, exe: Path | None = None) -> str:
    """Create a user with `monoscope user add` (the real command) and return the token it printed."""
    exe = exe or Path(sys.executable).with_name("monoscope")
    out = subprocess.run([str(exe), "user", "add", name, "--db", db_url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().splitlines()[-1]
    assert token.startswith("mst_") and len(token) >= 43, out.stdout
    return token


@dataclass
class WritableSite:
    """A `monoscope serve` over its own database (labels and reviews get written), with two users' tokens."""

    site: Site
    tokens: dict[str, str]

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}


def monoscope(monkeypatch, capsys, *args):
    """Run the real console entry point in-process; return (exit code, stdout, stderr)."""
    from app.cli import main

    monkeypatch.setattr(sys, "argv", ["monoscope", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(result, *fragments):
    """Assert a (code, out, err) result is exit code 2 with one `monoscope: error:` line holding every fragment."""
    code, _, err = result
    assert code == 2
    # a progress bar may have drawn and erased itself with \r first: keep what each line ends up showing
    lines = [shown for line in err.split("\n") if (shown := line.rsplit("\r", 1)[-1]).strip()]
    assert len(lines) == 1 and lines[0].startswith("monoscope: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


SMALL = "small-sae"


def add_small_dictionary(run: Path) -> None:
    """A 32-feature dictionary of the same LM built from the trained SAE's first decoder rows, so that the trained
    SAE's features have parents; analysed like any other."""
    import torch

    from sae import rundir
    from sae.analysis.run import run_analysis
    from sae.analysis.shard import AnalysisConfig
    from sae.dictionary.model import SAEConfig, SparseAutoencoder
    from sae.dictionary.saelens_format import load_sae, save_sae

    big, _ = load_sae(run / "saes" / SAE_NAME)
    small = SparseAutoencoder(SAEConfig(d_in=big.W_enc.shape[0], d_sae=32))
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            full = getattr(big, name)
            getattr(small, name).copy_(full[:, :32] if name == "W_enc" else full[:32] if name != "b_dec" else full)
    with rundir.write_stage(run / "saes" / SMALL, stage="sae", config={"from": SAE_NAME}, inputs={}) as tmp:
        save_sae(small, tmp)
    run_analysis(run, sae_names=[SMALL], include_neurons=False, cfg=AnalysisConfig(n_tokens=8192, batch_sequences=32),
                 device="cpu", progress=False, log=QUIET)
