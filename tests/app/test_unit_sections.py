"""A unit's UnitData and page sections stored at ingest (unit.sections): the page and twin built from them are those
the live renderer builds (also for a copy another version of the code stored), the page shows the twin's numbers,
tokens and values, awkward token strings are escaped, a re-ingest replaces them, and `monoscope db render` makes stale
ones current."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import httpx
import numpy as np
import pytest
import zstandard
from sqlalchemy import create_engine, select
from webapp_fixtures import SAE_NAME, ingest_run, start_server, stop_server

from app.present import unit_sections
from app.present.templating import format_number
from app.read.queries.bases import RESOLVE_TTL_S
from app.read.queries.unit import unit_view
from app.store.db import session_factory
from app.store.models import Basis, Unit

AWKWARD = "<b>\"x\"&'y'</b>"


@pytest.fixture(scope="module")
def two_sites(analysed_run, tmp_path_factory):
    """The same ingest served twice: with its stored sections, and with them wiped (a basis ingested before they
    were stored), stored by another version of the code, or damaged, so rendered live."""
    folder = tmp_path_factory.mktemp("window_html")
    stored, live = folder / "stored.db", folder / "live.db"
    ingest_run(analysed_run, f"sqlite:///{stored}")
    shutil.copy(stored, live)
    older = zstandard.ZstdCompressor().compress(  # the layout of FORMAT 1
        unit_sections.SEPARATOR.join(["0" * 16, "stats", "body", "examples"]).encode())
    with sqlite3.connect(live) as c:
        rows = c.execute('SELECT id, "index", sections FROM unit').fetchall()
        c.executemany("UPDATE unit SET sections = ? WHERE id = ?",
                      [(_stale(blob, index % 4, older), unit_id) for unit_id, index, blob in rows if index % 4])
    sites = [start_server(f"sqlite:///{path}", analysed_run) for path in (stored, live)]
    yield sites
    for site in sites:
        stop_server(site)


def _stale(blob: bytes, how: int, older: bytes) -> bytes | None:
    """Return a unit's stored blob as another version of the code left it: an older FORMAT (1), damaged (2), or the
    current UnitData with sections rendered by other templates (3)."""
    if how != 3:
        return older if how == 1 else b"damaged"
    raw = zstandard.ZstdDecompressor().decompress(blob)
    head, _, rest = raw.partition(b"\n")
    fmt, templates, *lengths = head.split(b" ")
    assert templates == unit_sections.TEMPLATES_HASH.encode()
    return zstandard.ZstdCompressor().compress(b" ".join([fmt, b"0" * 16, *lengths]) + b"\n" + rest)


def _units(site, basis: str, n: int) -> list[int]:
    return [u["index"] for u in httpx.get(f"{site.url}/api/v1/bases/{basis}?dead=exclude&per_page={n}").json()["units"]]


def test_stored_sections_make_the_page_the_live_renderer_makes(two_sites):
    stored, live = two_sites
    for basis in ("neurons", SAE_NAME):
        for index in _units(stored, basis, 8):
            path = f"/bases/{basis}/units/{index}"
            page = httpx.get(stored.url + path)
            assert page.status_code == 200 and page.text.count('<div class="ctx">') > 0
            assert page.text.count('<div class="stats">') == 1 and 'id="act-hist"' in page.text
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


def test_page_and_twin_show_the_same_numbers(two_sites):
    """One read, one view model: every statistic, logit weight and interval the page prints is the twin's number,
    formatted, for stored, stale and re-rendered units alike."""
    for site in two_sites:
        for basis in ("neurons", SAE_NAME):
            for index in _units(site, basis, 6):
                path = f"/bases/{basis}/units/{index}"
                twin, page = httpx.get(site.url + "/api/v1" + path).json(), httpx.get(site.url + path).text
                stats = dict(re.findall(r"<div><b>([^<]+)</b>([^<]*)</div>", page))
                assert stats["density"] == format_number(twin["density"])
                assert stats["firing tokens"] == format_number(twin["firing_count"])
                assert stats["max activation"] == format_number(twin["max_activation"])
                assert stats["mean activation (when firing)"] == format_number(twin["mean_activation"])
                assert stats["top-token entropy (bits)"] == format_number(twin["top_token_entropy"])
                assert stats["model"] == twin["basis"]["model"]
                logits = [format_number(t["value"]) for t in twin["top_logits"] + twin["bottom_logits"]]
                tables = page.split('<div class="logits">')[1].split("</div>")[0]
                assert re.findall(r'<td class="num">([^<]*)</td>', tables) == logits  # both tables, in order
                headings = re.findall(r"<h3>Interval (\d+): activation ([^ ]+) – ([^ ]+) · (?:([\d,]+) firing tokens, "
                                      r"([\d.]+)% of all|no firing tokens)</h3>", page)
                assert headings == [(str(iv["index"] + 1), format_number(iv["low"]), format_number(iv["high"]),
                                     format_number(iv["count"]) if iv["count"] else "",
                                     "%.1f" % iv["contains_pct"] if iv["count"] else "")
                                    for iv in reversed(twin["intervals"])]
                assert len(twin["intervals"]) == 11  # empty intervals too, said to be empty
                assert f"({format_number(twin['firing_count'])} firing tokens in the analysed text)" in page
                ranked = sorted((p for p in twin["proxies"] if p["corr_pos"] is not None), key=lambda p: -p["corr_pos"])
                table = page.split('<table class="proxy-table">')[1].split("</table>")[0]
                rows = re.findall(r"<td><code>([^<]+)</code></td>\s*<td class=\"num\">([^<]*)</td><td class=\"num\">"
                                  r"([^<]*)</td>", table)
                assert rows == [(p["name"], format_number(p["corr"]), format_number(p["corr_pos"])) for p in ranked]
                assert len(twin["proxies"]) >= 8 and f"by <code>{ranked[0]['name']}</code> score" in page
                assert f'id="label">{"· " + twin["label"] if twin["label"] else ""}</span>' in page


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


def _stored_windows(url: str, basis: str, index: int) -> list[str]:
    """Return the windows of a unit's page as the read model assembles it from the database (its stored sections, by
    this version of the code, and its example rows), each as its HTML."""
    with session_factory(url)() as session:
        blob = session.scalar(select(Unit.sections).join(Basis).where(Basis.name == basis, Unit.index == index))
        assert unit_sections.unpack(blob).sections is not None  # stored by this version of the code
        examples = unit_view(session=session, basis=basis, index=index, model=None).page_sections()[2]
    return ['<div class="ctx">' + w for w in examples.decode().split('<div class="ctx">')[1:]]


def test_reingest_replaces_the_stored_sections_and_escapes_awkward_tokens(analysed_run, database_url, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(analysed_run, run_dir)
    with np.load(run_dir / "analysis" / "neurons" / "units.npz") as z:
        unit = int(np.argmax(z["firing_count"]))
        max_token = int(z["top_token_ids"][unit, 0][z["top_token_ids"].shape[2] - 1 - 8])  # 8 tokens follow the max
    ingest_run(run_dir, database_url)
    before = _stored_windows(database_url, "neurons", unit)
    site = start_server(database_url, run_dir)  # a server that read the old vocabulary for the JSON twin
    try:
        twin = f"{site.url}/api/v1/bases/neurons/units/{unit}"
        assert _twin_max_token(httpx.get(twin).json()) != AWKWARD
        strings_file = run_dir / "corpus" / "token_strings.json"
        strings = json.loads(strings_file.read_text())
        strings[max_token] = AWKWARD
        strings_file.write_text(json.dumps(strings, ensure_ascii=False))
        ingest_run(run_dir, database_url)
        time.sleep(RESOLVE_TTL_S + 0.5)  # the server then resolves the basis's new ingest
        assert _twin_max_token(httpx.get(twin).json()) == AWKWARD  # not the old vocabulary it had read
    finally:
        stop_server(site)
    after = _stored_windows(database_url, "neurons", unit)
    assert len(after) == len(before) > 0  # replaced, not added to
    assert _max_token_text(before[0]) != AWKWARD  # the old string until the re-ingest
    assert _max_token_text(after[0]) == AWKWARD  # the browser shows the string itself...
    assert "&lt;b&gt;&quot;x&quot;&amp;&#x27;y&#x27;&lt;/b&gt;" in after[0]  # ...because the markup escapes it
    assert "<b>" not in "".join(after)


def _twin_max_token(detail: dict) -> str:
    first = detail["top_examples"][0]
    return first["texts"][first["max_position"]]


def _max_token_text(window: str) -> str:
    parser = _Windows()
    parser.feed(window)
    return next(text for cls, _, _, text in parser.windows[0] if cls == "tok max")


def _sections(db_url: str) -> dict[tuple[str, int], unit_sections.Stored]:
    engine = create_engine(db_url)
    with engine.connect() as c:
        rows = c.execute(select(Basis.name, Unit.index, Unit.sections).join(Basis)).all()
    engine.dispose()
    return {(name, index): unit_sections.unpack(blob) for name, index, blob in rows}


def test_db_render_makes_stale_sections_current_from_the_database_alone(two_sites, tmp_path):
    stored, live = two_sites
    copy = tmp_path / "render.db"
    with sqlite3.connect(live.db_url.removeprefix("sqlite:///")) as source, sqlite3.connect(copy) as target:
        source.backup(target)  # with what the server's WAL holds
    url = f"sqlite:///{copy}"
    stale = sum(s.sections is None for s in _sections(url).values())
    assert stale > 0
    command = [str(Path(sys.executable).with_name("monoscope")), "db", "render", "--db", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{stale:,} units rendered" in done.stdout
    assert _sections(url) == _sections(stored.db_url)  # what ingest stored, every unit
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and ": 0 units rendered" in again.stdout
