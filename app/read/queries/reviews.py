"""Reads of blind reviews: the list, one rater's view of an item (anonymous), and the results once they open."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.read.queries.bases import (
    BasisRecord,
    NotFound,
    model_bases,
    model_param,
    ready_bases,
)
from app.read.queries.review_items import blind_evidence
from app.read.review_schemas import (
    Distribution,
    IntervalCurve,
    ItemState,
    MyItemScore,
    MyScore,
    RaterRow,
    RevealedItem,
    RevealedScore,
    ReviewItem,
    ReviewList,
    ReviewResults,
    ReviewSummary,
    Test,
)
from app.read.unit_data import analysis_setting
from app.read.urls import unit_url
from app.store import review_stats as stats
from app.store import reviews as store
from app.store.labels import utc
from app.store.models import Basis, Review, ReviewScore, ReviewUnit, User
from app.store.rubric import scores_of


def review_url(review: Review) -> str:
    """The review's page; its JSON is the same path under /api/v1 (`api`)."""
    return f"/reviews/{review.id}"


def item_url(review: Review, position: int) -> str:
    return f"/reviews/{review.id}/items/{position}"


def api(url: str) -> str:
    return "/api/v1" + url


def get_review(session: Session, review_id: int, *, lock: bool = False) -> Review:
    try:
        return store.find_review(session, review_id, lock=lock)
    except LookupError as e:
        raise NotFound(str(e)) from None


def get_item(session: Session, review: Review, position: int):
    try:
        return store.find_item(session, review, position)
    except LookupError as e:
        raise NotFound(str(e)) from None


def summary(session: Session, review: Review, user: User | None) -> ReviewSummary:
    """Return the review's summary, with the user's progress when signed in."""
    creator = session.get(User, review.created_by) if review.created_by else None
    fields = dict(id=review.id, name=review.name, state=review.state, per_basis=review.per_basis,
                  n_items=store.item_count(session, review), created=utc(review.created),
                  created_by=creator.name if creator else None, url=review_url(review),
                  api_url=api(review_url(review)))
    if user is not None:
        p = store.progress(session, review, user)
        nxt = p.next_item if review.state == "open" else None
        fields |= dict(scored=len(p.scored), skipped=len(p.skipped), finished=p.finished,
                       next_url=item_url(review, nxt) if nxt is not None else None,
                       next_api_url=api(item_url(review, nxt)) if nxt is not None else None,
                       results_open=p.finished or review.state == "closed")
    return ReviewSummary(**fields)


def review_list(*, session: Session, user: User | None) -> ReviewList:
    """Return every review, newest first, and the bases of the newest model a new one can draw from."""
    reviews = session.scalars(select(Review).order_by(Review.id.desc())).all()
    newest = session.execute(ready_bases().limit(1)).first()
    bases = [] if newest is None else [b.name for b in model_bases(session, newest[1])]
    return ReviewList(reviews=[summary(session, r, user) for r in reviews], bases=bases)


def resolve_bases(session: Session, names: list[str], model: str | None) -> list[Basis]:
    """Return the named ready bases of one model (the given one, else the newest having the first)."""
    if any("\x00" in n for n in [*names, model or ""]):
        raise NotFound("names cannot contain NUL characters")
    found: dict[str, Basis] = {}
    for basis, _ in session.execute(ready_bases(model=model).where(Basis.name.in_(names))):
        found.setdefault(basis.name, basis)
    missing = [n for n in names if n not in found]
    if missing:
        raise NotFound(f"no ready basis named {', '.join(map(repr, missing))}")
    return [found[n] for n in names]


def mine(row: ReviewScore | None) -> MyScore | None:
    if row is None:
        return None
    return MyScore(hypothesis=row.hypothesis, **scores_of(row), total=row.total, interval_scores=row.interval_scores,
                   skipped=row.skipped)


def review_item(*, session: Session, review_id: int, position: int, user: User) -> ReviewItem:
    """Return item `position` as the rater sees it: its unit's blind evidence (app/read/queries/review_items.py), with
    nothing that names the unit or can be matched against the open unit pages."""
    review = get_review(session, review_id)
    item = get_item(session, review, position)
    basis = session.get(Basis, item.basis_id)
    if item.unit_index >= basis.n_units:  # the basis was re-ingested smaller: say so without naming it
        raise NotFound(f"item {position} is no longer in the database (its basis was re-ingested)")
    evidence = blind_evidence(session, BasisRecord.of(basis), item.unit_index)
    p = store.progress(session, review, user)
    row = session.scalar(select(ReviewScore).where(ReviewScore.review_unit_id == item.id,
                                                   ReviewScore.rater_id == user.id))
    items = item_states(review, p)
    step = p.step(position)
    return ReviewItem(**dict(evidence), review=review.name, review_url=review_url(review),
                      review_api_url=api(review_url(review)), item=position, step=step, of=len(p.order),
                      url=item_url(review, position), api_url=api(item_url(review, position)),
                      prev=items[step - 2] if step > 1 else None, next=items[step] if step < len(items) else None,
                      items=items, n_intervals=len(evidence.intervals), mine=mine(row), state=review.state,
                      finished=p.finished, read_only=p.finished or review.state != "open")


