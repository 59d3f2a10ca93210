"""Explanations for the pages and their twins: a unit's explanations with their scores, each unit's current one
(what lists show beside it when it has no label), and the features-against-neurons results of /autointerp.

A unit's current explanation is the newest written by a language model (a reviewer's hypothesis scored by autointerp,
model "review:<rater>", is not one). Explanations change only when `monoscope autointerp` writes, so cached pages key
on `explanations_state` (their count, newest time and newest score id): one aggregate over two small tables.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from app.read.autointerp_schemas import (
    SCORER_MEANINGS,
    SMOKE_TEST,
    AutointerpResults,
    BasisScores,
    HumanAgreement,
    ScoredUnit,
    ScorerDistribution,
    ScorerTest,
)
from app.read.cache import Cache
from app.read.queries.bases import NEWEST_MODEL_FIRST, NotFound, model_bases, model_param
from app.read.schemas import ExplainedExample, ExplanationScoreView, ExplanationView
from app.read.urls import unit_url
from app.store import review_stats as stats
from app.store.autointerp import HUMAN
from app.store.models import Basis, Explanation, ExplanationScore, Model, Review, ReviewScore, ReviewUnit
from sae.autointerp.metrics import spearman
from sae.autointerp.scorers import SCORERS

SMALL_MODELS = ("135M", "smollm2-135")  # explanations by these are a smoke test (case-insensitive)

_STATE = select(select(func.count(Explanation.id)).scalar_subquery(),
                select(func.max(Explanation.created)).scalar_subquery(),
                select(func.max(ExplanationScore.id)).scalar_subquery())


def explanations_state(session: Session) -> tuple:
    """A value that changes whenever an explanation or a score is written (for caches of pages that show them)."""
    count, newest, score = session.connection().execute(_STATE).one()
    return count, str(newest), score


def newest_explanation(basis_id, unit_index):
    """The current explanation of unit (basis_id, unit_index), NULL if none, as a correlated scalar subquery (index
    ix_explanation_unit): for statements that read it beside each row, as `newest_label`."""
    return (select(Explanation.text).where(Explanation.basis_id == basis_id, Explanation.unit_index == unit_index,
                                           ~Explanation.model.startswith(HUMAN))
            .order_by(Explanation.created.desc(), Explanation.id.desc()).limit(1).scalar_subquery())


_CURRENT = (select(Explanation.unit_index, Explanation.text, Explanation.created, Explanation.id)
            .where(Explanation.basis_id == bindparam("basis_id"), ~Explanation.model.startswith(HUMAN)))
_BASIS = Cache()
_EXPLAINED_UNITS = select(Explanation.unit_index).where(Explanation.basis_id == bindparam("basis_id")).distinct()
_EXPLAINED = Cache()


def basis_explanations(session: Session, basis_id: int) -> dict[int, str]:
    """{unit index: current explanation} of every explained unit of a basis, read again only after a write."""
    def read() -> dict[int, str]:
        newest: dict[int, tuple] = {}
        for index, text, created, row_id in session.connection().execute(_CURRENT, {"basis_id": basis_id}):
            if index not in newest or (created, row_id) > newest[index][1:]:
                newest[index] = (text, created, row_id)
        return {i: v[0] for i, v in newest.items()}

    return _BASIS.get((str(session.get_bind().url), basis_id), read, state=explanations_state(session))


def is_small(model: str) -> bool:
    return any(s.lower() in model.lower() for s in SMALL_MODELS)


def unit_explanations(session: Session, basis_id: int, index: int) -> list[ExplanationView]:
    """Every explanation of one unit, newest first, each with its scores (in SCORERS order). Most units have none:
    the basis's explained units are read once per explanations state (a unit page's first render skipped ~0.4 ms of
    ORM query)."""
    if index not in _EXPLAINED.get((str(session.get_bind().url), basis_id), lambda: frozenset(
            session.connection().scalars(_EXPLAINED_UNITS, {"basis_id": basis_id})), state=explanations_state(session)):
        return []
    rows = list(session.scalars(select(Explanation).where(Explanation.basis_id == basis_id,
                                                          Explanation.unit_index == index)
                                .order_by(Explanation.created.desc(), Explanation.id.desc())))
    scores: dict[int, dict[str, float | None]] = defaultdict(dict)
    if rows:
        for explanation_id, scorer, score in session.execute(
                select(ExplanationScore.explanation_id, ExplanationScore.scorer, ExplanationScore.score)
                .where(ExplanationScore.explanation_id.in_([r.id for r in rows]))):
            scores[explanation_id][scorer] = score
    return [ExplanationView(
        model=r.model, prompt_version=r.prompt_version, text=r.text, created=r.created, prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens, small_model=is_small(r.model),
        scores=[ExplanationScoreView(scorer=s, score=scores[r.id][s]) for s in SCORERS if s in scores[r.id]],
        examples=[ExplainedExample(**e) for e in r.examples or []]) for r in rows]


def _human_totals(session: Session, basis_ids: list[int]) -> dict[tuple[int, int], float]:
    """{(basis id, unit index): mean rubric total} of units rated in closed reviews (open ones stay blind)."""
    sums: dict[tuple[int, int], list[int]] = defaultdict(list)
    for basis_id, index, total in session.execute(
            select(ReviewUnit.basis_id, ReviewUnit.unit_index, ReviewScore.total)
            .join(Review, Review.id == ReviewUnit.review_id).join(ReviewScore, ReviewScore.review_unit_id ==
                                                                   ReviewUnit.id)
            .where(Review.state == "closed", ReviewScore.skipped.is_(False), ReviewScore.total.is_not(None),
                   ReviewUnit.basis_id.in_(basis_ids))):
        sums[(basis_id, index)].append(total)
    return {key: sum(v) / len(v) for key, v in sums.items()}


def autointerp_results(*, session: Session, model: str | None, llm: str | None) -> AutointerpResults:
    """The scores of every explained unit of a run's bases, per basis and scorer, tested features against neurons;
    `llm` keeps one language model's explanations (default: each unit's newest, whichever model wrote it)."""
    stmt = select(Model).order_by(*NEWEST_MODEL_FIRST).limit(1) if model is None else \
        select(Model).where(Model.name == model)
    m = session.scalar(stmt)
    if m is None:
        raise NotFound(f"no model named {model!r}" if model else "no model is ingested yet")
    bases = model_bases(session, m)
    by_id = {b.id: b for b in bases}
    param = model_param(session, m)
    everything = session.execute(select(Explanation).where(Explanation.basis_id.in_(list(by_id)))
                                 .order_by(Explanation.created, Explanation.id)).scalars().all()
    rows = [r for r in everything if not r.model.startswith(HUMAN)]
    said = [r for r in everything if r.model.startswith(HUMAN)]
    llms = sorted({r.model for r in rows})
    if llm is not None and llm not in llms:
        raise NotFound(f"no explanation of this run by {llm!r}; by: {', '.join(llms) or 'none yet'}")
    current = {(r.basis_id, r.unit_index): r for r in rows if llm is None or r.model == llm}  # newest wins
    scores: dict[int, dict[str, float | None]] = defaultdict(dict)
    for explanation_id, scorer, score in session.execute(
            select(ExplanationScore.explanation_id, ExplanationScore.scorer, ExplanationScore.score)
            .where(ExplanationScore.explanation_id.in_([r.id for r in [*current.values(), *said]]))):
        scores[explanation_id][scorer] = score
    human = _human_totals(session, list(by_id))
    units = [ScoredUnit(basis=by_id[b].name, index=i, url=unit_url(by_id[b].name, i, param), explanation=r.text,
                        model=r.model, scores={s: scores[r.id].get(s) for s in SCORERS},
                        human_total=human.get((b, i))) for (b, i), r in sorted(current.items())]
    values = {b.name: {s: [u.scores[s] for u in units if u.basis == b.name and u.scores[s] is not None]
                       for s in SCORERS} for b in bases}
    shown = [b for b in bases if any(u.basis == b.name for u in units)]
    summaries = [BasisScores(basis=b.name, kind=b.kind, n_units=sum(u.basis == b.name for u in units),
                             scorers=[_distribution(s, values[b.name][s]) for s in SCORERS]) for b in shown]
    tests = []
    for neuron in (b for b in shown if b.kind == "neuron"):
        for sae in (b for b in shown if b.kind == "sae"):
            for s in SCORERS:
                result = stats.mann_whitney(values[sae.name][s], values[neuron.name][s])
                if result is not None:
                    tests.append(ScorerTest(scorer=s, a=sae.name, b=neuron.name, u=result["u"], p=result["p"],
                                            effect_size=result["effect_size"]))
    agreement = []
    for s in SCORERS:
        pairs = [(u.human_total, u.scores[s]) for u in units if u.human_total is not None and u.scores[s] is not None]
        agreement.append(HumanAgreement(scorer=s, n=len(pairs), spearman=spearman(*zip(*pairs)) if len(pairs) >= 3
                                        else None))
    hypotheses = []
    for b in bases:
        mine = [r for r in said if r.basis_id == b.id]
        if mine:
            hypotheses.append(BasisScores(basis=b.name, kind=b.kind, n_units=len({r.unit_index for r in mine}),
                                          scorers=[_distribution(s, [scores[r.id][s] for r in mine
                                                                     if scores[r.id].get(s) is not None])
                                                   for s in SCORERS]))
    return AutointerpResults(model=m.name, llm=llm, llms=llms, note=SMOKE_TEST, scorers=SCORER_MEANINGS,
                             bases=summaries, tests=tests, human=agreement, hypotheses=hypotheses, units=units)


def _distribution(scorer: str, values: list[float]) -> ScorerDistribution:
    median, low, high = stats.median_ci(values)
    return ScorerDistribution(scorer=scorer, n=len(values), median=median, ci_low=low, ci_high=high, values=values)
