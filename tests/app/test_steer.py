"""Pinned sampling on the web: POST and GET /api/v1/steer against a real server, the /steer page, bounds, and the
CLI; the maths itself is checked in tests/sae/test_steering.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from webapp_fixtures import SAE_NAME, assert_one_line_error, monoscope

from app.read.steer_schemas import SteerResult


def _busiest(site, basis: str) -> int:
    return int(np.argmax(site.units(basis)["firing_count"]))


def test_post_needs_no_login_and_pins_change_the_continuation(site):
    unit = _busiest(site, SAE_NAME)
    body = {"prompt": "def f(x):", "pins": [{"basis": SAE_NAME, "index": unit, "value": 50.0}],
            "max_tokens": 12, "temperature": 1.0, "seed": 7}
    r = site.post("/api/v1/steer", json=body)
    assert r.status_code == 200, r.text
    result = SteerResult.model_validate(r.json())
    assert len(result.steered) == len(result.unsteered) == 12 and result.prompt_tokens > 0
    assert result.changed == sum(t.changed for t in result.steered) > 0
    assert all(0 <= t.p_steered <= 1 and 0 <= t.p_unsteered <= 1 for t in result.steered)
    again = site.post("/api/v1/steer", json=body).json()
    assert again == r.json()  # same seed, same result
    # a pin without a value takes the unit's max observed activation
    default = site.post("/api/v1/steer", json={"pins": [{"basis": SAE_NAME, "index": unit}], "max_tokens": 4}).json()
    peak = float(site.units(SAE_NAME)["max_activation"][unit])
    assert default["pins"][0]["value"] == pytest.approx(peak) == default["pins"][0]["max_activation"]
    assert default["prompt"] == "" and default["prompt_tokens"] == 0  # the neutral prefix: BOS alone
    # past the tiny model's context of 32: the continuation reads its last window
    long = site.post("/api/v1/steer", json={"prompt": "x = 1\n" * 20, "max_tokens": 40, "pins": body["pins"]})
    assert long.status_code == 200 and len(long.json()["steered"]) == 40


def test_get_twin_matches_post_and_the_page_shows_both_continuations(site):
    pin = f"{SAE_NAME}:{_busiest(site, SAE_NAME)}=40"
    query = {"prompt": "x = '<b>&'", "pin": [pin, "neurons:2"], "max_tokens": 6, "temperature": 0}
    twin = site.get("/api/v1/steer", params=query)
    assert twin.status_code == 200, twin.text
    post = site.post("/api/v1/steer", json={"prompt": query["prompt"], "max_tokens": 6, "temperature": 0,
                                            "pins": [{"basis": SAE_NAME, "index": _busiest(site, SAE_NAME),
                                                      "value": 40}, {"basis": "neurons", "index": 2}]}).json()
    assert twin.json() == post
    page = site.get("/steer", params=query)
    assert page.status_code == 200
    assert 'id="steered"' in page.text and 'id="unsteered"' in page.text and "error term" in page.text
    assert "x = &#39;&lt;b&gt;&amp;&#39;" in page.text and "<b>&'" not in page.text  # the prompt is escaped
    assert 'href="/api/v1/steer?' in page.text
    assert site.get("/steer").status_code == 200  # the empty form


@pytest.mark.parametrize("body, status, fragment", [
    ({"pins": []}, 422, "pins"),
    ({"pins": [{"basis": "neurons", "index": 0}] * 9}, 422, "pins"),
    ({"pins": [{"basis": "neurons", "index": 0}], "max_tokens": 129}, 422, "max_tokens"),
    ({"pins": [{"basis": "neurons", "index": 0}], "temperature": -1}, 422, "temperature"),
    ({"pins": [{"basis": "neurons", "index": 0, "value": 1e9}]}, 422, "value"),
    ({"pins": [{"basis": "neurons", "index": 99999}]}, 404, "units 0 to"),
    ({"pins": [{"basis": "no-such", "index": 0}]}, 404, "no basis"),
])
def test_bad_requests_are_clear_4xx(site, body, status, fragment):
    r = site.post("/api/v1/steer", json=body)
    assert r.status_code == status, r.text
    assert fragment in json.dumps(r.json())
    assert site.get("/api/v1/steer", params={"pin": "neurons:x"}).status_code == 422
    assert site.get("/steer", params={"pin": "neurons:99999"}).status_code == 404


def test_cli_steer(analysed_run, monkeypatch, capsys):
    out = monoscope(monkeypatch, capsys, "steer", "--run", str(analysed_run), "--pin", "neurons:3=9",
                    "--max-tokens", "5", "--temperature", "0", "--json")
    code, stdout, _ = out
    assert code == 0, out
    result = SteerResult.model_validate_json(stdout)
    assert result.pins[0].value == 9 and len(result.steered) == 5
    bad = monoscope(monkeypatch, capsys, "steer", "--run", str(analysed_run), "--pin", "neurons:99999")
    assert_one_line_error(bad, "units 0 to")
