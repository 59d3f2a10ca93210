"""A blind review is blind (DESIGN.md section 7), tried as attacks on the tiny run's database:
- no number an item shows, outside its windows' own activations, tells the neuron items from the feature items;
- an item's windows and values cannot be found in the open unit twins (the review sample is kept apart), while the
  same attack finds nearly every item made of the open windows;
- no token ids on an item, and an open review changes nothing on the unit pages or twins of its units.
The attacks are app/read/blindness.py, which bench/blind_review.py runs on the demo (BENCHMARKS.md)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select, text
from webapp_fixtures import SAE_NAME

from app.read.blindness import OpenTwins, found_share, separation, windows
from app.read.queries.bases import BasisRecord
from app.read.queries.review_items import blind_evidence
from app.store.db import make_engine, session_factory
from app.store.models import Basis
from app.store.reviews import reviewable

BASES = ("neurons", SAE_NAME)


@pytest.fixture(scope="module")
def evidence(site) -> dict[tuple[str, int], dict]:
    """Every unit a review may draw, as its item shows it (JSON), by (basis, index)."""
    out = {}
    with session_factory(site.db_url)() as session:
        for name in BASES:
            basis = session.scalar(select(Basis).where(Basis.name == name))
            for index in reviewable(session, basis):
                out[(name, index)] = blind_evidence(session, BasisRecord.of(basis), index).model_dump(mode="json")
    return out


@pytest.fixture(scope="module")
def twins(site) -> dict[tuple[str, int], dict]:
    """Every unit's open JSON twin, as anyone can read it."""
    out = {}
    for name in BASES:
        n_units = site.get(f"/api/v1/bases/{name}").json()["basis"]["n_units"]
        for index in range(n_units):
            out[(name, index)] = site.get(f"/api/v1/bases/{name}/units/{index}").json()
    return out


def test_no_number_an_item_shows_tells_neurons_from_features(evidence):
    groups = [[item for (basis, _), item in evidence.items() if basis == name] for name in BASES]
    assert all(len(group) >= 20 for group in groups), [len(g) for g in groups]
    aucs = separation(*groups)
    assert {"top_logits[0].value", "bottom_logits[9].value", "top_examples#", "intervals[0].samples#",
            "top_examples[0].max_position", "windows#"} <= set(aucs)  # logits, windows and intervals compared
    worst = max(aucs, key=aucs.get)
    assert aucs[worst] < 0.9, f"{worst} separates neurons from features: AUC {aucs[worst]:.3f}"
    for item in evidence.values():  # the same scale for every unit: one logit effect is ±1, activations are <= 1
        assert 1.0 in {abs(t["value"]) for t in item["top_logits"] + item["bottom_logits"]}
        assert max(w["value"] for w in windows(item)) <= 1.0


def test_item_windows_cannot_be_found_in_the_open_twins(evidence, twins):
    index = OpenTwins(twins)
    assert found_share(index, evidence) <= 0.10
    # The attack works: items made of the open pages' windows (as items showed them before) are found.
    shown = {key: {"top_examples": [dict(w, value=round(w["value"] / twins[key]["max_activation"], 3))
                                    for w in windows(twins[key])]} for key in evidence}
    assert found_share(index, shown) >= 0.9
    # Windows share no token with the open windows of their unit, so none of them is an open window either.
    for key, item in evidence.items():
        open_texts = {tuple(w["texts"]) for w in windows(twins[key])}
        assert not any(tuple(w["texts"]) in open_texts for w in windows(item))


def test_items_carry_no_token_ids_and_open_reviews_mark_nothing(writable_site):
    ws, site = writable_site, writable_site.site
    before = {(b, i): site.get(f"/api/v1/bases/{b}/units/{i}").text for b in BASES for i in range(8)}
    pages = {key: _page(site, *key) for key in before}
    r = site.post("/api/v1/reviews", json={"name": "marks", "bases": list(BASES), "per_basis": 8},
                  headers=ws.auth("alice"))
    assert r.status_code == 201, r.text
    review_id = r.json()["id"]
    for item in range(1, 17):
        data = site.get(f"/api/v1/reviews/{review_id}/items/{item}", headers=ws.auth("bob"))
        page = site.get(f"/reviews/{review_id}/items/{item}", headers=ws.auth("bob")).text
        assert data.status_code == 200 and "token_id" not in data.text and '"id"' not in data.text
        assert "token_id" not in page and "data-id" not in page and "histogram" not in page.lower()
    with make_engine(site.db_url).connect() as c:
        drawn = c.execute(text("SELECT b.name, r.unit_index FROM review_unit r JOIN basis b ON b.id = r.basis_id "
                               "WHERE r.review_id = :r"), {"r": review_id}).all()
    for name, index in drawn:  # the open pages of the items' units are as they were
        if (name, index) in before:
            assert site.get(f"/api/v1/bases/{name}/units/{index}").text == before[(name, index)]
            assert _page(site, name, index) == pages[(name, index)]
        page = site.get(f"/bases/{name}/units/{index}").text
        assert "in review" not in page.lower() and f"/reviews/{review_id}" not in page


def _page(site, basis: str, index: int) -> str:
    """A unit page without its per-request CSRF token."""
    return re.sub(r'csrftoken[^>]*', "", site.get(f"/bases/{basis}/units/{index}").text)
