"""The feature map: `monoscope map` embeds every dictionary of a run in one UMAP (umap-learn, the paper's settings),
ingest places the units, and /map (with its JSON twin) draws them as a WebGL scatter in three colourings, each point
linking to its unit, hover text escaped. One UMAP fit for the module (numba compiles on first use)."""

from __future__ import annotations

import html
import json
import re
import shutil

import httpx
import numpy as np
import pytest
from webapp_fixtures import (QUIET, SAE_NAME, SMALL, add_small_dictionary, add_user, monoscope, start_server,
                             stop_server)

from app.store.db import upgrade
from app.store.ingest import ingest_run


@pytest.fixture(scope="module")
def mapped(analysed_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("mapped") / "run"
    shutil.copytree(analysed_run, run)
    add_small_dictionary(run)
    url = f"sqlite:///{run.parent / 'map.db'}"
    upgrade(url)
    ingest_run(run, url=url, log=QUIET)  # before the map: the page says how to make one
    site = start_server(url, run)
    yield site, run, url
    stop_server(site)


def spec(page: str) -> dict:
    raw = re.search(r'id="feature-map".*?class="plot-spec">(.*?)</script>', page, re.S)[1]
    return json.loads(html.unescape(raw))


def test_map_is_built_placed_and_drawn(mapped, monkeypatch, capsys):
    site, run, url = mapped
    assert "No map yet" in httpx.get(site.url + "/map", timeout=30).text
    code, out, err = monoscope(monkeypatch, capsys, "map", "--run", run)
    assert code == 0, err
    assert f"map: {128 + 32:,} features of {', '.join(sorted([SAE_NAME, SMALL]))}" in out
    arrays = dict(np.load(run / "analysis" / "map" / "map.npz"))
    assert arrays[f"{SAE_NAME}.x"].shape == (128,) and np.isfinite(arrays[f"{SMALL}.y"]).all()
    code, out, _ = monoscope(monkeypatch, capsys, "map", "--run", run)
    assert code == 0 and "up to date" in out
    # a label with markup, to check the hover text is escaped
    user = add_user(url, "mapper")
    r = httpx.post(f"{site.url}/api/v1/bases/{SMALL}/units/3/labels", json={"text": "<b>bold</b> & co"},
                   headers={"Authorization": f"Bearer {user}"}, timeout=30)
    assert r.status_code == 201, r.text
    ingest_run(run, url=url, log=QUIET)
    twin = httpx.get(site.url + "/api/v1/map", timeout=30).json()
    assert sorted(twin["bases"]) == sorted([SAE_NAME, SMALL]) and len(twin["points"]) == 160
    point = next(p for p in twin["points"] if p["basis"] == SMALL and p["index"] == 3)
    assert point["x"] == pytest.approx(float(arrays[f"{SMALL}.x"][3])) and point["label"] == "<b>bold</b> & co"
    page = httpx.get(site.url + "/map", timeout=30).text
    by_dictionary = spec(page)
    assert by_dictionary["links"] is True and {t["name"] for t in by_dictionary["data"]} == {SAE_NAME, SMALL}
    assert all(t["type"] == "scattergl" for t in by_dictionary["data"])
    small = next(t for t in by_dictionary["data"] if t["name"] == SMALL)
    i = small["customdata"].index(f"/bases/{SMALL}/units/3")
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in small["text"][i] and "<b>bold" not in small["text"][i]
    for url_path in small["customdata"][:3]:
        assert httpx.get(site.url + url_path, timeout=30).status_code == 200
    density = spec(httpx.get(site.url + "/map?colour=density", timeout=30).text)
    assert len(density["data"]) == 1 and len(density["data"][0]["marker"]["color"]) == 160
    labelled = spec(httpx.get(site.url + "/map?colour=label", timeout=30).text)
    assert [len(t["x"]) for t in labelled["data"]] == [1, 159]
    assert httpx.get(site.url + "/map?colour=rainbow", timeout=30).status_code == 422
    assert httpx.get(site.url + "/api/v1/map?model=nope", timeout=30).status_code == 404
