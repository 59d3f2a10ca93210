"""Blind reviews against a real `monoscope serve` on SQLite and PostgreSQL: creation by the real command, blind
items, the rubric's rules, skipping and resuming, results gated until a rater has finished, and the statistics."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from webapp_fixtures import SAE_NAME

from app.store.db import make_engine

EXE = Path(sys.executable).with_name("monoscope")
RUBRIC = {"hypothesis": "commas", "confidence": 2, "token_consistency": 4, "logit_consistency": 2, "effect_gap": 1,
          "specificity": 3}


def monoscope(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=120)


def create(ws, name: str, per_basis: int = 3) -> int:
    """Create a review as alice through the API; return its id."""
    r = ws.site.post("/api/v1/reviews", json={"name": name, "bases": ["neurons", SAE_NAME], "per_basis": per_basis},
                     headers=ws.auth("alice"))
    assert r.status_code == 201 and r.json()["n_items"] == 2 * per_basis, r.text
    return r.json()["id"]


def rate_all(ws, review_id: int, who: str, totals: dict[int, int] | None = None) -> list[int]:
    """Score every item as `who` in their own order; return the item numbers in that order."""
    site, seen = ws.site, []
    while True:
        state = site.get(f"/api/v1/reviews/{review_id}", headers=ws.auth(who)).json()
        if state["next_url"] is None or state["finished"]:
            return seen
        item = int(state["next_url"].rsplit("/", 1)[1])
        seen.append(item)
        body = dict(RUBRIC, confidence=item % 4, hypothesis=f"{who} on {item} <b>&'\"")
        r = site.post(f"/api/v1/reviews/{review_id}/items/{item}/score", json=body, headers=ws.auth(who))
        assert r.status_code == 200, r.text
        if totals is not None:
            totals[item] = r.json()["total"]


def test_the_command_draws_live_units_from_each_basis(writable_site):
    site = writable_site.site
    done = monoscope("review", "create", "--bases", f"neurons,{SAE_NAME}", "--per-basis", "3", "--name", "draw",
                     "--db", site.db_url)
    assert done.returncode == 0 and "6 items" in done.stdout, done.stderr
    review_id = next(r["id"] for r in site.get("/api/v1/reviews").json()["reviews"] if r["name"] == "draw")
    with make_engine(site.db_url).connect() as c:
        rows = c.execute(text(
            "SELECT b.name, u.firing_count, u.density FROM review_unit r JOIN basis b ON b.id = r.basis_id "
            "JOIN unit u ON u.basis_id = r.basis_id AND u.\"index\" = r.unit_index WHERE r.review_id = :r "
            "ORDER BY r.position"), {"r": review_id}).all()
    assert sorted(name for name, _, _ in rows) == ["neurons"] * 3 + [SAE_NAME] * 3
    assert all(firing > 0 and density >= 1e-5 for _, firing, density in rows)
    # Made from the command line: only the command line closes it.
    refused = site.post(f"/api/v1/reviews/{review_id}/close", headers=writable_site.auth("alice"))
    assert refused.status_code == 403 and "monoscope review close" in refused.json()["detail"]
    closed = monoscope("review", "close", str(review_id), "--db", site.db_url)
    assert closed.returncode == 0 and site.get(f"/api/v1/reviews/{review_id}").json()["state"] == "closed"
    for args, message in ((("neurons,nope",), "no ready basis named 'nope'"),
                          ((f"neurons,{SAE_NAME}", "--per-basis", "100000"), "per-basis count is 1 to 500"),
                          ((f"neurons,{SAE_NAME}", "--name", "draw"), "exists already")):
        extra = list(args[1:]) if "--name" in args else ["--name", f"bad-{len(args)}", *args[1:]]
        done = monoscope("review", "create", "--bases", args[0], *extra, "--db", site.db_url)
        assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_items_reveal_nothing_of_their_unit(writable_site):
    ws, site = writable_site, writable_site.site
    review_id = create(ws, "blind")
    for item in range(1, 7):
        data = site.get(f"/api/v1/reviews/{review_id}/items/{item}", headers=ws.auth("bob"))
        assert data.status_code == 200
        assert set(data.json()) == {"review", "review_url", "review_api_url", "item", "step", "of", "url", "api_url",
                                    "prev", "next", "items", "n_intervals", "top_logits", "bottom_logits",
                                    "top_examples", "intervals", "mine", "state", "finished", "read_only"}
        blind = data.json()
        # Activations are relative to the unit's max, and its review windows lie below the open page's top ones.
        assert 0 < max(e["value"] for e in blind["top_examples"]) <= 1.0
        assert all(set(iv) == {"index", "low", "high", "samples"} for iv in blind["intervals"])
        assert len(blind["intervals"]) == 11 and blind["intervals"][-1]["high"] == 1.0  # empty ones too
        raw = data.text
        assert SAE_NAME not in raw and '"neurons"' not in raw and "/bases/" not in raw
        page = site.get(f"/reviews/{review_id}/items/{item}", headers=ws.auth("bob")).text
        assert SAE_NAME not in page and "/bases/" not in page and "neurons #" not in page
        assert "of 6" in page and "density" not in page.lower()
    assert site.get(f"/api/v1/reviews/{review_id}/items/1").status_code == 401  # raters are users


def test_each_rater_has_an_order_of_their_own(writable_site):
    ws = writable_site
    review_id = create(ws, "orders", per_basis=5)
    orders = {}
    for who in ("alice", "bob"):
        orders[who] = rate_all(ws, review_id, who)
        assert sorted(orders[who]) == list(range(1, 11))
    assert orders["alice"] != orders["bob"]


@pytest.mark.parametrize("change, message", [
    ({"confidence": 4}, "confidence"),
    ({"token_consistency": 6}, "token_consistency"),
    ({"logit_consistency": 3, "effect_gap": 1}, "does not apply"),
    ({"effect_gap": None}, "effect_gap is an integer"),
    ({"hypothesis": "   "}, "hypothesis"),
    ({"interval_scores": [1, 2]}, "interval_scores"),
])
def test_bad_scores_get_a_message_and_store_nothing(writable_site, change, message):
    ws = writable_site
    review_id = create(ws, f"bad-{json.dumps(change, sort_keys=True)}", per_basis=1)
    r = ws.site.post(f"/api/v1/reviews/{review_id}/items/1/score", json=dict(RUBRIC, **change), headers=ws.auth("bob"))
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert ws.site.get(f"/api/v1/reviews/{review_id}/items/1", headers=ws.auth("bob")).json()["mine"] is None


def test_skip_resume_results_gate_and_close(writable_site):
    ws, site = writable_site, writable_site.site
    review_id = create(ws, "gate", per_basis=2)
    base = f"/api/v1/reviews/{review_id}"
    assert site.post(f"{base}/items/5/score", json=RUBRIC, headers=ws.auth("bob")).status_code == 404
    first = int(site.get(base, headers=ws.auth("bob")).json()["next_url"].rsplit("/", 1)[1])
    assert site.post(f"{base}/items/{first}/skip", headers=ws.auth("bob")).json()["skipped"] is True
    state = site.get(base, headers=ws.auth("bob")).json()
    assert state["skipped"] == 1 and not state["next_url"].endswith(f"/{first}")
    assert site.get(f"{base}/results", headers=ws.auth("bob")).status_code == 403
    totals: dict[int, int] = {}
    order = rate_all(ws, review_id, "bob", totals)
    assert order[-1] == first and sorted(order) == [1, 2, 3, 4]  # the skipped item waited, then came back
    assert site.get(base, headers=ws.auth("bob")).json()["finished"]
    r = site.get(f"{base}/results", headers=ws.auth("bob"))
    assert r.status_code == 200
    final = site.post(f"{base}/items/{first}/score", json=RUBRIC, headers=ws.auth("bob"))
    assert final.status_code == 409 and "final" in final.json()["detail"]  # seen the results: no more changes
    for who in ("alice", None):  # alice has not finished; nobody signed in sees nothing either
        headers = ws.auth(who) if who else {}
        blocked = site.get(f"{base}/results", headers=headers)
        assert blocked.status_code == 403 and blocked.json()["detail"]
    results = r.json()
    revealed = {i["item"]: i for i in results["items"]}
    assert sorted(revealed) == [1, 2, 3, 4]
    assert [revealed[i]["scores"][0]["total"] for i in order] == [totals[i] for i in order]
    by_basis: dict[str, list[int]] = {}
    for i in order:
        by_basis.setdefault(revealed[i]["basis"], []).append(totals[i])
    for d in results["distributions"]:
        assert d["n_items"] == len(by_basis.get(d["basis"], []))
        if d["n_items"]:
            assert d["median"] == statistics.median(by_basis[d["basis"]])
            assert d["ci_low"] <= d["median"] <= d["ci_high"]
            assert sum(d["histogram"]) == d["n_items"]  # one rater: one score per item
    assert results["agreement"] is None  # one rater
    assert all(i["unit_url"] == f"/bases/{i['basis']}/units/{i['index']}" for i in results["items"])
    # Only the creator closes; closing freezes scores and opens the results to everyone.
    not_creator = site.post(f"{base}/close", headers=ws.auth("bob"))
    assert not_creator.status_code == 403 and "creator" in not_creator.json()["detail"]
    assert site.post(f"{base}/close", headers=ws.auth("alice")).json()["state"] == "closed"
    frozen = site.post(f"{base}/items/{first}/score", json=RUBRIC, headers=ws.auth("alice"))
    assert frozen.status_code == 409 and "closed" in frozen.json()["detail"]
    assert site.get(f"{base}/results").status_code == 200
    csv_rows = site.get(f"/reviews/{review_id}/results.csv").text.strip().splitlines()
    assert csv_rows[0].startswith("item,basis,index,rater,hypothesis,total") and len(csv_rows) == 1 + 4


def test_two_raters_give_agreement_and_a_test(writable_site):
    ws = writable_site
    review_id = create(ws, "agreement", per_basis=3)
    for who in ("alice", "bob"):
        rate_all(ws, review_id, who)
    results = ws.site.get(f"/api/v1/reviews/{review_id}/results", headers=ws.auth("alice")).json()
    # Both raters gave each item the same total (confidence = item % 4): perfect agreement.
    assert results["agreement"] == pytest.approx(1.0)
    (test,) = results["tests"]
    assert {test["a"], test["b"]} == {"neurons", SAE_NAME} and 0 <= test["p"] <= 1
    assert [r["rater"] for r in results["raters"]] == ["alice", "bob"] and all(r["scored"] == 6 for r in results["raters"])
    html = ws.site.get(f"/reviews/{review_id}/results", headers=ws.auth("alice")).text
    assert "Krippendorff" in html and f"{SAE_NAME} #" in html and "median 12 for features" in html
    assert "<b>&" not in html and "&lt;b&gt;&amp;&#39;&#34;" in html  # typed hypotheses render as text
