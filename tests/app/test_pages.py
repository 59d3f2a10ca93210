"""The pages in a real browser: Playwright (from PyPI) driving Debian's Chromium against `monoscope serve`.

Never `playwright install` (it downloads a browser): we launch /usr/bin/chromium (the `browser` fixture of
webapp_fixtures.py). Without it the tests skip with the reason, except in CI (CI=true), where a missing browser is a
failure. The server sends its Content-Security-Policy to every page here: all of this works under it.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from playwright.sync_api import expect
from webapp_fixtures import SAE_NAME


@pytest.fixture
def page(browser, site):
    context = browser.new_context()
    outside: list[str] = []

    def local_only(route):  # the app must work air-gapped: any request off the server fails the test
        if route.request.url.startswith(site.url):
            return route.continue_()
        outside.append(route.request.url)
        return route.abort()

    context.route("**/*", local_only)
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    yield page
    context.close()
    assert not errors, errors  # no script error and no alert() anywhere
    assert not outside, outside


def test_overview_draws_the_density_histograms(page, site):
    page.goto(site.url + "/")
    page.wait_for_selector(".plot-area .main-svg")
    n_bases = len(site.get("/api/v1/overview").json()["bases"])
    density = page.locator(".card:not([id^=frontier]) > figure .plot-area")
    assert n_bases == 2 and density.count() == n_bases  # one density plot per basis
    assert page.locator(".plot-area .bars path").count() > 0  # plotly drew bars
    # each names its shaded regions (the table header says "ultralow" too)
    assert density.get_by_text("ultralow").count() == density.get_by_text("dense").count() == n_bases


def test_a_point_of_the_frontier_opens_its_basis(page, site):
    page.goto(site.url + "/")
    point = page.locator("#frontier-fvu .scatterlayer .point").first
    point.wait_for()
    assert page.locator("#frontier-fvu .scatterlayer .point").count() == 1  # the fixture's one SAE
    box = point.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url(f"{site.url}/bases/{SAE_NAME}")
    expect(page.locator("h1")).to_contain_text(SAE_NAME)


def test_unit_list_filters_and_paginates_in_place(page, site):
    page.goto(site.url + "/bases/neurons?per_page=10")
    page.evaluate("window.__marker = 'still here'")
    first = page.locator("table.units tbody tr td:first-child").all_inner_texts()
    assert first == [str(i) for i in range(10)]
    page.click("#next-page")
    page.wait_for_url(re.compile(r"page=2"))
    expect(page.locator("#count")).to_contain_text("page 2")  # (wait_for_function's string would be an eval: CSP)
    assert page.locator("table.units tbody tr td:first-child").all_inner_texts() == [str(i) for i in range(10, 20)]
    page.select_option("select[name=sort]", "density")
    page.select_option("select[name=desc]", "true")
    page.wait_for_url(re.compile(r"sort=density.*desc=true"))
    expect(page.locator("#count")).to_contain_text("page 1")
    units = site.units("neurons")
    expected = np.argsort(-units["density"], kind="stable")[:10].tolist()
    assert page.locator("table.units tbody tr td:first-child").all_inner_texts() == [str(i) for i in expected]
    assert page.evaluate("window.__marker") == "still here"  # htmx swapped the block: no full reload
    url = page.url
    page.goto(url)  # the pushed URL reproduces the view
    assert page.locator("table.units tbody tr td:first-child").all_inner_texts() == [str(i) for i in expected]


def test_unit_page_shows_coloured_tokens_and_both_histograms(page, site):
    units = site.units(SAE_NAME)
    index = int(np.argmax(units["firing_count"]))
    page.goto(f"{site.url}/bases/{SAE_NAME}/units/{index}")
    page.wait_for_selector("#act-hist .main-svg")
    page.wait_for_selector("#logit-hist .main-svg")
    hot = page.locator("#top-examples .tok.max").first
    colour = hot.evaluate("e => getComputedStyle(e).backgroundColor")
    assert colour not in ("rgba(0, 0, 0, 0)", "transparent")
    assert float(hot.get_attribute("title").split()[0]) == pytest.approx(units["top_values"][index][0], rel=1e-3)
    assert f"{units['max_activation'][index]:.3g}" in page.locator("span.legend").first.inner_text()  # the colour scale


def test_unit_page_colours_tokens_by_ablation_effect_on_request(page, site):
    units = site.units(SAE_NAME)
    index = int(np.argmax(units["firing_count"]))
    effects = units["top_effects"][index][: units["top_count"][index]]
    page.goto(f"{site.url}/bases/{SAE_NAME}/units/{index}")
    token = page.locator("#top-examples .tok[data-e]").first
    by_activation = token.evaluate("e => getComputedStyle(e).backgroundColor")
    title = token.get_attribute("title")  # "<activation> · Δ log p(next) <effect>": hover gives both
    effect = float(title.rsplit(" ", 1)[1])
    assert np.isclose(effects, effect, rtol=2e-3, atol=1e-3).any()  # a value the analysis computed
    page.get_by_label("ablation effect").check()
    expect(page.locator("#examples")).to_have_class(re.compile("by-effect"))
    expect(page.locator(".effect-legend")).to_be_visible()
    by_effect = token.evaluate("e => getComputedStyle(e).backgroundColor")
    assert by_effect != by_activation
    assert by_effect.startswith("rgba(40, 90, 220" if effect < 0 else "rgba(200, 40, 40")  # sign -> hue
    silent = page.locator("#top-examples .tok:not([data-e])").first  # silent tokens stay uncoloured
    assert silent.evaluate("e => getComputedStyle(e).backgroundColor") in ("rgba(0, 0, 0, 0)", "transparent")
    page.reload()  # the choice is kept
    expect(page.locator("#examples")).to_have_class(re.compile("by-effect"))


def test_infer_lists_units_for_typed_text(page, site):
    page.goto(site.url + "/infer")
    page.evaluate("window.__marker = 1")
    text = "def square(x):\n    return x * x\n"
    page.fill("#text", text)
    page.click("#run")
    page.wait_for_selector("#active-units tbody tr a")
    tokens = site.get("/api/v1/infer", params={"text": text}).json()["tokens"]
    assert len(tokens) > 5 and page.locator("#tokens button").count() == len(tokens)  # one button per token
    page.locator("#tokens button").nth(2).click()
    expect(page.locator("#tokens button").nth(2)).to_have_class("selected")  # waits for the htmx swap
    expect(page).to_have_url(re.compile(r"at=2"))
    at_2 = site.get("/api/v1/infer", params={"text": text, "position": 2}).json()["active_units"]
    assert at_2  # units fire on that token: the table lists them (not its "No unit fires" row), in order
    links = page.locator("#active-units tbody tr a")
    assert [links.nth(i).get_attribute("href") for i in range(links.count())] == [a["url"] for a in at_2]
    page.locator("#active-units button").first.click()  # "show over the text": the heat strip follows that unit
    expect(page.locator("#tokens button[style]").first).to_be_visible()
    assert page.evaluate("window.__marker") == 1  # all in place, no reload


def test_api_docs_render_from_local_assets(page, site):
    page.goto(site.url + "/docs")
    page.wait_for_selector(".opblock")
    paths = site.get("/openapi.json").json()["paths"]
    operations = sum(len(methods) for methods in paths.values())
    assert operations >= 5 and page.locator(".opblock").count() == operations  # every JSON twin is documented


@pytest.mark.parametrize("writable_site", ["sqlite"], indirect=True)
def signed_in(browser, writable_site, who: str = "alice", **context_options):
    """Return (context, page, script errors) of a browser signed in as `who` through /login (local requests only)."""
    site = writable_site.site
    context = browser.new_context(**context_options)
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(site.url) else route.abort())
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site.url + "/login")
    page.fill("#token", writable_site.tokens[who])
    page.click("#sign-in")
    page.wait_for_url(site.url + "/")  # back where ?next= pointed
    return context, page, errors


def test_sign_in_label_find_and_review_with_the_keyboard(browser, writable_site):
    site = writable_site.site
    context, page, errors = signed_in(browser, writable_site)
    page.goto(site.url + "/login")
    expect(page.locator("#signed-in-as")).to_have_text("alice")

    # Label a feature in place (htmx), then find it through the list's label search.
    page.goto(f"{site.url}/bases/{SAE_NAME}/units/60")
    page.fill("#label-form input[name=text]", "playwright <brackets> & 'quotes'")
    page.press("#label-form input[name=text]", "Enter")
    expect(page.locator("#current-label")).to_have_text("playwright <brackets> & 'quotes'")
    expect(page.locator("h1 #label")).to_contain_text("playwright <brackets>")
    page.goto(f"{site.url}/bases/{SAE_NAME}")
    page.locator("#q").press_sequentially("PLAYWRIGHT <bra")  # keyup: htmx searches as one types
    expect(page.locator("#count")).to_have_text(re.compile(r"^1 units"))
    assert page.locator("table.units tbody tr td:first-child").all_inner_texts() == ["60"]

    # A four-item blind review, rated with the keyboard alone.
    page.goto(site.url + "/reviews")
    page.fill("#new-review input[name=name]", "keyboard review")
    page.fill("#new-review input[name=per_basis]", "2")
    page.click("#new-review button[type=submit]")
    page.click("#rate")
    for step in range(1, 5):
        expect(page.locator("h1")).to_contain_text(f"Item {step} of 4")
        page.wait_for_selector("#score-form[data-keys-bound]")  # the page's script is listening
        assert "/bases/" not in page.content()
        page.keyboard.type(f"hypothesis {step}")  # the hypothesis box has focus
        perfect_logits = step == 1
        keys = ["2", "4", "3" if perfect_logits else "2", None if perfect_logits else "1", str(step % 4)]
        for key in keys:  # confidence, token consistency, logit consistency, effect gap, specificity
            page.keyboard.press("Tab")
            if key is not None:
                page.keyboard.press(key)
        if perfect_logits:
            expect(page.locator("input[name=effect_gap][value=na]")).to_be_checked()
        page.keyboard.press("Enter")
        page.wait_for_load_state()
    expect(page.locator("#progress")).to_contain_text("scored 4 and skipped 0 of 4")
    page.click("#results")
    page.wait_for_selector("#totals-plot .main-svg")
    revealed = page.locator("#revealed tbody tr")
    assert revealed.count() == 4
    units = [revealed.nth(i).locator("a").inner_text() for i in range(4)]
    assert sorted(u.split(" #")[0] for u in units) == ["neurons", "neurons", SAE_NAME, SAE_NAME]
    totals = sorted(int(revealed.nth(i).locator("td").nth(3).inner_text()) for i in range(4))
    assert totals == [9, 10, 11, 12]  # 2+4+3+(n/a)+1, then 2+4+2+1 plus specificity 2, 3 and 0
    context.close()
    assert not errors, errors
