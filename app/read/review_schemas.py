"""Pydantic models of blind reviews: what a rater sees of an item (nothing that names its unit), what the API takes
as a score, and the results once they open."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BeforeValidator, ConfigDict, Field, create_model, field_validator, model_validator

from app.read.schemas import Example, Histogram, LogitToken, Schema
from app.read.text_rules import Text
from app.store.reviews import MAX_HYPOTHESIS_CHARS, MAX_PER_BASIS, REVIEW_INTERVALS
from app.store.rubric import COMPONENTS, MAX_INTERVAL_SCORE, MAX_TOTAL, check, scores_of
from sae.errors import MonoscopeError


def _no_bool(value):
    if isinstance(value, bool):  # pydantic's lax mode would read true as 1; JSON Schema's integer is no boolean
        raise ValueError("give a number, not true or false")
    return value


def Int(low: int, high: int):  # noqa: N802 (used as a type)
    """An integer low..high of a request body (1.0 is one, as in JSON Schema; true is not). The range comes before
    the validator, so that the schema states it as minimum and maximum."""
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(_no_bool)]


def _not_applicable_rules(schema: dict) -> None:
    """State in JSON Schema what `rubric.check` enforces: a component that may not apply is null (or absent) when
    its condition holds, and an integer otherwise."""
    for c in COMPONENTS:
        if c.not_applicable_when is not None:
            other, at = c.not_applicable_when
            schema.setdefault("allOf", []).append({"anyOf": [
                {"properties": {other: {"const": at}, c.name: {"type": "null"}}},
                {"properties": {other: {"not": {"const": at}}, c.name: {"type": "integer"}}, "required": [c.name]}]})


class _GivenRubric(Schema):
    """ScoreIn's base: the rubric's rules beyond each component's range, checked and stated in the schema."""

    model_config = ConfigDict(frozen=True, json_schema_extra=_not_applicable_rules)

    @model_validator(mode="after")
    def _rules(self):
        try:
            check(scores_of(self))
        except MonoscopeError as e:
            raise ValueError(str(e)) from None
        return self


def _rubric_model(name: str, doc: str | None, *, given: bool = False, before: dict, after: dict):
    """A schema with `before`'s fields, one field per rubric component (app/store/rubric.py), then `after`'s: as the
    API takes them (`given`: ranges and rules checked, n/a components default to null), or as stored (any may be
    null)."""
    components = {}
    for c in COMPONENTS:
        if not given:
            components[c.name] = (int | None, ...)
        elif c.not_applicable_when is None:
            components[c.name] = (Int(0, c.maximum), Field(description=c.description))
        else:
            components[c.name] = (Int(0, c.maximum) | None, Field(None, description=c.description))
    return create_model(name, __base__=_GivenRubric if given else Schema, __module__=__name__, __doc__=doc, **before,
                        **components, **after)


class ReviewIn(Schema):
    """A new review: `per_basis` live units drawn at random from each basis (different bases of one model)."""

    name: Text(200) = Field(description="1-200 characters, not only whitespace; stored trimmed")
    bases: list[Text(200)] = Field(min_length=1, max_length=10, description="Basis names, e.g. [\"neurons\", "
                                                                            "\"topk-4096\"]; a repeat counts once")
    per_basis: Int(1, MAX_PER_BASIS)
    model: str | None = Field(None, max_length=200, description="Model of the bases (default: the newest having them)")

    @field_validator("bases")
    @classmethod
    def _once_each(cls, bases: list[str]) -> list[str]:
        return list(dict.fromkeys(bases))


_NOT_APPLICABLE = "; ".join(f"`{c.name}` is null when {c.not_applicable_when[0]} is {c.not_applicable_when[1]}"
                            for c in COMPONENTS if c.not_applicable_when)
