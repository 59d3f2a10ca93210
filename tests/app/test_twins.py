"""Every page has a JSON twin: the list of pages comes from the web app's own routers, so a new page without a twin
(or a twin whose JSON breaks its schema) fails here without anyone adding it to a list."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import TypeAdapter
from webapp_fixtures import SAE_NAME

from app.web import account, api, labels, pages, reviews

HTML_ROUTERS = (pages.router, labels.pages, reviews.pages, account.pages)
API_ROUTERS = (api.router, labels.api, reviews.api, account.api)
NOT_PAGES = {  # GET routes of the HTML routers that are not pages, and why
    "/login": "the sign-in form; a script sends its token as `Authorization: Bearer` instead (/api/v1/me)",
    "/reviews/{review_id}/next": "a redirect to the next item to score",
    "/reviews/{review_id}/results.csv": "a CSV download of what /api/v1/reviews/{review_id}/results serves",
}
TWIN_OF = {"/": "/api/v1/overview"}
QUERY = {"/infer": "?text=def+f%28x%29%3A+return+x",  # pages that show their twin once they have something to show
         "/steer": "?pin=neurons%3A3&max_tokens=4"}


def html_pages() -> list[str]:
    return sorted(r.path for router in HTML_ROUTERS for r in router.routes if "GET" in r.methods
                  and r.path not in NOT_PAGES)


def twin_routes() -> dict[str, object]:
    return {r.path: r for router in API_ROUTERS for r in router.routes if "GET" in r.methods}


def test_the_router_lists_the_pages_a_hand_kept_list_missed():
    found = set(html_pages())
    assert {"/", "/map", "/labels", "/reviews", "/bases/{basis}/units/{index}", "/reviews/{review_id}/results"} <= found
    assert set(NOT_PAGES) <= {r.path for router in HTML_ROUTERS for r in router.routes}  # no stale exemption


@pytest.fixture(scope="module")
def values(writable_site) -> dict[str, str]:
    """A value for every path parameter of a page: a live feature, an open review and a closed one."""
    ws = writable_site
    index = int(np.argmax(ws.site.units(SAE_NAME)["firing_count"]))
    made = []
    for name in ("twins-open", "twins-closed"):
        r = ws.site.post("/api/v1/reviews", json={"name": name, "bases": ["neurons", SAE_NAME], "per_basis": 1},
                         headers=ws.auth("alice"))
        assert r.status_code in (200, 201), r.text
        made.append(str(r.json()["id"]))
    closed = ws.site.post(f"/api/v1/reviews/{made[1]}/close", headers=ws.auth("alice"))
    assert closed.status_code == 200, closed.text
    return {"basis": SAE_NAME, "index": str(index), "position": "1", "review_id": made[0], "closed": made[1]}


@pytest.mark.parametrize("writable_site", ["sqlite"], indirect=True)
@pytest.mark.parametrize("template", html_pages())
def test_every_page_has_a_json_twin(writable_site, values, template):
    twin_template = TWIN_OF.get(template, "/api/v1" + template)
    route = twin_routes().get(twin_template)
    assert route is not None, f"the page {template} has no JSON twin at {twin_template}"
    fill = dict(values, review_id=values["closed"]) if template.endswith("/results") else values
    path, twin_path = (t.format(**fill) + QUERY.get(template, "") for t in (template, twin_template))
    headers = writable_site.auth("alice")
    page = writable_site.site.get(path, headers=headers)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), (path, page.text[:300])
    assert f'href="{twin_path.split("?")[0]}' in page.text  # the page links its twin
    twin = writable_site.site.get(twin_path, headers=headers)
    assert twin.status_code == 200, (twin_path, twin.text[:300])
    TypeAdapter(route.response_model).validate_python(twin.json())
