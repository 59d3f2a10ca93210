"""View models of automated interpretability: a unit's explanations with their scores, and the results page that
sets the features' scores beside the neurons' (/autointerp and its twin)."""

from __future__ import annotations

from pydantic import Field

from app.read.schemas import Schema

SMOKE_TEST = ("Explanations and scores are only as good as the language model that writes and simulates them: those "
              "of a 135M model (SmolLM2-135M-Instruct, the offline default) are a smoke test of the pipeline, not "
              "evidence about the units.")
SCORER_MEANINGS = {
    "simulation": "Spearman correlation of simulated and true activations over every token of held-out windows "
                  "(the paper's score; 0 for a constant simulator)",
    "detection": "balanced accuracy of 'does this window activate the unit?' on active and silent held-out windows",
    "fuzzing": "balanced accuracy of 'are the marked tokens the active ones?', marked correctly or on silent tokens",
    "logits": "balanced accuracy of 'would this token come next?': promoted tokens ranked 10-60 against random ones",
}


class ScorerDistribution(Schema):
    """One scorer's scores of one basis's units: every value, the median and its bootstrap 95% interval."""

    scorer: str
    n: int
    median: float | None
    ci_low: float | None
    ci_high: float | None
    values: list[float]


class BasisScores(Schema):
    basis: str
    kind: str
    n_units: int = Field(description="Units of this basis with an explanation.")
    scorers: list[ScorerDistribution]


class ScorerTest(Schema):
    """Two-sided Mann-Whitney U test of one scorer's scores, basis `a` against basis `b`."""

    scorer: str
    a: str
    b: str
    u: float
    p: float
    effect_size: float = Field(description="P(a score of a > a score of b), ties counting half.")


class HumanAgreement(Schema):
    """For units also rated in closed blind reviews: Spearman correlation of their mean human total with a scorer."""

    scorer: str
    n: int
    spearman: float | None


class ScoredUnit(Schema):
    basis: str
    index: int
    url: str
    explanation: str
    model: str
    scores: dict[str, float | None]
    human_total: float | None = Field(None, description="Mean rubric total in closed blind reviews, if rated there.")


class AutointerpResults(Schema):
    """Features against neurons by automated interpretability, as the review's results set them side by side."""

    model: str | None = Field(description="The run (model) whose bases are shown.")
    llm: str | None = Field(description="The language model whose explanations are shown (null: the newest of each "
                                        "unit, whichever model wrote it).")
    llms: list[str] = Field(description="Every language model that explained units of this run.")
    note: str
    scorers: dict[str, str] = Field(description="What each scorer's number means.")
    bases: list[BasisScores]
    tests: list[ScorerTest]
    human: list[HumanAgreement]
    hypotheses: list[BasisScores] = Field(description="Reviewers' hypotheses from closed blind reviews, scored by the "
                                                      "same scorers (`monoscope autointerp --hypotheses`), per basis.")
    units: list[ScoredUnit]
