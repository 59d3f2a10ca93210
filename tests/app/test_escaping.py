"""Corpus and user strings are data, never markup: a run whose token strings (and a label, and the run's name) hold
`<script>alert(1)</script>`, quotes and `&` renders them as text on every page and in the plot JSON."""

from __future__ import annotations

import html
import json
import shutil

import numpy as np
import pytest
from markupsafe import escape
from webapp_fixtures import SAE_NAME, ingest_run, start_server, stop_server

SCRIPT = "<script>alert(1)</script>"
QUOTES = "a\"b'c&d"
LABEL = "<img src=x onerror=alert(2)> & 'label'"
RUN_NAME = "run<i>&'\""


@pytest.fixture(scope="module")
def evil_site(analysed_run, tmp_path_factory):
    """The analysed run under a hostile name, its strongest tokens renamed to hostile strings, served."""
    run_dir = tmp_path_factory.mktemp("evil") / RUN_NAME
    shutil.copytree(analysed_run, run_dir)
    with np.load(run_dir / "analysis" / "neurons" / "units.npz") as z:
        unit = int(np.argmax(z["firing_count"]))
        window = z["top_token_ids"][unit, 0]
        max_token = int(window[len(window) - 1 - 8])  # context_after = 8 tokens follow the max token
        logit_token = next(int(t) for t in z["logit_top_ids"][unit] if t != max_token)  # shown as a top logit
    strings_file = run_dir / "corpus" / "token_strings.json"
    strings = json.loads(strings_file.read_text())
    strings[max_token] = SCRIPT
    strings[logit_token] = QUOTES
    strings_file.write_text(json.dumps(strings, ensure_ascii=False))
    db_url = f"sqlite:///{tmp_path_factory.mktemp('evil_db') / 'evil.db'}"
    ingest_run(analysed_run, db_url)  # a second, older model: links must then carry ?model=
    ingest_run(run_dir, db_url)
    add_label(db_url, "neurons", unit, LABEL)
    site = start_server(db_url, run_dir)
    site.unit = unit
    yield site
    stop_server(site)


def add_label(db_url: str, basis: str, index: int, text: str) -> None:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from app.store.db import make_engine
    from app.store.models import Basis, Label

    with Session(make_engine(db_url)) as session:
        basis_id = session.scalar(select(Basis.id).where(Basis.name == basis).order_by(Basis.id.desc()))  # newest
        session.add(Label(basis_id=basis_id, unit_index=index, text=text))
        session.commit()


def assert_no_markup(page: str) -> None:
    assert SCRIPT not in page and "<img" not in page and "<i>" not in page


def test_hostile_strings_render_as_text(evil_site):
    unit_page = evil_site.get(f"/bases/neurons/units/{evil_site.unit}").text
    assert_no_markup(unit_page)
    assert str(escape(SCRIPT)) in unit_page
    assert str(escape(LABEL)) in unit_page
    assert "a&#34;b&#39;c&amp;d" in unit_page  # the top logit's string, quotes escaped too
    shown = {  # page -> the hostile data it shows, which must be there as escaped text
        "/": [RUN_NAME], "/bases/neurons": [SCRIPT, LABEL, RUN_NAME], "/bases/neurons?q=script": [SCRIPT],
        "/compare": [SCRIPT], f"/compare?basis={SAE_NAME}&neuron={evil_site.unit}": [SCRIPT, LABEL],
        "/infer?text=%3Cscript%3Ealert(1)%3C%2Fscript%3E": [SCRIPT],
        "/steer?prompt=%3Cscript%3Ealert(1)%3C%2Fscript%3E&pin=neurons%3A0&max_tokens=3": [SCRIPT],
        "/proxies?proxy=comment": [],
        f"/bases/neurons/units/{evil_site.unit}/proxy": []}
    for path, hostile in shown.items():
        page = evil_site.get(path)
        assert page.status_code == 200, path
        assert_no_markup(page.text)
        for text in hostile:
            assert str(escape(text)) in page.text, (path, text)


def test_search_finds_the_hostile_token_and_json_keeps_it_raw(evil_site):
    found = evil_site.get("/api/v1/bases/neurons", params={"q": SCRIPT, "per_page": 500}).json()
    assert evil_site.unit in [u["index"] for u in found["units"]]
    unit = evil_site.get(f"/api/v1/bases/neurons/units/{evil_site.unit}").json()
    assert unit["label"] == LABEL
    assert SCRIPT in [text for ex in unit["top_examples"] for text in ex["texts"]]
    overview = evil_site.get("/api/v1/overview").json()
    assert RUN_NAME in {b["model"] for b in overview["bases"]}  # the hostile run name survives as data
    assert_no_markup(evil_site.get("/").text)


def test_two_models_links_carry_the_escaped_model_name(evil_site):
    overview = evil_site.get("/api/v1/overview").json()["bases"]
    models = {b["model"] for b in overview}
    assert len(models) == 2 and RUN_NAME in models
    hostile, plain = RUN_NAME, next(m for m in models if m != RUN_NAME)
    newest = evil_site.get("/api/v1/bases/neurons").json()["basis"]
    assert newest["model"] == hostile  # without ?model=, the most recently ingested model
    assert evil_site.get("/api/v1/bases/neurons", params={"model": plain}).json()["basis"]["model"] == plain
    unit = evil_site.get(f"/api/v1/bases/neurons/units/{evil_site.unit}", params={"model": plain}).json()
    assert unit["label"] is None  # the label was added to the hostile model's basis only
    assert unit["links"] and all("model=" in link["url"] for link in unit["links"])  # a neuron links to features
    page = evil_site.get("/bases/neurons", params={"model": hostile}).text
    assert_no_markup(page)
    assert "model=run%3Ci%3E%26%27%22" in page.replace("&amp;", "&")


def test_plot_names_reach_plotly_as_text():
    """Plotly reads a subset of HTML in trace names: a basis named like markup is drawn as its text."""
    from app.present import plots
    from app.read.proxy_schemas import RankedBasis

    hostile = '<a href="javascript:alert(1)">x&y</a>'
    spec = plots.proxy_corr_plot([RankedBasis(name=hostile, kind="sae", n_units=1, units=[], correlations=[0.5])])
    assert spec["data"][0]["name"] == html.escape(f"{hostile} (saes)") and "<a" not in json.dumps(spec)
