"""Example windows rendered at ingest (example.html): the unit page built from them is the page the live renderer
builds, shows the JSON twin's tokens and values, escapes awkward token strings, and a re-ingest replaces them."""

from __future__ import annotations

import json
import shutil
import sqlite3
from html.parser import HTMLParser

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, select
from webapp_fixtures import SAE_NAME, ingest_run, start_server, stop_server

from app.store.models import Basis, Example, Unit
from app.windows import unpack_html

AWKWARD = "<b>\"x\"&'y'</b>"


@pytest.fixture(scope="module")
def two_sites(analysed_run, tmp_path_factory):
    """The same ingest served twice: with its stored windows, and with them wiped (a basis ingested before they
    were stored, rendered live)."""
    folder = tmp_path_factory.mktemp("window_html")
    stored, live = folder / "stored.db", folder / "live.db"
    ingest_run(analysed_run, f"sqlite:///{stored}")
    shutil.copy(stored, live)
    with sqlite3.connect(live) as c:
        c.execute("UPDATE example SET html = NULL")
    sites = [start_server(f"sqlite:///{path}", analysed_run) for path in (stored, live)]
    yield sites
    for site in sites:
        stop_server(site)


def _units(site, basis: str, n: int) -> list[int]:
    return [u["index"] for u in httpx.get(f"{site.url}/api/v1/bases/{basis}?dead=exclude&per_page={n}").json()["units"]]


def test_stored_windows_make_the_page_the_live_renderer_makes(two_sites):
    stored, live = two_sites
    for basis in ("neurons", SAE_NAME):
        for index in _units(stored, basis, 8):
            path = f"/bases/{basis}/units/{index}"
            page = httpx.get(stored.url + path)
            assert page.status_code == 200 and page.text.count('<div class="ctx">') > 0
            assert page.text == httpx.get(live.url + path).text, path
            assert httpx.get(stored.url + "/api/v1" + path).json() == httpx.get(live.url + "/api/v1" + path).json()


class _Windows(HTMLParser):
    """Collect each context window of a page as its token spans: (class, title, data-e, text)."""

    def __init__(self):
        super().__init__()
        self.windows: list[list[list]] = []
        self.token: list | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and a.get("class") == "ctx":
            self.windows.append([])
        elif tag == "span" and a.get("class", "").startswith("tok"):
            self.token = [a["class"], a.get("title"), a.get("data-e"), ""]
            self.windows[-1].append(self.token)

    def handle_endtag(self, tag):
        if tag == "span":
            self.token = None

    def handle_data(self, data):
        if self.token is not None:
            self.token[3] += data


def test_page_shows_the_json_twins_tokens_and_values(two_sites):
    stored, _ = two_sites
    for basis in ("neurons", SAE_NAME):
        for index in _units(stored, basis, 4):
            path = f"/bases/{basis}/units/{index}"
            twin = httpx.get(stored.url + "/api/v1" + path).json()
            parser = _Windows()
            parser.feed(httpx.get(stored.url + path).text)
            examples = twin["top_examples"] + [ex for iv in reversed(twin["intervals"]) for ex in iv["samples"]]
            assert len(parser.windows) == len(examples) > 0
            effect_view = bool(twin["max_abs_effect"])
            for spans, ex in zip(parser.windows, examples):
                assert [s[3] for s in spans] == ex["shown"]
                assert [s[0] == "tok max" for s in spans] == [i == ex["max_position"] for i in range(len(spans))]
                for (_, title, sign, _), act, effect in zip(spans, ex["acts"], ex["effects"] or [None] * len(spans)):
                    if effect_view and effect:
                        assert title == f"{act:.4g} · Δ log p(next) {effect:+.3g}"
                        assert sign == ("-" if effect < 0 else "+")
                    else:
                        assert title == f"{act:.4g}" and sign is None


def _stored_html(url: str, basis: str, index: int) -> list[str]:
    engine = create_engine(url)
    with engine.connect() as c:
        rows = c.execute(select(Example.html).join(Unit, Unit.id == Example.unit_id).join(Basis)
                         .where(Basis.name == basis, Unit.index == index)
                         .order_by(Example.kind.desc(), Example.bucket, Example.rank)).scalars().all()
    engine.dispose()
    return [unpack_html(h) for h in rows]


def test_reingest_replaces_the_rendered_windows_and_escapes_awkward_tokens(analysed_run, database_url, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(analysed_run, run_dir)
    with np.load(run_dir / "analysis" / "neurons" / "units.npz") as z:
        unit = int(np.argmax(z["firing_count"]))
        max_token = int(z["top_token_ids"][unit, 0][z["top_token_ids"].shape[2] - 1 - 8])  # 8 tokens follow the max
    ingest_run(run_dir, database_url)
    before = _stored_html(database_url, "neurons", unit)
    strings_file = run_dir / "corpus" / "token_strings.json"
    strings = json.loads(strings_file.read_text())
    strings[max_token] = AWKWARD
    strings_file.write_text(json.dumps(strings, ensure_ascii=False))
    ingest_run(run_dir, database_url)
    after = _stored_html(database_url, "neurons", unit)
    assert len(after) == len(before) > 0  # replaced, not added to
    assert _max_token_text(before[0]) != AWKWARD  # the old string until the re-ingest
    assert _max_token_text(after[0]) == AWKWARD  # the browser shows the string itself...
    assert "&lt;b&gt;&quot;x&quot;&amp;&#x27;y&#x27;&lt;/b&gt;" in after[0]  # ...because the markup escapes it
    assert "<b>" not in "".join(after)


def _max_token_text(window: str) -> str:
    parser = _Windows()
    parser.feed(window)
    return next(text for cls, _, _, text in parser.windows[0] if cls == "tok max")
