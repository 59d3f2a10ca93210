"""Best matches in the product: `monoscope match` between two runs (here two copies of one analysed run, so every
unit's best match is itself at correlation 1), ingested both ways, on unit pages and the matches page (real server)."""

from __future__ import annotations

import html
import json
import shutil

import httpx
import numpy as np
import pytest
from webapp_fixtures import QUIET, SAE_NAME, start_server, stop_server

from app.store.db import upgrade
from app.store.ingest import ingest_run
from sae.analysis.matching import match_bases

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture(scope="module")
def matched(analysed_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("matched")
    run_a, run_b = root / "alpha", root / "beta"
    shutil.copytree(analysed_run, run_a)
    shutil.copytree(analysed_run, run_b)
    for basis in ("neurons", SAE_NAME):
        match_bases(run_a, basis, run_b, basis, n_tokens=4096, device="cpu", progress=False, log=QUIET)
    url = f"sqlite:///{root / 'matches.db'}"
    upgrade(url)
    early: list[str] = []
    ingest_run(run_a, url=url, log=early.append)  # run B is not in the database yet: the matches wait
    ingest_run(run_b, url=url, log=QUIET)
    late: list[str] = []
    ingest_run(run_a, url=url, log=late.append)
    site = start_server(url, run_a)
    yield site, run_a, early, late
    stop_server(site)


def test_matches_wait_for_the_other_run_then_link_both_ways(matched):
    site, run_a, early, late = matched
    assert any("left out" in line and "beta" in line for line in early)
    assert sum("ingested match" in line for line in late) == 2
    pairs = httpx.get(site.url + "/api/v1/matches", timeout=30).json()["pairs"]
    assert {(p["model"], p["basis"], p["other_model"], p["other_basis"]) for p in pairs} == {
        (a, basis, b, basis) for basis in ("neurons", SAE_NAME) for a, b in (("alpha", "beta"), ("beta", "alpha"))}
    for p in pairs:  # one LM twice: every live unit's best match is itself
        assert p["median"] == pytest.approx(1.0, abs=1e-4) and sum(p["counts"]) == p["n_units"] > 0
    m = dict(np.load(run_a / "analysis" / "matches" / "neurons--beta--neurons" / "matches.npz"))
    index = int(np.flatnonzero(m["a_best"] >= 0)[0])
    unit = httpx.get(f"{site.url}/api/v1/bases/neurons/units/{index}?model=alpha", timeout=30).json()
    best = [link for link in unit["links"] if link["kind"] == "best_match"]
    assert len(best) == 1 and best[0]["model"] == "beta" and best[0]["index"] == m["a_best"][index] == index
    assert best[0]["weight"] == pytest.approx(float(m["a_corr"][index])) and best[0]["url"].endswith("?model=beta")
    assert httpx.get(site.url + best[0]["url"], timeout=30).status_code == 200
    page = httpx.get(f"{site.url}/bases/neurons/units/{index}?model=alpha", timeout=30).text
    assert "most correlated unit of another model" in page and "neurons of beta" in page


def test_matches_page_draws_both_distributions(matched):
    site, *_ = matched
    page = httpx.get(site.url + "/matches", timeout=30).text
    assert page.count("<tr><td><a href=") == 4 and 'id="match-plot"' in page
    spec = page.split('id="match-plot"')[1].split('class="plot-spec">')[1].split("</script>")[0]
    data = json.loads(html.unescape(spec))["data"]
    assert len(data) == 4 and all(abs(sum(trace["y"]) - 1) < 1e-6 for trace in data)
