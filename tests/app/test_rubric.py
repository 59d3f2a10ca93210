"""The review rubric is declared once (app/store/rubric.py): the API's schemas, the item form and its parser, the
database columns, the exports, the results CSV and the statistics all take their components and ranges from that
table, so a component added to it and missed anywhere fails here. No server, no database: fast."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from starlette.datastructures import FormData

from app.read.review_schemas import MyScore, RevealedScore, ReviewItem, ScoreIn
from app.read.schemas import Histogram
from app.store import rubric
from app.store.basis_export import TABLES
from app.store.models import ReviewScore
from app.store.review_stats import total_histogram
from app.store.reviews import Answer
from app.web.render import templates
from app.web.reviews import CSV_FIELDS, NOT_APPLICABLE, form_scores, item_context
from sae.errors import MonoscopeError

NAMES = set(rubric.NAMES)


class Radios(HTMLParser):
    """The radio groups of a page: {name: [values]}, in document order."""

    def __init__(self):
        super().__init__()
        self.groups: dict[str, list[str]] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("type") == "radio":
            self.groups.setdefault(attrs["name"], []).append(attrs["value"])


def rendered_form(n_intervals: int = 3) -> dict[str, list[str]]:
    """The radio groups of the item page's form, rendered by the route's own context."""
    item = ReviewItem.model_construct(review="r", review_url="/reviews/1", item=1, step=1, of=1,
                                      n_intervals=n_intervals, act_hist=Histogram(edges=[0.1, 1.0], counts=[5]),
                                      top_logits=[], bottom_logits=[], top_examples=[], intervals=[], mine=None,
                                      state="open", finished=False)
    html = templates.env.get_template("review_item.html").render(item_context(item, "token", "/reviews/1/items/1"))
    radios = Radios()
    radios.feed(html)
    return radios.groups


def test_every_schema_column_and_export_has_exactly_the_components():
    assert set(ScoreIn.model_fields) - {"hypothesis", "interval_scores"} == NAMES
    assert set(MyScore.model_fields) - {"hypothesis", "total", "interval_scores", "skipped"} == NAMES
    assert set(RevealedScore.model_fields) - {"rater", "hypothesis", "total", "interval_scores"} == NAMES
    stored = {"id", "review_unit_id", "rater_id", "skipped", "hypothesis", "total", "interval_scores", "updated"}
    assert set(ReviewScore.__table__.columns.keys()) - stored == NAMES  # a new component needs its migration
    exported = {"review_id", "review", "review_state", "item", "model", "basis", "index", "rater", "skipped",
                "hypothesis", "total", "interval_scores", "updated"}
    assert set(TABLES["review_scores"]) - exported == NAMES
    assert set(CSV_FIELDS) - {"item", "basis", "index", "rater", "hypothesis", "total", "interval_scores"} == NAMES


def test_the_api_schema_states_each_components_range():
    properties = ScoreIn.model_json_schema()["properties"]
    for c in rubric.COMPONENTS:
        ranges = [properties[c.name], *properties[c.name].get("anyOf", [])]
        assert {(r.get("minimum"), r.get("maximum")) for r in ranges if r.get("type") == "integer"} == {
            (0, c.maximum)}, c.name
        assert (c.name in ScoreIn.model_json_schema().get("required", [])) == (c.not_applicable_when is None)


def test_the_form_asks_every_component_on_its_scale_and_its_parser_reads_them_all():
    groups = rendered_form(n_intervals=3)
    asked = {name for name in groups if not name.startswith("interval_")}
    assert asked == NAMES
    for c in rubric.COMPONENTS:
        n_a = [NOT_APPLICABLE] if c.not_applicable_when else []
        assert groups[c.name] == [str(v) for v in range(c.maximum + 1)] + n_a, c.name
    assert [groups[f"interval_{i}"] for i in range(3)] == [[str(v) for v in rubric.INTERVAL_SCALE]] * 3
    # A browser's answer, each group at its highest number (n/a where that makes a component not apply): parsed,
    # validated, checked and totalled.
    answer = {name: values[-1] for name, values in groups.items() if NOT_APPLICABLE not in values}
    numbers = {name: int(value) for name, value in answer.items()}
    for c in rubric.COMPONENTS:
        if c.not_applicable_when:
            answer[c.name] = str(c.maximum) if c.applies(numbers) else NOT_APPLICABLE
    form = FormData({"hypothesis": "h", "n_intervals": "3", **answer})
    parsed = form_scores(form)
    assert set(parsed) == NAMES
    body = ScoreIn(hypothesis="h", **parsed)
    checked = Answer.from_fields(body.model_dump()).checked(n_intervals=3)
    assert checked.total == rubric.MAX_TOTAL
    assert len(total_histogram([checked.total])) == rubric.MAX_TOTAL + 1


def test_the_table_gives_the_papers_total_and_rules():
    assert rubric.MAX_TOTAL == 14  # "Towards Monosemanticity": a total out of 14
    top = {c.name: c.maximum for c in rubric.COMPONENTS}
    gated = [c for c in rubric.COMPONENTS if c.not_applicable_when]
    for c in gated:
        other, value = c.not_applicable_when
        with pytest.raises(MonoscopeError, match="does not apply"):
            rubric.check({**top, other: value})
        assert rubric.check({**top, other: value, c.name: None})[c.name] is None
    with pytest.raises(MonoscopeError, match="is an integer from 0 to"):
        rubric.check({**top, rubric.NAMES[0]: top[rubric.NAMES[0]] + 1})
    with pytest.raises(MonoscopeError, match="interval_scores"):
        rubric.check_intervals([rubric.MAX_INTERVAL_SCORE + 1], n_intervals=1)
