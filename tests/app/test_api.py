"""The web app and its JSON API against a real `monoscope serve` process and a database ingested from a tiny run: the
numbers pages and twins show against the analysis arrays, filters, 404/422, assets, htmx blocks (every page having
its twin: tests/app/test_twins.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from markupsafe import escape
from webapp_fixtures import SAE_NAME, ingest_run, start_server, stop_server

from app.read.infer_schemas import InferResult

INFER_TEXT = "def add(a, b):\n    return a + b\n"


def live_unit(site, basis: str) -> int:
    """Index of the unit with the most firing tokens (it has top contexts and interval samples)."""
    return int(np.argmax(site.units(basis)["firing_count"]))


def test_overview_metrics_match_the_analysis(site):
    bases = {b["name"]: b for b in site.get("/api/v1/overview").json()["bases"]}
    assert set(bases) == {"neurons", SAE_NAME}
    assert bases["neurons"]["kind"] == "neuron" and bases[SAE_NAME]["kind"] == "sae"
    for name, b in bases.items():
        units = site.units(name)
        assert b["n_units"] == len(units["density"])
        assert b["metrics"]["dead"] == int((units["firing_count"] == 0).sum())
        assert sum(b["density_histogram"]["counts"]) + b["density_histogram"]["dead"] == b["n_units"]
    assert bases[SAE_NAME]["metrics"]["l0"] > 0 and bases["neurons"]["metrics"]["loss_recovered"] is None


def test_unit_twin_matches_the_analysis_arrays(site):
    index = live_unit(site, SAE_NAME)
    units = site.units(SAE_NAME)
    unit = site.get(f"/api/v1/bases/{SAE_NAME}/units/{index}").json()
    assert unit["density"] == pytest.approx(units["density"][index])
    assert unit["max_activation"] == pytest.approx(units["max_activation"][index], rel=1e-6)
    n_top = int(units["top_count"][index])
    assert [e["value"] for e in unit["top_examples"]] == pytest.approx(units["top_values"][index][:n_top].tolist())
    first = unit["top_examples"][0]
    assert first["acts"][first["max_position"]] == pytest.approx(first["value"])
    assert max(first["acts"]) == pytest.approx(first["value"])
    assert len(first["token_ids"]) == len(first["texts"]) == len(first["shown"]) == len(first["acts"])
    counts = units["interval_counts"][index]
    filled = [i for i, c in enumerate(counts) if c > 0]
    assert len(filled) >= 2 and [iv["index"] for iv in unit["intervals"]] == list(range(11))  # empty ones too
    for iv in unit["intervals"]:
        i = iv["index"]
        assert iv["count"] == counts[i] and len(iv["samples"]) == units["interval_sample_count"][index][i]
        assert iv["contains_pct"] == pytest.approx(100 * counts[i] / units["firing_count"][index])
    assert sum(iv["contains_pct"] for iv in unit["intervals"]) == pytest.approx(100)  # they cover every firing
    assert [t["id"] for t in unit["top_logits"]] == units["logit_top_ids"][index].tolist()
    assert sum(unit["act_hist"]["counts"]) == units["firing_count"][index]
    assert unit["prev_url"] == (f"/bases/{SAE_NAME}/units/{index - 1}" if index else None)
    assert {link["kind"] for link in unit["links"]} >= {"feature_neuron"}
    # Ablation effects: one per shown token, null where the analysis has none (NaN), equal to units.npz's values.
    for ex, ids, effects in zip(unit["top_examples"], units["top_token_ids"][index], units["top_effects"][index]):
        expected = effects[ids >= 0]
        assert len(ex["effects"]) == len(ex["acts"]) == len(expected)
        assert [e is None for e in ex["effects"]] == np.isnan(expected).tolist()
        assert [e for e in ex["effects"] if e is not None] == pytest.approx(expected[~np.isnan(expected)].tolist())
    pairs = [(e, a) for ex in unit["top_examples"] for e, a in zip(ex["effects"], ex["acts"]) if e is not None]
    assert any(e != 0 for e, a in pairs) and all(e == 0 for e, a in pairs if a == 0)  # silent: no effect
    every = [abs(e) for e, a in pairs] + [abs(e) for iv in unit["intervals"] for ex in iv["samples"]
                                         for e in ex["effects"] if e is not None]
    assert unit["max_abs_effect"] == pytest.approx(max(every))


def test_unit_page_shows_every_token_with_its_activation(site):
    index = live_unit(site, "neurons")
    unit = site.get(f"/api/v1/bases/neurons/units/{index}").json()
    page = site.get(f"/bases/neurons/units/{index}").text
    n_tokens = sum(len(ex["texts"]) for ex in unit["top_examples"])
    n_tokens += sum(len(ex["texts"]) for iv in unit["intervals"] for ex in iv["samples"])
    assert page.count('<span class="tok') == n_tokens
    assert page.count('<span class="tok max"') == len(unit["top_examples"]) + sum(
        len(iv["samples"]) for iv in unit["intervals"])
    texts = "".join(text for ex in unit["top_examples"] for text in ex["texts"])
    assert "\n" in texts  # the fixture's busiest neuron fires around line ends of the code corpus
    assert page.count("↵") >= texts.count("\n")  # and each of those newlines is visible
    assert page.count("<h3>Interval ") == len(unit["intervals"]) == 11
    assert f'title="{unit["top_examples"][0]["value"]:.4g}' in page  # then its ablation effect


def test_unit_list_sorts_filters_searches_and_paginates(site):
    units = site.units("neurons")
    n = len(units["density"])
    base = "/api/v1/bases/neurons"
    page2 = site.get(base + "?per_page=10&page=2").json()
    assert page2["total"] == n and page2["pages"] == math.ceil(n / 10)
    assert [u["index"] for u in page2["units"]] == list(range(10, 20))
    by_density = site.get(base + "?sort=density&desc=true&per_page=500").json()["units"]
    assert [u["index"] for u in by_density][:5] == np.argsort(-units["density"], kind="stable")[:5].tolist()
    low, high = np.quantile(units["density"], [0.25, 0.75])
    ranged = site.get(base + f"?min_density={low}&max_density={high}&per_page=500").json()
    assert ranged["total"] == int(((units["density"] >= low) & (units["density"] <= high)).sum())
    # the page's form sends empty number boxes (no bound); the API keeps to its schema (a number): 422
    assert site.get(base + "?min_density=&max_density=").status_code == 422
    assert site.get(base.replace("/api/v1", "") + "?min_density=&max_density=").status_code == 200
    dead = site.get(base + "?dead=only").json()
    assert dead["total"] == int((units["firing_count"] == 0).sum())
    assert site.get(base + "?labelled=yes").json()["total"] == 0  # nobody has labelled anything yet
    token = next(t for u in by_density for t in u["top_tokens"] if t.strip().isalnum() and t.isascii())
    found = site.get(base, params={"q": token, "per_page": 500}).json()["units"]
    assert found and all(any(token.lower() in t.lower() for t in u["top_tokens"]) for u in found)
    assert site.get(base, params={"q": token.swapcase(), "per_page": 500}).json()["units"] == found  # case ignored
    assert site.get(base, params={"q": "no token looks like this ☃☃"}).json()["total"] == 0


def test_htmx_gets_the_list_block_only(site):
    full = site.get("/bases/neurons?page=2&per_page=5")
    part = site.get("/bases/neurons?page=2&per_page=5", headers={"HX-Request": "true"})
    assert full.text.lstrip().startswith("<!doctype html>")
    assert part.text.lstrip().startswith('<div id="units"') and "<html" not in part.text
    assert part.text.strip() in full.text.replace("\r\n", "\n")
    assert "hx-push-url" in part.text and "page=3" in part.text and "page=1" not in part.text.split("next")[1]


@pytest.mark.parametrize("path, fragment", [
    ("/bases/nope", "no basis named 'nope'"),
    ("/bases/neurons/units/100000", "there is no unit 100000"),
    ("/bases/neurons?model=nope", "no model named 'nope'"),
    ("/no/such/page", "no page"),
    ("/compare?basis=neurons", "no SAE basis named 'neurons'"),  # compare's basis is an SAE's: the schema cannot say
])
def test_unknown_things_are_404_with_a_message(site, path, fragment):
    page = site.get(path)
    assert page.status_code == 404 and str(escape(fragment)) in page.text and "<!doctype html>" in page.text
    if not path.startswith("/no/"):
        twin = site.get("/api/v1" + path)
        assert twin.status_code == 404 and fragment in twin.json()["detail"]


@pytest.mark.parametrize("path, fragment", [
    ("/bases/neurons?min_density=2", "min_density"),
    ("/bases/neurons?max_density=%0C", "max_density"),  # was read as the empty box (the fuzz found it)
    ("/bases/neurons?per_page=0", "per_page"),
    ("/bases/neurons?sort=colour", "sort"),
    ("/bases/neurons?page=x", "page"),
    ("/bases/neurons/units/abc", "index"),
    ("/bases/neurons/units/-1", "index"),
    ("/bases/neurons/units/99999999999999999999999", "index"),
    ("/bases/neurons?page=99999999999999999999", "page"),
    ("/infer?text=" + "x" * 2001, "text"),
    ("/compare?neuron=-1", "neuron"),
])
def test_bad_parameters_are_422_with_a_message(site, path, fragment):
    for prefix in ("", "/api/v1"):
        response = site.get(prefix + path)
        assert response.status_code == 422, (prefix + path, response.status_code)
        assert fragment in response.text


def test_infer_matches_the_model(site):
    import torch

    from sae.lm.model import load_lm, mlp_activations

    result = InferResult.model_validate(site.get("/api/v1/infer", params={"text": INFER_TEXT}).json())
    assert "".join(t.text for t in result.tokens) == INFER_TEXT
    assert result.position == len(result.tokens) - 1
    assert {u.basis for u in result.active_units} == {"neurons", SAE_NAME}  # both bases have units active there
    for basis in ("neurons", SAE_NAME):  # each basis's units, strongest first
        shown = [u.activation for u in result.active_units if u.basis == basis]
        assert shown and shown == sorted(shown, reverse=True) and shown[-1] > 0, basis
    neuron = site.get("/api/v1/infer", params={"text": INFER_TEXT, "position": 2, "strip": "neurons:3"}).json()
    model = load_lm(site.run_dir)
    bos = int(model.tokenizer.bos_token_id)
    ids = torch.tensor([[bos] + [t.id for t in result.tokens]])
    expected = mlp_activations(model, ids)[0, 1:, 3]
    assert neuron["strip"] == pytest.approx(expected.tolist(), abs=1e-5)
    assert neuron["position"] == 2
    # no such token or unit in the text's result: 404s (a schema-valid request the data refuses)
    assert site.get("/api/v1/infer", params={"text": INFER_TEXT, "position": 999}).status_code == 404
    assert site.get("/api/v1/infer", params={"text": INFER_TEXT, "strip": "neurons:99999"}).status_code == 404
    assert site.get("/api/v1/infer", params={"text": INFER_TEXT, "strip": "neurons:x"}).status_code == 422


def test_assets_come_from_installed_packages(site):
    for path in ("/vendor/plotly.min.js", "/vendor/htmx.min.js", "/vendor/swagger-ui-bundle.js",
                 "/vendor/swagger-ui.css", "/static/monoscope.js", "/static/monoscope.css"):
        response = site.get(path)
        assert response.status_code == 200 and len(response.content) > 500, path
    page = site.get(f"/bases/neurons/units/{live_unit(site, 'neurons')}").text
    assert "cdn" not in page.lower() and "https://" not in page


def test_rest_collections_and_method_not_allowed(site):
    overview = site.get("/api/v1/overview").json()
    assert site.get("/api/v1/bases").json() == overview["bases"]
    query = {"sort": "density", "desc": "true", "page": "1"}
    assert site.get(f"/api/v1/bases/{SAE_NAME}/units", params=query).json() == site.get(
        f"/api/v1/bases/{SAE_NAME}", params=query).json()
    assert site.get("/api/v1/bases/nope/units").status_code == 404
    wrong = site.post("/api/v1/overview", json={})
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, HEAD" and wrong.json()["detail"]
    with site.client() as client:  # a path with two routes: Allow names both (Starlette's own named the first)
        for path in ("/api/v1/bases/neurons/units/0/labels", "/bases/neurons/units/0/labels"):
            wrong = client.delete(path)
            assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, HEAD, POST", path


def test_openapi_documents_every_twin(site):
    docs = site.get("/docs").text
    assert "/vendor/swagger-ui-bundle.js" in docs and "cdn" not in docs
    paths = site.get("/openapi.json").json()["paths"]
    assert {"/api/v1/overview", "/api/v1/bases/{basis}", "/api/v1/bases/{basis}/units/{index}", "/api/v1/compare",
            "/api/v1/infer", "/api/v1/matches", "/api/v1/bases", "/api/v1/bases/{basis}/units"} <= set(paths)


def test_serve_refuses_a_busy_port_in_one_line(site):
    import subprocess
    import sys
    from pathlib import Path

    port = site.url.rsplit(":", 1)[1]
    exe = Path(sys.executable).with_name("monoscope")
    done = subprocess.run([str(exe), "serve", "--db", site.db_url, "--port", port], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("monoscope: error: cannot listen on 127.0.0.1:" + port)
    assert len(done.stderr.strip().splitlines()) == 1


def test_code_whitespace_is_made_visible_across_tokens():
    from app.read.windows import visible_whitespace

    tokens = ["def", " f", "():", "\n", "  ", "  return", " x", "\r\n", "\tpass"]
    assert visible_whitespace(tokens) == ["def", " f", "():", "↵\n", "··", "··return", " x", "␍↵\n",
                                          "→pass"]
    assert visible_whitespace([" in"], at_line_start=True) == ["·in"]  # a lone token: its leading space shows


def test_every_page_and_twin_on_postgresql(request, site, analysed_run):
    """The same pages and twins served from PostgreSQL (ilike search, NULL ordering and JSON columns differ)."""
    from sqlalchemy import create_engine, text

    socket_dir = request.getfixturevalue("postgres_server")  # tests/app/conftest.py: skipped (CI: failed) without it
    admin = create_engine(f"postgresql+psycopg://postgres@/postgres?host={socket_dir}", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("CREATE DATABASE web_pages"))
    admin.dispose()
    url = f"postgresql+psycopg://postgres@/web_pages?host={socket_dir}"
    ingest_run(analysed_run, url)
    pg = start_server(url, analysed_run)
    try:
        paths = ["/", "/bases/neurons", f"/bases/{SAE_NAME}?sort=density&desc=true", "/compare", "/matches", "/map",
                 "/infer?text=def+f%28x%29%3A+return+x",
                 *(f"/bases/{basis}/units/{live_unit(site, basis)}" for basis in ("neurons", SAE_NAME))]
        for path in paths:
            assert pg.get(path).status_code == 200, path
            twin = pg.get("/api/v1/overview" if path == "/" else "/api/v1" + path)
            assert twin.json() == site.get(twin.url.raw_path.decode()).json(), path
        for query in ("?sort=label&desc=true", "?q=%25_x&labelled=no&dead=exclude", "?sort=max_activation"):
            assert pg.get("/api/v1/bases/neurons" + query).json() == site.get("/api/v1/bases/neurons" + query).json()
    finally:
        stop_server(pg)
