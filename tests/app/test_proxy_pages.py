"""The proxy pages against a real server: the ranking (neurons beside features) and a unit's stacked histograms,
their numbers against units.npz, and the stacked histogram drawn by plotly in Chromium."""

from __future__ import annotations

import numpy as np
import pytest
from playwright.sync_api import expect
from webapp_fixtures import SAE_NAME

from app.read.proxy_schemas import ProxyRanking, UnitProxyPlots


def test_the_ranking_puts_neurons_beside_features_in_order_of_correlation(site):
    r = site.get("/api/v1/proxies", params={"proxy": "string_literal"})
    assert r.status_code == 200, r.text
    ranking = ProxyRanking.model_validate(r.json())
    assert ranking.proxy.name == "string_literal" and "comment" in {p.name for p in ranking.proxies}
    assert [b.name for b in ranking.bases] == ["neurons", SAE_NAME]
    for b in ranking.bases:
        units = site.units(b.name)
        k = [str(n) for n in units["proxy_names"]].index("string_literal")
        column = units["proxy_corr_pos"][:, k]
        expected = np.argsort(-np.nan_to_num(column, nan=-np.inf), kind="stable")[:len(b.units)]
        assert [u.index for u in b.units] == expected.tolist()
        assert [u.corr_pos for u in b.units] == pytest.approx(column[expected].tolist(), rel=1e-6)
        assert len(b.correlations) == int(np.isfinite(column).sum())
    best_neuron, best_feature = ranking.bases[0].units[0], ranking.bases[1].units[0]
    assert ranking.verdict and (f"#{best_feature.index}" in ranking.verdict or f"#{best_neuron.index}" in ranking.verdict)
    page = site.get("/proxies", params={"proxy": "string_literal"})
    assert page.status_code == 200 and 'id="ranked-neuron"' in page.text and 'id="ranked-sae"' in page.text
    assert site.get("/api/v1/proxies", params={"proxy": "no-such"}).status_code == 404
    assert site.get("/api/v1/proxies", params={"basis": "no-such"}).status_code == 404


def test_a_units_stacked_histograms_add_up_to_its_interval_counts(site):
    units = site.units(SAE_NAME)
    index = int(np.argmax(units["firing_count"]))
    r = site.get(f"/api/v1/bases/{SAE_NAME}/units/{index}/proxy", params={"proxy": "base64"})
    assert r.status_code == 200, r.text
    plots = UnitProxyPlots.model_validate(r.json())
    assert plots.stat.name == "base64" and len(plots.interval_edges) == 12
    counts = np.array(plots.stat.hist_counts)  # [I, B]
    np.testing.assert_array_equal(counts.sum(1), units["interval_counts"][index])  # stacking splits each bar
    assert counts.sum() == units["firing_count"][index]
    k = [str(n) for n in units["proxy_names"]].index("base64")
    np.testing.assert_allclose(np.array(plots.stat.hist_acts).sum(), units["mean_activation"][index]
                               * units["firing_count"][index], rtol=1e-3)
    # the positive buckets' share of the count is the unit's firing share on proxy-positive tokens
    assert counts[:, 2:].sum() / counts.sum() == pytest.approx(float(units["proxy_fire_share"][index, k]), rel=1e-5)
    default = site.get(f"/api/v1/bases/{SAE_NAME}/units/{index}/proxy").json()
    corr = units["proxy_corr_pos"][index]
    assert default["stat"]["name"] == str(units["proxy_names"][int(np.nanargmax(corr))])  # its best proxy
    assert site.get(f"/api/v1/bases/{SAE_NAME}/units/{index}/proxy", params={"proxy": "nope"}).status_code == 404


def test_the_stacked_histogram_renders_in_chromium(browser, site):
    units = site.units(SAE_NAME)
    index = int(np.argmax(units["firing_count"]))
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{site.url}/bases/{SAE_NAME}/units/{index}/proxy?proxy=string_literal")
    page.wait_for_selector("#proxy-hist .plot-area .main-svg")
    assert page.locator("#proxy-hist .plot-area .bars path").count() > 0  # plotly drew stacked bars
    assert page.locator("#proxy-hist .legend .traces").count() == 4  # one trace per score bucket
    assert page.locator("#proxy-value .plot-area .bars path").count() > 0
    # another proxy
    page.select_option("select[name=proxy]", "comment")
    page.click("#unit-proxy-form button")
    page.wait_for_url("**proxy=comment")
    expect(page.locator("#proxy-hist h3 code")).to_have_text("comment")
    page.wait_for_selector("#proxy-hist .plot-area .main-svg")
    page.goto(f"{site.url}/bases/{SAE_NAME}/units/{index}")  # the unit page draws its best proxy's two plots
    page.wait_for_selector("#proxies #proxy-hist .plot-area .main-svg")
    assert page.locator("#proxies table tbody tr").count() >= 5
    page.close()
    assert not errors, errors


def test_analyze_takes_a_users_proxy_and_refuses_a_bad_one(tiny_run_copy, monkeypatch, capsys):
    from webapp_fixtures import assert_one_line_error, monoscope

    bad = monoscope(monkeypatch, capsys, "analyze", "--run", tiny_run_copy, "--proxy", "regex:(")
    assert_one_line_error(bad, "not a regular expression")
    assert_one_line_error(monoscope(monkeypatch, capsys, "analyze", "--run", tiny_run_copy, "--proxy", "strings"),
                          "unknown proxy")
    code, _, err = monoscope(monkeypatch, capsys, "analyze", "--run", tiny_run_copy, "--tokens", "2048", "--no-proxies",
                             "--proxy", "regex:def |class ", "--proxy", "comment", "--device", "cpu")
    assert code == 0, err
    units = np.load(tiny_run_copy / "analysis" / "neurons" / "units.npz")
    assert [str(n) for n in units["proxy_names"]] == ["comment", "regex:def |class "]
    assert np.isfinite(units["proxy_corr_pos"][:, 1]).any()
