"""One basis as plain tables for pandas and datasette (`monoscope export basis`): units, examples, labels, review
scores and explanations (by language models, with their scores), one row per dict, with the columns and their types
declared in TABLES.

Rows come in batches of a few hundred units, so a 16,384-unit basis never sits in memory whole; token strings are
spelled out from the model's vocabulary so the files read without the app.
"""

from __future__ import annotations

import math
from typing import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.read.unit_data import context_before
from app.read.windows import decode_window
from app.store import rubric
from app.store.example_rows import PAGE_ORDER, WINDOW_COLUMNS, unpack_windows
from app.store.labels import list_labels, newest_labels, utc
from app.store.models import (
    OPEN_KINDS,
    TOP_TOKENS_SEPARATOR,
    Basis,
    Example,
    Explanation,
    ExplanationScore,
    Label,
    Model,
    Review,
    ReviewScore,
    ReviewUnit,
    Unit,
    User,
)
from app.store.vocabulary import token_strings
from sae.autointerp.scorers import SCORERS

UNIT_CHUNK = 256  # units per batch of unit rows and of example rows

# Column name -> type: int, float, str, bool, time (UTC), or list<int|float|str>. Writers build their schema here.
TABLES: dict[str, dict[str, str]] = {
    "units": dict(
        model="str", basis="str", index="int", firing_count="int", density="float", log10_density="float",
        max_activation="float", mean_activation="float", top_token_entropy="float", top_tokens="list<str>",
        top_logit_tokens="list<str>", top_logit_ids="list<int>", top_logit_values="list<float>",
        bottom_logit_tokens="list<str>", bottom_logit_ids="list<int>", bottom_logit_values="list<float>",
        act_hist_edges="list<float>", act_hist_counts="list<int>", logit_hist_edges="list<float>",
        logit_hist_counts="list<int>", interval_edges="list<float>", interval_counts="list<int>",
        map_x="float", map_y="float", label="str"),
    "examples": dict(
        model="str", basis="str", index="int", kind="str", interval="int", rank="int", value="float",
        max_position="int", text="str", tokens="list<str>", token_ids="list<int>", activations="list<float>",
        effects="list<float>"),
    "labels": dict(id="int", model="str", basis="str", index="int", text="str", note="str", author="str",
                   created="time"),
    "review_scores": dict(
        review_id="int", review="str", review_state="str", item="int", model="str", basis="str", index="int",
        rater="str", skipped="bool", hypothesis="str", **{name: "int" for name in rubric.NAMES}, total="int",
        interval_scores="list<int>", updated="time"),
    "explanations": dict(
        model="str", basis="str", index="int", llm="str", prompt_version="str", text="str", created="time",
        prompt_tokens="int", completion_tokens="int", **{name: "float" for name in SCORERS},
        score_tokens="int"),
}


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


def _logits(pairs: list, strings: list[str], side: str) -> dict:
    ids = [int(i) for i, _ in pairs]
    return {f"{side}_logit_tokens": [strings[i] if 0 <= i < len(strings) else "" for i in ids],
            f"{side}_logit_ids": ids, f"{side}_logit_values": [float(v) for _, v in pairs]}


UNIT_COLUMNS = [getattr(Unit, c) for c in (
    "index", "firing_count", "density", "log10_density", "max_activation", "mean_activation", "top_token_entropy",
    "top_tokens", "top_logits", "bottom_logits", "act_hist", "logit_hist", "interval_edges", "interval_counts",
    "map_x", "map_y")]  # columns, not entities: nothing accumulates in the session's identity map


def unit_batches(session: Session, basis: Basis, model: Model, strings: list[str]) -> Iterator[list[dict]]:
    """Yield the unit rows, by index, UNIT_CHUNK at a time."""
    labels = {i: label for _, i, label in session.execute(newest_labels(Label.basis_id == basis.id))}
    for start in range(0, basis.n_units, UNIT_CHUNK):
        units = session.execute(select(*UNIT_COLUMNS).where(
            Unit.basis_id == basis.id, Unit.index >= start, Unit.index < start + UNIT_CHUNK).order_by(Unit.index))
        yield [dict(
            model=model.name, basis=basis.name, index=u.index, firing_count=u.firing_count, density=u.density,
            log10_density=_finite(u.log10_density), max_activation=u.max_activation,
            mean_activation=u.mean_activation, top_token_entropy=_finite(u.top_token_entropy),
            top_tokens=u.top_tokens.split(TOP_TOKENS_SEPARATOR) if u.top_tokens else [],
            **_logits(u.top_logits, strings, "top"), **_logits(u.bottom_logits, strings, "bottom"),
            act_hist_edges=u.act_hist["edges"], act_hist_counts=u.act_hist["counts"],
            logit_hist_edges=u.logit_hist["edges"], logit_hist_counts=u.logit_hist["counts"],
            interval_edges=list(u.interval_edges), interval_counts=list(u.interval_counts),
            map_x=u.map_x, map_y=u.map_y, label=labels.get(u.index)) for u in units]


