"""Every page under the server's Content-Security-Policy in headless Chromium: no violation is reported (no inline
script, no eval, no style or resource the policy refuses), and the pages still draw (plots, htmx swaps, Swagger UI).

Violations are collected two ways: the document's `securitypolicyviolation` events (an init script, which
Playwright injects outside the policy) and Chromium's console messages about the policy.
"""

from __future__ import annotations

import pytest
from webapp_fixtures import SAE_NAME

LISTEN = """window.__csp = [];
document.addEventListener("securitypolicyviolation", e => window.__csp.push(
  `${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile || ""}:${e.lineNumber}`));"""
# What each page must show once drawn (so that a policy that silently broke a script fails here too).
DRAWN = {"/": ".plot-area .main-svg", "/compare": ".plot-area .main-svg", "/docs": ".opblock",
         f"/bases/{SAE_NAME}/units/3": "#labels:not([hx-get])", "/infer?text=def+f%28x%29%3A": "#active-units",
         "/proxies": "#proxy-corr .main-svg", f"/bases/{SAE_NAME}/units/3/proxy": "#proxy-hist .main-svg",
         "/steer?pin=neurons%3A0&max_tokens=4": "#steered"}


class Watched:
    """A browser context whose pages record every CSP violation and every policy message on the console."""

    def __init__(self, browser, site_url: str):
        self.site_url = site_url
        self.context = browser.new_context()
        self.context.add_init_script(LISTEN)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(m.text) if "Security Policy" in m.text else None)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def visit(self, path: str) -> None:
        response = self.page.goto(self.site_url + path)
        assert "script-src 'self'" in response.headers["content-security-policy"], path
        self.page.wait_for_load_state("networkidle")
        if path in DRAWN:
            self.page.wait_for_selector(DRAWN[path])
        self.check(path)

    def check(self, where: str) -> None:
        violations = self.page.evaluate("window.__csp")
        assert not violations and not self.console and not self.errors, (where, violations, self.console,
                                                                          self.errors)

    def close(self) -> None:
        self.context.close()


def test_every_open_page_loads_under_the_policy(browser, site):
    watched = Watched(browser, site.url)
    n_features = site.get(f"/api/v1/bases/{SAE_NAME}").json()["basis"]["n_units"]
    paths = ["/", "/bases/neurons?per_page=10", f"/bases/{SAE_NAME}", f"/bases/{SAE_NAME}/units/3",
             "/bases/neurons/units/0", f"/bases/{SAE_NAME}/units/3/labels", "/compare", "/matches", "/map",
             "/infer", "/infer?text=def+f%28x%29%3A", "/labels", "/reviews", "/login", "/docs", "/no-such-page",
             f"/bases/{SAE_NAME}/units/{n_features}", "/proxies", f"/bases/{SAE_NAME}/units/3/proxy", "/steer",
             "/steer?pin=neurons%3A0&max_tokens=4"]
    try:
        for path in paths:
            watched.visit(path)
        # htmx swaps under the policy: a filter of the unit list, then a token of live inference
        watched.visit(f"/bases/{SAE_NAME}")
        watched.page.select_option("select[name=sort]", "density")
        watched.page.wait_for_url("**sort=density**")
        watched.check("unit list filtered in place")
        watched.visit("/infer?text=def+f%28x%29%3A")
        watched.page.locator("#tokens button").nth(1).click()
        watched.page.wait_for_url("**at=1**")
        watched.check("infer token chosen in place")
    finally:
        watched.close()


@pytest.mark.parametrize("writable_site", ["sqlite"], indirect=True)
def test_every_signed_in_page_loads_under_the_policy(browser, writable_site):
    ws = writable_site
    review = ws.site.post("/api/v1/reviews", json={"name": "csp review", "bases": ["neurons", SAE_NAME],
                                                   "per_basis": 1}, headers=ws.auth("bob")).json()
    watched = Watched(browser, ws.site.url)
    try:
        watched.visit("/login")
        watched.page.fill("#token", ws.tokens["bob"])
        watched.page.click("#sign-in")
        watched.page.wait_for_url(ws.site.url + "/")
        watched.check("signed in")
        for path in ("/login", f"/bases/{SAE_NAME}/units/5", review["url"], "/reviews"):
            watched.visit(path)
        # label in place (an htmx form), then rate both items with the keyboard script and open the results
        watched.visit(f"/bases/{SAE_NAME}/units/5")
        watched.page.fill("#label-form input[name=text]", "under the policy")
        watched.page.press("#label-form input[name=text]", "Enter")
        watched.page.wait_for_selector("#current-label")
        watched.check("label saved in place")
        for step in range(2):
            watched.visit(review["url"] + "/next")
            watched.page.wait_for_selector("#score-form[data-keys-bound]")
            watched.page.fill("#hypothesis", f"item {step}")
            for name in ("confidence", "token_consistency", "logit_consistency", "effect_gap", "specificity"):
                watched.page.check(f"input[name={name}][value='1']")
            watched.page.click("#save")
            watched.page.wait_for_load_state("networkidle")
            watched.check(f"item {step} saved")
        watched.visit(review["url"] + "/results")
        watched.page.wait_for_selector("#totals-plot .main-svg")
        watched.check("results drawn")
    finally:
        watched.close()