def item_states(review: Review, p: store.Progress) -> list[ItemState]:
    """Every item in the rater's order with its state: scored, skipped or to do."""
    return [ItemState(item=position, step=step, url=item_url(review, position), api_url=api(item_url(review, position)),
                      state="scored" if position in p.scored else "skipped" if position in p.skipped else "to do")
            for step, position in enumerate(p.order, start=1)]


def my_scores(*, session: Session, review_id: int, user: User) -> list[MyItemScore]:
    """Return the rater's own answers (scores and skips) in their order."""
    review = get_review(session, review_id)
    p = store.progress(session, review, user)
    rows = dict(session.execute(select(ReviewUnit.position, ReviewScore)
                                .join(ReviewScore, ReviewScore.review_unit_id == ReviewUnit.id)
                                .where(ReviewUnit.review_id == review.id, ReviewScore.rater_id == user.id)).all())
    return [MyItemScore(item=position, step=step, url=item_url(review, position),
                        api_url=api(item_url(review, position)), score=mine(rows[position]))
            for step, position in enumerate(p.order, start=1) if position in rows]


def n_intervals(session: Session, item) -> int:
    """The number of activation intervals an item's interval scores cover (the analysis's, 11 by default)."""
    return analysis_setting(session.get(Basis, item.basis_id).config, "n_intervals")


def review_results(*, session: Session, review_id: int, user: User | None, force: bool = False) -> ReviewResults:
    """Return the results: open to a rater who has finished, and to everyone once the review is closed (`force`:
    the command line, run by whoever holds the database)."""
    review = get_review(session, review_id)
    if review.state != "closed" and not force:
        if user is None:
            raise store.Forbidden("the results open when the review is closed, or to a rater who has finished it: "
                            "sign in")
        if not store.progress(session, review, user).finished:
            raise store.Forbidden("score every item first (a skipped item still counts as unscored): the results "
                                  "stay hidden until then, so other raters' scores cannot sway yours")
    rows = store.scores(session, review)
    kinds = dict(session.execute(select(Basis.name, Basis.kind).where(Basis.name.in_(review.config["bases"]))).all())
    bases = list(review.config["bases"])
    # Items are the independent units: the medians, their intervals and the test use each item's mean over its
    # raters; the histogram counts every score.
    item_totals: dict[int, list[int]] = {}
    for item, _, s, _ in rows:
        item_totals.setdefault(item.position, []).append(s.total)
    basis_of = {item.position: name for item, name, _, _ in rows}
    item_means = {b: [sum(t) / len(t) for p, t in item_totals.items() if basis_of[p] == b] for b in bases}
    distributions = []
    for b in bases:
        median, low, high = stats.median_ci(item_means[b])
        distributions.append(Distribution(
            basis=b, kind=kinds.get(b, "sae"), n_items=len(item_means[b]),
            histogram=stats.total_histogram([s.total for _, name, s, _ in rows if name == b]),
            median=median, ci_low=low, ci_high=high))
    tests = []
    for i, a in enumerate(bases):
        for b in bases[i + 1:]:
            result = stats.mann_whitney(item_means[a], item_means[b])
            if result is not None:
                tests.append(Test(a=a, b=b, u=result["u"], p=result["p"], effect_size=result["effect_size"]))
    by_rater: dict[str, dict[int, float]] = {}
    for item, _, s, rater in rows:
        by_rater.setdefault(rater, {})[item.position] = s.total
    raters = [RaterRow(rater=r, scored=len(given), medians={
        b: _median([s.total for _, name, s, who in rows if who == r and name == b]) for b in bases})
        for r, given in sorted(by_rater.items())]
    curves = stats.interval_curves([(name, s.interval_scores) for _, name, s, _ in rows if s.interval_scores])
    param = model_param(session, review.config.get("model", ""))
    items: dict[int, RevealedItem] = {}
    for item, name in session.execute(select(ReviewUnit, Basis.name).join(Basis, Basis.id == ReviewUnit.basis_id)
                                      .where(ReviewUnit.review_id == review.id).order_by(ReviewUnit.position)):
        items[item.position] = RevealedItem(item=item.position, basis=name, index=item.unit_index,
                                            unit_url=unit_url(name, item.unit_index, param), scores=[])
    for item, _, s, rater in rows:
        items[item.position].scores.append(RevealedScore(
            rater=rater, hypothesis=s.hypothesis, total=s.total, **scores_of(s), interval_scores=s.interval_scores))
    return ReviewResults(review=summary(session, review, user), distributions=distributions, tests=tests,
                         raters=raters, agreement=stats.krippendorff_alpha(by_rater),
                         interval_curves=[IntervalCurve(basis=b, mean=curves[b]["mean"], n=curves[b]["n"])
                                          for b in bases if b in curves],
                         items=list(items.values()))


def _median(values: list[int]) -> float | None:
    return float(np.median(values)) if values else None
