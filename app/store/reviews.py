"""Blind monosemanticity reviews (the paper's experiment): create one, rate its items, and read what raters gave.

A review draws N live units (not dead, not ultralow, with a full review sample) at random from each chosen basis,
shuffles them and fixes them as items 1..M at creation. Every rater sees every item, in an order of their own (a
permutation seeded by the review and the rater), and scores it on the paper's rubric; a skipped item comes back after
the unseen ones. A rater who has scored every item may see the results, and from then on their scores are final.
Scores refer to the review's items, which refer to (basis, unit index): a re-ingest loses nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.store import rubric
from app.store.models import REVIEW_KINDS, Basis, Example, Model, Review, ReviewScore, ReviewUnit, Unit, User, utc_now
from sae.analysis.config import AnalysisConfig
from sae.conventions import ULTRALOW_DENSITY
from sae.errors import MonoscopeError

MAX_PER_BASIS = 500
MAX_HYPOTHESIS_CHARS = 500
# A score's interval_scores has one entry per activation interval: the analysis's default (the paper's 11), the same
# for every item, so the API's schema can state the count. A basis analysed with another count is not reviewed.
REVIEW_INTERVALS = AnalysisConfig.n_intervals


class Conflict(MonoscopeError):
    """The request is well-formed but the data as it stands refuses it (the review is closed, your scores are
    final, the name is taken, the bases have too few live units): the web answers 409."""


class Forbidden(MonoscopeError):
    """This user may not do or see this (not the review's creator; results not open yet): the web answers 403."""


@dataclass(frozen=True)
class Answer:
    """One rater's answer for one item: the hypothesis, a score per component of the rubric (app/store/rubric.py;
    None where a component does not apply), and optionally one score per activation interval."""

    hypothesis: str
    scores: Mapping[str, int | None]
    interval_scores: list[int | None] | None = None

    @classmethod
    def from_fields(cls, fields: Mapping) -> Answer:
        """The answer from a flat mapping (the API's body): `hypothesis`, each component's name, `interval_scores`."""
        return cls(fields.get("hypothesis"), {name: fields.get(name) for name in rubric.NAMES},
                   fields.get("interval_scores"))

    def checked(self, n_intervals: int) -> Answer:
        """Return the answer with the hypothesis trimmed, or raise with what is out of range."""
        hypothesis = (self.hypothesis or "").strip()
        if "\x00" in hypothesis:
            raise MonoscopeError("the hypothesis cannot contain NUL characters")
        if not hypothesis or len(hypothesis) > MAX_HYPOTHESIS_CHARS:
            raise MonoscopeError(f"the hypothesis is 1 to {MAX_HYPOTHESIS_CHARS} characters, got {len(hypothesis)}")
        return Answer(hypothesis, rubric.check(self.scores), rubric.check_intervals(self.interval_scores, n_intervals))

    @property
    def total(self) -> int:
        return rubric.total(self.scores)


def create_review(session: Session, *, name: str, bases: list[Basis], per_basis: int, creator: User | None,
                  seed: int | None = None) -> Review:
    """Draw `per_basis` live units of each basis, shuffle them into items 1..M, and store the review."""
    name = (name or "").strip()
    if "\x00" in name:
        raise MonoscopeError("a review name cannot contain NUL characters")
    if not name or len(name) > 200:
        raise MonoscopeError(f"a review name is 1 to 200 characters, got {len(name)}")
    if not bases or len({b.id for b in bases}) != len(bases):
        raise MonoscopeError("choose one or more different bases")
    if not 1 <= per_basis <= MAX_PER_BASIS:
        raise MonoscopeError(f"per-basis count is 1 to {MAX_PER_BASIS}, got {per_basis}")
    if session.scalar(select(Review.id).where(Review.name == name)) is not None:
        raise Conflict(f"a review named {name!r} exists already")
    if len({b.model_id for b in bases}) != 1:
        raise Conflict("the bases of a review belong to one model: these are of different models (name `model`)")
    for basis in bases:
        if int((basis.config or {}).get("n_intervals", REVIEW_INTERVALS)) != REVIEW_INTERVALS:
            raise Conflict(f"basis {basis.name!r} was analysed with {basis.config['n_intervals']} activation "
                           f"intervals; reviews score {REVIEW_INTERVALS}")
    seed = secrets.randbits(48) if seed is None else seed
    rng = np.random.default_rng(seed)
    drawn: list[tuple[int, int]] = []
    for basis in bases:
        live = reviewable(session, basis)
        if len(live) < per_basis:
            raise Conflict(f"basis {basis.name!r} has {len(live)} units with a full review sample (live, "
                           f"density at least {ULTRALOW_DENSITY:g}); asked for {per_basis}")
        drawn += [(basis.id, int(i)) for i in rng.choice(live, size=per_basis, replace=False)]
    order = rng.permutation(len(drawn))
    model = session.get(Model, bases[0].model_id)
    review = Review(name=name, created_by=creator.id if creator else None, per_basis=per_basis, seed=seed,
                    state="open", config={"model": model.name, "bases": [b.name for b in bases]})
    session.add(review)
    session.flush()
    session.add_all([ReviewUnit(review_id=review.id, position=position, basis_id=drawn[k][0], unit_index=drawn[k][1])
                     for position, k in enumerate(order, start=1)])
    session.flush()
    return review


def reviewable(session: Session, basis: Basis) -> list[int]:
    """Return the indexes of the units a review may draw from a basis: live (not dead, not ultralow) and with a full
    review sample, i.e. as many review top windows as the analysis keeps (sae/analysis/review_sample.py), so that
    every item shows as many windows as any other. Raise for an analysis made before it kept a review sample."""
    need = int((basis.config or {}).get("review_top_k") or 0)
    if need <= 0:
        raise MonoscopeError(f"basis {basis.name!r} was analysed before reviews had windows of their own, apart from "
                             "the unit pages': run `monoscope analyze --force` and `monoscope ingest` again")
    return [int(i) for i in session.scalars(
        select(Unit.index).join(Example, Example.unit_id == Unit.id)
        .where(Unit.basis_id == basis.id, Unit.firing_count > 0, Unit.density >= ULTRALOW_DENSITY,
               Example.kind == REVIEW_KINDS[0], Example.n >= need).order_by(Unit.index))]


def find_review(session: Session, review_id: int, *, lock: bool = False) -> Review:
    """Return the review; `lock` (writes) holds its row until the transaction ends, so a score and a close of the
    same review take turns on PostgreSQL (SQLite's write lock already serialises them)."""
    review = session.get(Review, review_id, with_for_update=lock)
    if review is None:
        raise LookupError(f"no review {review_id}")
    return review


def item_count(session: Session, review: Review) -> int:
    return session.scalar(select(func.count(ReviewUnit.id)).where(ReviewUnit.review_id == review.id)) or 0


def find_item(session: Session, review: Review, position: int) -> ReviewUnit:
    item = session.scalar(select(ReviewUnit).where(ReviewUnit.review_id == review.id,
                                                   ReviewUnit.position == position))
    if item is None:
        raise LookupError(f"review {review.name!r} has items 1 to {item_count(session, review)}; no item {position}")
    return item


def rater_order(review: Review, rater: User, n_items: int) -> list[int]:
    """Return the item positions in the order this rater sees them (fixed per review and rater)."""
    return [int(p) + 1 for p in np.random.default_rng([review.seed, rater.id]).permutation(n_items)]


@dataclass(frozen=True)
class Progress:
    """Where one rater stands in a review."""

    order: list[int]  # positions, in this rater's order
    scored: set[int]
    skipped: set[int]

    @property
    def next_item(self) -> int | None:
        """The first unseen item in the rater's order, else the first skipped one, else None."""
        unseen = [p for p in self.order if p not in self.scored and p not in self.skipped]
        again = [p for p in self.order if p in self.skipped]
        return (unseen or again or [None])[0]

    @property
    def finished(self) -> bool:
        """True once every item is scored (skips only defer): the rater may see the results."""
        return all(p in self.scored for p in self.order)

    def step(self, position: int) -> int:
        return self.order.index(position) + 1


def progress(session: Session, review: Review, rater: User) -> Progress:
    rows = session.execute(select(ReviewUnit.position, ReviewScore.skipped)
                           .join(ReviewScore, ReviewScore.review_unit_id == ReviewUnit.id)
                           .where(ReviewUnit.review_id == review.id, ReviewScore.rater_id == rater.id)).all()
    return Progress(order=rater_order(review, rater, item_count(session, review)),
                    scored={p for p, skipped in rows if not skipped}, skipped={p for p, skipped in rows if skipped})


def _answer(session: Session, review: Review, item: ReviewUnit, rater: User) -> ReviewScore:
    """Return the rater's row for the item (new if none), after checking the review is open."""
    if review.state != "open":
        raise Conflict(f"review {review.name!r} is closed: its scores can no longer change")
    if progress(session, review, rater).finished:
        raise Conflict("you have scored every item and the results are open to you: your scores are final")
    row = session.scalar(select(ReviewScore).where(ReviewScore.review_unit_id == item.id,
                                                   ReviewScore.rater_id == rater.id))
    if row is None:
        row = ReviewScore(review_unit_id=item.id, rater_id=rater.id)
        session.add(row)
    return row


def save_score(session: Session, review: Review, item: ReviewUnit, rater: User, answer: Answer,
               n_intervals: int) -> ReviewScore:
    """Store (or replace) the rater's answer for the item."""
    answer = answer.checked(n_intervals)
    row = _answer(session, review, item, rater)
    row.skipped, row.hypothesis, row.total = False, answer.hypothesis, answer.total
    for name, value in answer.scores.items():
        setattr(row, name, value)  # one column per component
    row.interval_scores = answer.interval_scores
    row.updated = utc_now()
    session.flush()
    return row


def skip_item(session: Session, review: Review, item: ReviewUnit, rater: User) -> ReviewScore:
    """Mark the item skipped for this rater (it comes back after the unseen ones); a score stays a score."""
    row = _answer(session, review, item, rater)
    if row.total is None:
        row.skipped = True
        row.updated = utc_now()
    session.flush()
    return row


def close_review(session: Session, review: Review, user: User | None) -> None:
    """Close the review: scores freeze and the results open to everyone. In the app only its creator may; user
    None is the command line, run by whoever holds the database."""
    if user is not None and review.created_by != user.id:
        raise Forbidden("only the review's creator can close it" + (
            "" if review.created_by else ": it was created from the command line, so close it there "
                                         "(`monoscope review close ID`)"))
    review.state = "closed"
    session.flush()


def scores(session: Session, review: Review) -> list[tuple[ReviewUnit, str, ReviewScore, str]]:
    """Return every non-skipped score of the review as (item, basis name, score, rater name), by item."""
    return [tuple(row) for row in session.execute(
        select(ReviewUnit, Basis.name, ReviewScore, User.name)
        .join(Basis, Basis.id == ReviewUnit.basis_id)
        .join(ReviewScore, ReviewScore.review_unit_id == ReviewUnit.id)
        .join(User, User.id == ReviewScore.rater_id)
        .where(ReviewUnit.review_id == review.id, ReviewScore.skipped.is_(False))
        .order_by(ReviewUnit.position, User.name))]
