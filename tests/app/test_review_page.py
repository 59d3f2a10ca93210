"""The rating page in a real browser at 1280 px: the rubric beside the evidence and still in view at the bottom of
it, what each score means, the item list with states and previous/next, Enter on a disclosure, read-only once the
rater has finished. Set MONOSCOPE_SCREENSHOTS=DIR to keep screenshots of the page."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import expect
from test_pages import signed_in
from webapp_fixtures import SAE_NAME

from app.store import rubric

WIDE = {"width": 1280, "height": 800}


def shoot(page, name: str) -> None:
    folder = os.environ.get("MONOSCOPE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def test_the_rubric_stays_beside_the_evidence(browser, writable_site):  # noqa: F811
    site, ws = writable_site.site, writable_site
    review = site.post("/api/v1/reviews", json={"name": "layout", "bases": ["neurons", SAE_NAME], "per_basis": 2},
                       headers=ws.auth("alice")).json()
    context, page, errors = signed_in(browser, ws, viewport=WIDE)
    page.goto(f"{site.url}/reviews/{review['id']}/next")
    page.wait_for_selector("#score-form[data-keys-bound]")
    evidence, panel = page.locator(".rate .evidence").bounding_box(), page.locator(".rate .rubric-panel").bounding_box()
    assert panel["x"] >= evidence["x"] + evidence["width"] - 1 and panel["width"] >= 300  # beside, not below
    assert evidence["height"] > WIDE["height"]  # enough evidence to scroll through
    for c in rubric.COMPONENTS:  # each criterion says what its scores mean
        for level in c.levels:
            expect(page.locator(f"#c-{c.name} .levels")).to_contain_text(level)
    shoot(page, "item-top")
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    # scrolled: polled from Python (wait_for_function evaluates a string in the page, which the CSP forbids)
    for _ in range(50):
        if page.evaluate("window.scrollY") > 0:
            break
        page.wait_for_timeout(100)
    assert page.evaluate("window.scrollY") > 0
    save = page.locator("#save").bounding_box()
    assert 0 <= save["y"] and save["y"] + save["height"] <= WIDE["height"]  # the rubric is still in view
    assert page.locator("#c-confidence").bounding_box()["y"] >= 0
    shoot(page, "item-bottom")
    # The item list: every item with its state, this one marked; previous/next in the rater's order.
    items = page.locator("nav.items a")
    assert items.count() == 4 and page.locator("nav.items a[aria-current]").count() == 1
    first_url = page.url
    # Enter on the disclosure opens it; it does not save the (empty) form.
    page.focus("details.intervals-scores summary")
    page.keyboard.press("Enter")
    expect(page.locator("details.intervals-scores")).to_have_attribute("open", "")
    assert page.url == first_url
    # Rate every item through the API, then the page is read-only: the answers shown, nothing to save.
    while (state := site.get(f"/api/v1/reviews/{review['id']}", headers=ws.auth("alice")).json())["next_url"]:
        item = state["next_url"].rsplit("/", 1)[1]
        body = {"hypothesis": "h", "confidence": 1, "token_consistency": 2, "logit_consistency": 1, "effect_gap": 0,
                "specificity": 1}
        assert site.post(f"/api/v1/reviews/{review['id']}/items/{item}/score", json=body,
                         headers=ws.auth("alice")).status_code == 200
    page.goto(first_url)
    assert page.locator("#save").count() == 0 and page.locator("#skip").count() == 0
    assert page.locator("input[name=confidence][value='1']").is_checked()
    assert page.locator("input[name=confidence][value='1']").is_disabled()
    assert page.locator("nav.items a.scored").count() == 4
    shoot(page, "item-finished")
    context.close()
    assert not errors, errors
