"""Pydantic models of blind reviews: what a rater sees of an item (nothing that names its unit), what the API takes
as a score, and the results once they open."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BeforeValidator, ConfigDict, Field, create_model, field_validator, model_validator

from app.read.schemas import Schema
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
    url: str = Field(description="The review's page")
    api_url: str = Field(description="This JSON")
    # Only for the signed-in rater:
    scored: int | None = None
    skipped: int | None = None
    finished: bool | None = None
    next_url: str | None = Field(None, description="The page of the next item to rate (null: none left)")
    next_api_url: str | None = Field(None, description="The same item's JSON")
    results_open: bool | None = None


class ReviewList(Schema):
    reviews: list[ReviewSummary]
    bases: list[str] = Field(description="Bases a new review can draw from (of the newest model)")


class BlindToken(Schema):
    """A promoted or suppressed token of the item's unit: its text (whitespace made visible in `shown`) and its
    direct logit effect relative to the unit's largest |effect| (±1 for that one), rounded to 2 decimals."""

    text: str
    shown: str
    value: float


class BlindExample(Schema):
    """A window of the unit's review sample (never shown on an open page): token texts (whitespace made visible in
    `shown`) and activations relative to the unit's max (1 = its max), rounded to 3 decimals; the window's own token
    is at `max_position`, its activation is `value`."""

    value: float
    max_position: int
    texts: list[str]
    shown: list[str]
    acts: list[float]


class BlindInterval(Schema):
    """One of the unit's activation intervals (equal widths from 0 to its max; bounds relative to the max) and the
    review sample's windows in it: empty when the review sample has none there."""

    index: int
    low: float
    high: float
    samples: list[BlindExample]


class BlindEvidence(Schema):
    """What a rater sees of a unit, drawn the same way for every basis: the review sample's windows and the logit
    effects, relative to the unit's own maxima. No token ids, counts, histogram or interval shares."""

    top_logits: list[BlindToken]
    bottom_logits: list[BlindToken]
    top_examples: list[BlindExample] = Field(description="The review sample's largest activations, largest first")
    intervals: list[BlindInterval] = Field(description="Every activation interval, lowest first")


class ItemState(Schema):
    """One item in the rater's order, and where the rater stands with it."""

    item: int
    step: int
    state: Literal["scored", "skipped", "to do"]
    url: str = Field(description="Its page")
    api_url: str = Field(description="Its JSON")


class ReviewItem(BlindEvidence):
    """What a rater sees of one item: the unit's evidence, never its basis, index or a link to it, and nothing that
    can be matched against the open unit pages (DESIGN.md section 7)."""

    review: str
    review_url: str = Field(description="The review's page")
    review_api_url: str = Field(description="The review's JSON (your progress)")
    item: int = Field(description="The review's own item number")
    step: int = Field(description="Where this item comes in the rater's order")
    of: int
    url: str = Field(description="This item's page")
    api_url: str = Field(description="This JSON")
    prev: ItemState | None = Field(description="The item before this one in the rater's order")
    next: ItemState | None = Field(description="The item after this one in the rater's order")
    items: list[ItemState] = Field(description="Every item in the rater's order")
    n_intervals: int = Field(description="How many interval scores a score may carry")
    mine: MyScore | None
    state: str
    finished: bool = Field(description="You have scored every item: your scores are final, the results open")
    read_only: bool = Field(description="Nothing more to save here: you have finished, or the review is closed")


class MyItemScore(Schema):
    """One of the rater's answers: the item, where it comes in their order, and the answer."""

    item: int
    step: int
    url: str
    api_url: str
    score: MyScore


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
    """Mann–Whitney U between two bases' items' mean totals, two-sided."""

    test: Literal["Mann-Whitney U"] = "Mann-Whitney U"
    alternative: Literal["two-sided"] = "two-sided"
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