def example_batches(session: Session, basis: Basis, model: Model, strings: list[str]) -> Iterator[list[dict]]:
    """Yield the example rows of UNIT_CHUNK units at a time: per unit its top contexts by rank, then its interval
    samples by interval and rank; padding dropped, token strings spelled out."""
    before = context_before(basis.config)
    for start in range(0, basis.n_units, UNIT_CHUNK):
        rows = session.execute(
            select(Unit.index, *WINDOW_COLUMNS).join(Unit, Unit.id == Example.unit_id)
            .where(Unit.basis_id == basis.id, Unit.index >= start, Unit.index < start + UNIT_CHUNK,
                   Example.kind.in_(OPEN_KINDS))  # the review sample stays out of reach
            .order_by(Unit.index, *PAGE_ORDER))
        batch = []
        for index, *row in rows:
            for w in unpack_windows(*row):
                window = decode_window(w.token_ids, w.activations, w.effects, strings, before)
                batch.append(dict(model=model.name, basis=basis.name, index=index, kind=w.kind, interval=w.bucket,
                                  rank=w.rank, value=w.value, max_position=window.max_position,
                                  text="".join(window.texts), tokens=window.texts, token_ids=window.ids,
                                  activations=window.acts, effects=window.effects))
        yield batch


def label_batches(session: Session, basis: Basis, model: Model) -> Iterator[list[dict]]:
    """Yield the basis's whole label history, oldest first, as written (the units table holds each current label)."""
    yield [dict(id=row.id, model=row.model, basis=row.basis, index=row.index, text=row.text, note=row.note,
                author=row.author, created=row.created) for row in list_labels(session, basis_id=basis.id)]


def review_score_batches(session: Session, basis: Basis, model: Model) -> Iterator[list[dict]]:
    """Yield every rater's answer on the review items drawn from this basis, skips included, by review and item: of
    closed reviews only, whose results are open to everyone (an open review's items stay blind)."""
    rows = session.execute(
        select(Review.id, Review.name, Review.state, ReviewUnit.position, ReviewUnit.unit_index, User.name,
               ReviewScore)
        .join(ReviewUnit, ReviewUnit.review_id == Review.id)
        .join(ReviewScore, ReviewScore.review_unit_id == ReviewUnit.id)
        .join(User, User.id == ReviewScore.rater_id)
        .where(ReviewUnit.basis_id == basis.id, Review.state == "closed")
        .order_by(Review.id, ReviewUnit.position, User.name)).all()
    yield [dict(review_id=review_id, review=name, review_state=state, item=position, model=model.name,
                basis=basis.name, index=index, rater=rater, skipped=s.skipped, hypothesis=s.hypothesis,
                **rubric.scores_of(s), total=s.total, interval_scores=s.interval_scores, updated=utc(s.updated))
           for review_id, name, state, position, index, rater, s in rows]


def explanation_batches(session: Session, basis: Basis, model: Model) -> Iterator[list[dict]]:
    """Yield every explanation of the basis's units (by a language model, or a reviewer's hypothesis it scored:
    `llm` review:<rater>), by unit and time, with each scorer's score and the tokens the scoring took."""
    scores: dict[int, dict[str, tuple]] = {}
    for explanation_id, scorer, score, p, c in session.execute(
            select(ExplanationScore.explanation_id, ExplanationScore.scorer, ExplanationScore.score,
                   ExplanationScore.prompt_tokens, ExplanationScore.completion_tokens)
            .join(Explanation, Explanation.id == ExplanationScore.explanation_id)
            .where(Explanation.basis_id == basis.id)):
        scores.setdefault(explanation_id, {})[scorer] = (score, p + c)
    rows = session.scalars(select(Explanation).where(Explanation.basis_id == basis.id)
                           .order_by(Explanation.unit_index, Explanation.created, Explanation.id))
    yield [dict(model=model.name, basis=basis.name, index=e.unit_index, llm=e.model, prompt_version=e.prompt_version,
                text=e.text, created=utc(e.created), prompt_tokens=e.prompt_tokens,
                completion_tokens=e.completion_tokens,
                **{name: scores.get(e.id, {}).get(name, (None, 0))[0] for name in SCORERS},
                score_tokens=sum(t for _, t in scores.get(e.id, {}).values())) for e in rows]


def basis_tables(session: Session, basis: Basis, model: Model) -> dict[str, Iterator[list[dict]]]:
    """Return each table of TABLES as a lazy stream of row batches, read in the caller's session."""
    strings = token_strings(session, model.id)
    return {"units": unit_batches(session, basis, model, strings),
            "examples": example_batches(session, basis, model, strings),
            "labels": label_batches(session, basis, model),
            "review_scores": review_score_batches(session, basis, model),
            "explanations": explanation_batches(session, basis, model)}