ScoreIn = _rubric_model(
    "ScoreIn", f"The paper's rubric for one item (total out of {MAX_TOTAL}); {_NOT_APPLICABLE}.", given=True,
    before={"hypothesis": (Text(MAX_HYPOTHESIS_CHARS), Field(description="Not only whitespace; stored trimmed"))},
    after={"interval_scores": (list[Int(0, MAX_INTERVAL_SCORE) | None] | None, Field(
        None, min_length=REVIEW_INTERVALS, max_length=REVIEW_INTERVALS,
        description=f"Optional: 0-{MAX_INTERVAL_SCORE} (or null) for each of the item's {REVIEW_INTERVALS} "
                    "activation intervals, lowest first"))})
MyScore = _rubric_model("MyScore", None, before={"hypothesis": (str | None, ...)},
                        after={"total": (int | None, ...), "interval_scores": (list[int | None] | None, ...),
                               "skipped": (bool, ...)})


class ReviewSummary(Schema):
    id: int
    name: str
    state: str
    per_basis: int
    n_items: int
    created: datetime
    created_by: str | None
    url: str
    # Only for the signed-in rater:
    scored: int | None = None
    skipped: int | None = None
    finished: bool | None = None
    next_url: str | None = None
    results_open: bool | None = None


class ReviewList(Schema):
    reviews: list[ReviewSummary]
    bases: list[str] = Field(description="Bases a new review can draw from (of the newest model)")


class BlindInterval(Schema):
    """Samples of one activation interval, its bounds relative to the unit's max, and its share of firing tokens."""

    index: int
    low: float
    high: float
    contains_pct: float
    samples: list[Example]


class ReviewItem(Schema):
    """What a rater sees of one item: the unit's evidence, never its basis, index or a link to it. Activations are
    relative to the unit's max (1 = its max), so no exact value can be looked up in the open unit lists."""

    review: str
    review_url: str
    item: int = Field(description="The review's own item number")
    step: int = Field(description="Where this item comes in the rater's order")
    of: int
    n_intervals: int = Field(description="How many interval scores a score may carry")
    act_hist: Histogram = Field(description="Over activation / the unit's max; counts per 10,000 firing tokens")
    top_logits: list[LogitToken]
    bottom_logits: list[LogitToken]
    top_examples: list[Example]
    intervals: list[BlindInterval]
    mine: MyScore | None
    state: str
    finished: bool = Field(description="You have scored every item: your scores are final, the results open")


class Distribution(Schema):
    __doc__ = f"""One basis's totals: how many scores gave each total 0-{MAX_TOTAL}; the median of the items' mean
    totals (over their raters) with its bootstrap 95% interval."""

    basis: str
    kind: str
    n_items: int = Field(description="Items with at least one score")
    histogram: list[int] = Field(description=f"Scores (all raters) with each total 0-{MAX_TOTAL}")
    median: float | None
    ci_low: float | None
    ci_high: float | None


class Test(Schema):
    """Mann–Whitney U between two bases' totals (two-sided)."""

    a: str
    b: str
    u: float
    p: float
    effect_size: float = Field(description="P(a random total of `a` exceeds one of `b`), ties half")


class RaterRow(Schema):
    rater: str
    scored: int
    medians: dict[str, float | None]


RevealedScore = _rubric_model("RevealedScore", None,
                              before={"rater": (str, ...), "hypothesis": (str | None, ...), "total": (int | None, ...)},
                              after={"interval_scores": (list[int | None] | None, ...)})


class RevealedItem(Schema):
    item: int
    basis: str
    index: int
    unit_url: str
    scores: list[RevealedScore]


class IntervalCurve(Schema):
    basis: str
    mean: list[float | None]
    n: list[int]


class ReviewResults(Schema):
    review: ReviewSummary
    distributions: list[Distribution]
    tests: list[Test]
    raters: list[RaterRow]
    agreement: float | None = Field(description="Krippendorff's alpha (interval) of the totals; null with one rater")
    interval_curves: list[IntervalCurve]
    items: list[RevealedItem]
    paper: str = "Towards Monosemanticity (2023): median 12 for features, 0 for neurons"
