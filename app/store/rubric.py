"""The blind review's rubric, declared once: its components in order, their maxima and questions, the per-interval
score scale, and the rules that make a total of them.

"Towards Monosemanticity" scores a unit on five components; the effect-size gap (0/1) applies only while the logit
consistency is below its maximum, so the total is out of 14 either way. The API's score schema, the item form, the
score columns written and exported, the results CSV, the statistics and the plots all read their component list and
ranges from COMPONENTS (tests/app/test_rubric.py checks that each one does). The database keeps one column per
component (app/store/models.py, ReviewScore): adding a component here needs a migration adding its column.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

from sae.errors import MonoscopeError


@dataclass(frozen=True)
class Component:
    """One scored component: its name (JSON field, form field and database column), highest score, the question the
    form asks, what the API's schema says of it, and, for one that does not always apply, the (component, score)
    that makes it not apply (then it is null, "n/a")."""

    name: str
    maximum: int
    question: str
    description: str | None = None
    not_applicable_when: tuple[str, int] | None = None
    levels: tuple[str, ...] = ()  # what each score 0..maximum means, shown beside the form's radios

    def __post_init__(self) -> None:
        if len(self.levels) != self.maximum + 1:
            raise ValueError(f"{self.name} needs a meaning for each score 0..{self.maximum}")

    def applies(self, scores: Mapping[str, int | None]) -> bool:
        """Whether this component is scored, given the other components' scores."""
        if self.not_applicable_when is None:
            return True
        other, value = self.not_applicable_when
        return scores.get(other) != value

    @property
    def legend(self) -> str:
        """The form's legend: the question and the range (and when it is n/a)."""
        if self.not_applicable_when is None:
            return f"{self.question} (0–{self.maximum})"
        other, value = self.not_applicable_when
        return f"{self.question} (0–{self.maximum}; n/a when {other.replace('_', ' ')} is {value})"


COMPONENTS: tuple[Component, ...] = (
    Component("confidence", 3, "Confidence in the hypothesis",
              levels=("no idea what it does", "a guess", "fairly confident", "confident: the hypothesis explains it")),
    Component("token_consistency", 5, "Consistency of the high-activation tokens",
              "Consistency of the high-activation tokens",
              levels=("no pattern among the top activations", "a few fit the hypothesis", "some fit",
                      "about half fit", "most fit", "all of them fit")),
    Component("logit_consistency", 3, "Consistency of the positive logits",
              "Consistency of the positive logit effects",
              levels=("no promoted token fits the hypothesis", "a few fit", "most fit",
                      "all of them fit, or plausibly follow it")),
    Component("effect_gap", 1, "Gap in effect size", "Gap in effect size; null (n/a) when logit_consistency is 3",
              not_applicable_when=("logit_consistency", 3),
              levels=("no gap: the tokens that fit are promoted no more than the others",
                      "a gap: the tokens that fit are promoted clearly more than those that do not")),
    Component("specificity", 3, "Specificity",
              levels=("it fires as strongly on much else", "it fires on other things, though more weakly",
                      "it fires on a little else, at low activations", "it fires on nothing else")),
)
NAMES: tuple[str, ...] = tuple(c.name for c in COMPONENTS)
MAX_INTERVAL_SCORE = 3  # each activation interval is scored 0..3 against the hypothesis (optional)
INTERVAL_SCALE = tuple(range(MAX_INTERVAL_SCORE + 1))


def total(scores: Mapping[str, int | None]) -> int:
    """The total of one answer: the sum of its scored components (one that does not apply counts 0)."""
    return sum(scores.get(c.name) or 0 for c in COMPONENTS if c.applies(scores))


def _max_total() -> int:
    return max(total(dict(zip(NAMES, values))) for values in itertools.product(
        *(range(c.maximum + 1) for c in COMPONENTS)))


MAX_TOTAL = _max_total()  # 14: the paper's "total out of 14"
TOTALS = tuple(range(MAX_TOTAL + 1))


def check(scores: Mapping[str, int | None]) -> dict[str, int | None]:
    """Return the components' scores in table order, or raise with the first one out of range (or given where it
    does not apply)."""
    checked: dict[str, int | None] = {}
    for c in COMPONENTS:
        value = scores.get(c.name)
        if not c.applies(scores):
            if value is not None:
                other, at = c.not_applicable_when
                raise MonoscopeError(f"{c.name} does not apply when {other} is {at}: leave it empty")
        elif not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= c.maximum:
            raise MonoscopeError(f"{c.name} is an integer from 0 to {c.maximum}, got {value!r}")
        checked[c.name] = value
    return checked


def check_intervals(scores: list[int | None] | None, n_intervals: int) -> list[int | None] | None:
    """Return the per-interval scores (None: not given), or raise unless there is one 0..MAX_INTERVAL_SCORE (or
    None) for each of the `n_intervals` intervals."""
    if scores is not None and (len(scores) != n_intervals or any(
            s is not None and not 0 <= s <= MAX_INTERVAL_SCORE for s in scores)):
        raise MonoscopeError(f"interval_scores has one score 0-{MAX_INTERVAL_SCORE} (or null) for each of the "
                             f"{n_intervals} intervals")
    return scores


def scores_of(row) -> dict[str, int | None]:
    """The components' scores of anything holding them as attributes (a ReviewScore row, a schema), in table order."""
    return {name: getattr(row, name) for name in NAMES}
