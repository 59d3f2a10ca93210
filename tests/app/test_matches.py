"""Best matches in the product: `monoscope match` between two runs (here two copies of one analysed run, so every
unit's best match is itself at correlation 1), a seed control (the same SAE recipe from another seed) and feature
splitting (a smaller dictionary, with its family graph), ingested both ways, on unit pages and the matches page (real
server)."""

from __future__ import annotations

import html
import json
import shutil

import httpx
import numpy as np
import pytest
from sqlalchemy import select
from webapp_fixtures import QUIET, SAE_NAME, SMALL, add_sae, add_small_dictionary, start_server, stop_server

from app.store.db import session_factory, upgrade, write_transaction
from app.store.ingest import ingest_run
from app.store.labels import add_label
from app.store.models import Basis, Model
from app.store.users import add_user
from sae.analysis.matching import match_bases
from sae.analysis.run import run_analysis
from sae.analysis.shard import AnalysisConfig

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
SEED1 = f"{SAE_NAME}-seed1"


@pytest.fixture(scope="module")
def matched(analysed_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("matched")
    run_a, run_b = root / "alpha", root / "beta"
    shutil.copytree(analysed_run, run_a)
    shutil.copytree(analysed_run, run_b)
    for basis in ("neurons", SAE_NAME):
        match_bases(run_a, basis, run_b, basis, n_tokens=4096, device="cpu", progress=False, log=QUIET)
    add_small_dictionary(run_a)  # feature splitting: the trained SAE against a smaller one of the same LM
    match_bases(run_a, SAE_NAME, run_a, SMALL, n_tokens=4096, device="cpu", progress=False, log=QUIET)
    add_sae(run_a, SEED1, seed=1)  # the seed control: the same recipe, another seed
    run_analysis(run_a, sae_names=[SEED1], include_neurons=False, cfg=AnalysisConfig(n_tokens=8192, batch_sequences=32),
                 device="cpu", progress=False, log=QUIET)
    match_bases(run_a, SAE_NAME, run_a, SEED1, n_tokens=4096, device="cpu", progress=False, log=QUIET)
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
    assert sum("ingested match" in line for line in late) == 4
    pairs = httpx.get(site.url + "/api/v1/matches", timeout=30).json()["pairs"]
    across = [p for p in pairs if p["model"] != p["other_model"]]
    assert {(p["model"], p["basis"], p["other_model"], p["other_basis"]) for p in across} == {
        (a, basis, b, basis) for basis in ("neurons", SAE_NAME) for a, b in (("alpha", "beta"), ("beta", "alpha"))}
    for p in across:  # one LM twice: every live unit's best match is itself
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


def test_reingesting_either_run_keeps_the_best_matches(matched):
    site, run_a, *_ = matched
    before = httpx.get(site.url + "/api/v1/matches", timeout=30).json()["pairs"]
    ingest_run(run_a.with_name("beta"), url=site.db_url, log=QUIET)  # the run at the other end of two matches
    assert httpx.get(site.url + "/api/v1/matches", timeout=30).json()["pairs"] == before
    ingest_run(run_a, url=site.db_url, log=QUIET)  # the run holding them: replaced, not doubled
    assert httpx.get(site.url + "/api/v1/matches", timeout=30).json()["pairs"] == before


def test_matches_page_draws_both_distributions(matched):
    site, *_ = matched
    page = httpx.get(site.url + "/matches", timeout=30).text
    assert page.split('id="pairs"')[1].split("</table>")[0].count("<tr><td>") == 8 and 'id="match-plot"' in page
    spec = page.split('id="match-plot"')[1].split('class="plot-spec">')[1].split("</script>")[0]
    plot = json.loads(html.unescape(spec))
    assert len(plot["data"]) == 8 and all(abs(sum(trace["y"]) - 1) < 1e-6 for trace in plot["data"])
    pairs = httpx.get(site.url + "/api/v1/matches", timeout=30).json()["pairs"]
    medians = [p["median_population"] for p in pairs if p["median_population"] is not None]
    assert [t["name"].rsplit(", median ", 1)[1] for t in plot["data"]] == [f"{m:.2f}" for m in medians]  # named medians
    colours = {t["marker"]["color"] for t in plot["data"]}
    assert [line["x0"] for line in plot["layout"]["shapes"]] == medians and len(colours) == len(plot["data"])
    assert [line["line"]["color"] for line in plot["layout"]["shapes"]] == [t["marker"]["color"] for t in plot["data"]]


def test_what_each_pair_measures_its_seed_control_and_population_figures(matched):
    site, run_a, *_ = matched
    pairs = {(p["model"], p["basis"], p["other_model"], p["other_basis"]): p
             for p in httpx.get(site.url + "/api/v1/matches", timeout=30).json()["pairs"]}
    seed, universal = pairs[("alpha", SAE_NAME, "alpha", SEED1)], pairs[("alpha", SAE_NAME, "beta", SAE_NAME)]
    assert seed["relation"] == "seed control" and universal["relation"] == "universality"
    assert pairs[("alpha", SAE_NAME, "alpha", SMALL)]["relation"] == "splitting"
    assert universal["control"] == {"model": "alpha", "basis": SAE_NAME, "other_basis": SEED1, "by_definition": False,
                                    "median_population": seed["median_population"],
                                    "n_population": seed["n_population"]}
    neurons = pairs[("alpha", "neurons", "beta", "neurons")]["control"]
    assert neurons["by_definition"] and neurons["median_population"] == 1.0
    # beta has no seed control of its own: the pair read the other way takes alpha's, named as alpha's
    assert pairs[("beta", SAE_NAME, "alpha", SAE_NAME)]["control"] == universal["control"]
    assert pairs[("alpha", SAE_NAME, "alpha", SMALL)]["control"] is None  # splitting has none
    m = dict(np.load(run_a / "analysis" / "matches" / f"{SAE_NAME}--alpha--{SEED1}" / "matches.npz"))
    u = dict(np.load(run_a / "analysis" / SAE_NAME / "units.npz"))
    matched_units = m["a_best"] >= 0
    live = matched_units & (u["firing_count"] > 0) & (u["density"] >= 1e-5)
    assert 0 < live.sum() < matched_units.sum() or live.sum() == matched_units.sum() > 0
    assert seed["n_population"] == live.sum() and seed["n_units"] == matched_units.sum()
    assert seed["median_population"] == pytest.approx(float(np.median(m["a_corr"][live])), abs=1e-6)
    mutual = m["b_best"][m["a_best"][live]] == np.flatnonzero(live)
    assert seed["mutual_share"] == pytest.approx(mutual.mean())
    assert sum(b["n"] for b in seed["bands"]) == (matched_units & (u["firing_count"] > 0)).sum()
    findings = httpx.get(site.url + "/api/v1/matches", timeout=30).json()["findings"]
    line = next(f for f in findings if f.startswith(f"{SAE_NAME} (SAE features) of alpha"))
    assert f"agree at {seed['median_population']:.2f}" in line and SEED1 in line
    back = next(f for f in findings if f.startswith(f"{SAE_NAME} (SAE features) of beta"))
    assert f"against {SEED1} of alpha" in back and "no seed control" not in back
    assert any("by definition" in f for f in findings)
    assert any("not more universal than neurons" in f for f in findings)  # one LM twice: both are 1
    page = httpx.get(site.url + "/matches", timeout=30).text
    assert 'id="findings"' in page and 'id="bands"' in page and "(by definition)" in page
    assert f"{SEED1} of alpha)" in page  # the reverse pair's control, named as alpha's


def test_feature_families_by_masked_cosine(matched):
    site, run_a, *_ = matched
    m = dict(np.load(run_a / "analysis" / "matches" / f"{SAE_NAME}--alpha--{SMALL}" / "matches.npz"))
    assert len(m["family_score"]) and m["family_score"].min() >= 0.2  # every edge from the floor up is kept
    strong = m["family_score"] >= 0.4
    pairs = httpx.get(site.url + "/api/v1/matches", timeout=30).json()["pairs"]
    split = next(p for p in pairs if p["basis"] == SAE_NAME and p["other_basis"] == SMALL)
    small_units = dict(np.load(run_a / "analysis" / SMALL / "units.npz"))
    live = np.flatnonzero((small_units["firing_count"] > 0) & (small_units["density"] >= 1e-5))
    children = np.bincount(m["family_b"][strong], minlength=32)
    assert split["split_counts"] == np.bincount(np.minimum(children[live], 5), minlength=6).tolist()
    assert next(p for p in pairs if p["basis"] == SMALL)["split_counts"] is None  # only larger against smaller
    counts = split["split_counts"]
    finding = next(f for f in httpx.get(site.url + "/api/v1/matches", timeout=30).json()["findings"]
                   if f.startswith(f"Splitting, {SMALL} into {SAE_NAME}"))
    assert (f"{counts[5]:,} of {sum(counts):,} features of {SMALL} have 5 or more children, "
            f"{sum(counts[1:5]):,} have 1 to 4 and {counts[0]:,} none") in finding
    assert ("does not single out families" in finding) == (counts[5] > sum(counts) / 2)
    parent = int(np.argmax(children))  # the small feature with the most children
    assert children[parent] >= 1
    unit = httpx.get(f"{site.url}/api/v1/bases/{SMALL}/units/{parent}?model=alpha", timeout=30).json()
    family = unit["family"]
    expected = m["family_a"][strong & (m["family_b"] == parent)]
    assert family["n_children"] == len(expected) and family["threshold"] == 0.4 and family["parents"] == []
    kids = family["children"]
    assert {k["index"] for k in kids} <= set(expected.tolist()) and len(kids) == min(len(expected), 8)
    assert [k["score"] for k in kids] == sorted((k["score"] for k in kids), reverse=True)
    assert all(k["score"] >= 0.4 for k in kids)  # an edge below the threshold is never drawn
    weak = m["family_score"] < 0.4
    for i, j in zip(m["family_a"][weak][:5], m["family_b"][weak][:5]):  # kept in the run, not on the pages
        small = httpx.get(f"{site.url}/api/v1/bases/{SMALL}/units/{j}?model=alpha", timeout=30).json()["family"]
        assert int(i) not in {c["index"] for c in small["children"]}
    child = httpx.get(f"{site.url}/api/v1/bases/{SAE_NAME}/units/{kids[0]['index']}?model=alpha", timeout=30).json()
    assert parent in {p["index"] for p in child["family"]["parents"]} and child["family"]["parents"][0]["basis"] == SMALL
    page = httpx.get(f"{site.url}/bases/{SMALL}/units/{parent}?model=alpha", timeout=30).text
    assert '<svg id="family"' in page and page.count(f"{SAE_NAME} #") >= len(kids)
    assert "No feature of a smaller dictionary is joined to this one." in page
    for k in kids:  # every node links to its unit
        assert f'href="{html.escape(k["url"])}"' in page
    listed = httpx.get(f"{site.url}/api/v1/bases/{SAE_NAME}?model=alpha&per_page=500", timeout=30).json()["units"]
    assert kids[0]["top_tokens"] == listed[kids[0]["index"]]["top_tokens"][:3] and kids[0]["label"] is None
    with write_transaction(session_factory(site.db_url)) as session:  # a label on the child shows in the family
        basis = session.scalar(select(Basis).join(Model).where(Basis.name == SAE_NAME, Model.name == "alpha"))
        add_label(session, basis=basis, index=kids[0]["index"], author=add_user(session, "famtester")[0],
                  text="a <child> label", note=None)
    again = httpx.get(f"{site.url}/api/v1/bases/{SMALL}/units/{parent}?model=alpha", timeout=30).json()
    assert again["family"]["children"][0]["label"] == "a <child> label"
    page = httpx.get(f"{site.url}/bases/{SMALL}/units/{parent}?model=alpha", timeout=30).text
    assert "a &lt;child&gt; label" in page and "a <child>" not in page
    lonely = next((i for i in range(128) if i not in set(m["family_a"][strong].tolist())), None)
    if lonely is not None:  # a feature with no edge at the threshold: the family says so, it is not absent
        none = httpx.get(f"{site.url}/api/v1/bases/{SAE_NAME}/units/{lonely}?model=alpha", timeout=30).json()
        assert none["family"] == {"parents": [], "children": [], "n_parents": 0, "n_children": 0, "threshold": 0.4}


def test_a_label_changes_the_cache_key_of_exactly_the_pages_showing_it(matched):
    """A unit page's cached copy is keyed on the labels it shows: its own, its links' targets', its family children's;
    labelling any other unit leaves it cached."""
    from app.read.queries.unit import unit_version

    site, run_a, *_ = matched
    sessions = session_factory(site.db_url)
    parent = next(i for i in range(32) if httpx.get(f"{site.url}/api/v1/bases/{SMALL}/units/{i}?model=alpha",
                                                     timeout=30).json()["family"]["children"])
    page = httpx.get(f"{site.url}/api/v1/bases/{SMALL}/units/{parent}?model=alpha", timeout=30).json()
    shown = {(link["basis"], link["index"]) for link in page["links"] if link["model"] is None}
    shown |= {(c["basis"], c["index"]) for c in page["family"]["children"]} | {(SMALL, parent)}
    m = dict(np.load(run_a / "analysis" / "matches" / f"{SAE_NAME}--alpha--{SMALL}" / "matches.npz"))
    joined = {(SAE_NAME, int(i)) for i in m["family_a"][(m["family_b"] == parent) & (m["family_score"] >= 0.4)]}
    unrelated = next((SAE_NAME, i) for i in range(128) if (SAE_NAME, i) not in shown | joined)  # children not drawn
    # (beyond the strongest few) change the key too: their count is shown

    def key() -> tuple:
        with sessions() as session:
            return unit_version(session=session, basis=SMALL, index=parent, model="alpha")

    def label(basis: str, index: int) -> None:
        with write_transaction(sessions) as session:
            b = session.scalar(select(Basis).join(Model).where(Basis.name == basis, Model.name == "alpha"))
            add_label(session, basis=b, index=index, author=add_user(session, f"keytester{basis}{index}")[0],
                      text=f"label of {basis} #{index}", note=None)

    before = key()
    label(*unrelated)
    assert key() == before  # another unit's label: the cached page stays
    for shown_unit in sorted(shown):  # the unit itself, each linked unit, each child: the page must re-render
        label(*shown_unit)
        assert key() != before, shown_unit
        before = key()


def test_a_reingested_match_shows_at_once_on_matches_and_the_unit_pages(matched):
    """What the server keeps of a match (the split counts, the cached unit pages drawing families) follows a new
    ingest of it (a run's ingest takes its bases and then its matches: the bases' versions key the cache); here with
    every edge scored under the threshold."""
    site, run_a, *_ = matched
    folder = run_a / "analysis" / "matches" / f"{SAE_NAME}--alpha--{SMALL}"
    saved = (folder / "matches.npz").read_bytes()
    m = dict(np.load(folder / "matches.npz"))
    parent = int(np.argmax(np.bincount(m["family_b"][m["family_score"] >= 0.4], minlength=32)))

    def split_counts() -> list[int]:
        pairs = httpx.get(site.url + "/api/v1/matches", timeout=30).json()["pairs"]
        return next(p for p in pairs if p["basis"] == SAE_NAME and p["other_basis"] == SMALL)["split_counts"]

    def n_children() -> int:
        url = f"{site.url}/api/v1/bases/{SMALL}/units/{parent}?model=alpha"
        return httpx.get(url, timeout=30).json()["family"]["n_children"]

    before, children = split_counts(), n_children()
    assert sum(before[1:]) > 0 and children > 0 and (before, children) == (split_counts(), n_children())  # cached
    try:
        np.savez(folder / "matches.npz", **(m | {"family_score": np.minimum(m["family_score"], 0.39)}))
        ingest_run(run_a, url=site.db_url, log=QUIET)
        assert split_counts() == [sum(before), 0, 0, 0, 0, 0] and n_children() == 0
    finally:
        (folder / "matches.npz").write_bytes(saved)
        ingest_run(run_a, url=site.db_url, log=QUIET)
    assert (split_counts(), n_children()) == (before, children)
