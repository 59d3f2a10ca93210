"""Blind reviews in the browser and the API: create, rate item by item (keyboard first), skip, close, results.

An item's URL and JSON carry only the review's own item number; the results reveal every item's unit. Writes
need a user and are each one short transaction (app/store/reviews.py holds the rules).
"""

from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from app.present import plots
from app.read.queries import reviews as queries
from app.read.review_schemas import (
    MyItemScore,
    MyScore,
    ReviewIn,
    ReviewItem,
    ReviewList,
    ReviewResults,
    ReviewSummary,
    ScoreIn,
)
from app.store import reviews as store
from app.store import rubric
from app.store.db import write_transaction
from app.store.export import write_csv
from app.web.auth import CurrentUser, OptionalUser, csrf_token, read_access
from app.web.deps import SessionDep
from app.web.error_docs import BAD_PARAMETER, BAD_TOKEN, BODY, OPTIONAL_AUTH, SIGN_IN, WRITE, errors
from app.web.forms import ScoreFields, form_fields
from app.web.render import render, twin_url

ReviewId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Position = Annotated[int, Path(ge=1, le=2**31 - 1, description="The review's own item number")]
UNKNOWN = {404: "Unknown review or item"}
CSV_FIELDS = ["item", "basis", "index", "rater", "hypothesis", "total", *rubric.NAMES, "interval_scores"]  # results.csv
NOT_APPLICABLE = "na"  # the item form's answer for a component that does not apply (static/monoscope.js sends it too)
CLOSED = {409: "The review is closed, your scores are final (you finished it), or a write of yours got there first"}

pages = APIRouter(include_in_schema=False, default_response_class=HTMLResponse, dependencies=[Depends(read_access)])
api = APIRouter(prefix="/api/v1", tags=["reviews"], dependencies=[Depends(read_access)])


# --- writes shared by the pages and the API --------------------------------------------------------------------


def create(request: Request, user, body: ReviewIn) -> ReviewSummary:
    with write_transaction(request.app.state.sessionmaker) as session:
        bases = queries.resolve_bases(session, list(body.bases), body.model)
        # The seed stays the server's: whoever chose it could rebuild which unit each item is.
        review = store.create_review(session, name=body.name, bases=bases, per_basis=body.per_basis, creator=user)
        return queries.summary(session, review, user)


def score(request: Request, user, review_id: int, position: int, body: ScoreIn | None) -> MyScore:
    """Store the rubric (or a skip when body is None) and return the rater's answer as stored."""
    with write_transaction(request.app.state.sessionmaker) as session:
        review = queries.get_review(session, review_id, lock=True)
        item = queries.get_item(session, review, position)
        if body is None:
            return queries.mine(store.skip_item(session, review, item, user))
        return queries.mine(store.save_score(session, review, item, user, store.Answer.from_fields(body.model_dump()),
                                             queries.n_intervals(session, item)))


def close(request: Request, user, review_id: int) -> ReviewSummary:
    with write_transaction(request.app.state.sessionmaker) as session:
        review = queries.get_review(session, review_id, lock=True)
        store.close_review(session, review, user)
        return queries.summary(session, review, user)


# --- JSON API ---------------------------------------------------------------------------------------------------


@api.get("/reviews", openapi_extra=OPTIONAL_AUTH, response_model=ReviewList, responses=errors(BAD_TOKEN),
         summary="Every review (with your progress when signed in)")
def list_reviews(session: SessionDep, user: OptionalUser):
    return queries.review_list(session=session, user=user)


@api.post("/reviews", response_model=ReviewSummary, status_code=201, summary="Create a blind review",
          responses=errors(WRITE, {404: "Unknown model or basis"}, BODY,
                           {409: "A review of that name exists, a basis has fewer live units than asked, or the "
                                 "bases are of different models (the message says which)"},
                           {422: "Bad review (the message says what)"}))
def post_review(request: Request, user: CurrentUser, body: ReviewIn):
    return create(request, user, body)


@api.get("/reviews/{review_id}", openapi_extra=OPTIONAL_AUTH, response_model=ReviewSummary,
         responses=errors(BAD_TOKEN, UNKNOWN, BAD_PARAMETER), summary="One review and your progress in it")
def get_review(session: SessionDep, user: OptionalUser, review_id: ReviewId):
    return queries.summary(session, queries.get_review(session, review_id), user)


@api.get("/reviews/{review_id}/items/{position}", response_model=ReviewItem,
         responses=errors(SIGN_IN, UNKNOWN, BAD_PARAMETER),
         summary="One item as a rater sees it: no basis, no unit index")
def get_item(session: SessionDep, user: CurrentUser, review_id: ReviewId, position: Position):
    return queries.review_item(session=session, review_id=review_id, position=position, user=user)


@api.get("/reviews/{review_id}/scores/mine", response_model=list[MyItemScore],
         responses=errors(SIGN_IN, {404: "Unknown review"}, BAD_PARAMETER),
         summary="Your own answers in this review (scores and skips), in your order")
def get_my_scores(session: SessionDep, user: CurrentUser, review_id: ReviewId):
    return queries.my_scores(session=session, review_id=review_id, user=user)


@api.post("/reviews/{review_id}/items/{position}/score", response_model=MyScore,
          responses=errors(WRITE, UNKNOWN, CLOSED, BODY, {422: "Bad score (the message says which part)"}),
          summary="Score an item on the paper's rubric (replaces your earlier score)")
def post_score(request: Request, user: CurrentUser, review_id: ReviewId, position: Position, body: ScoreIn):
    return score(request, user, review_id, position, body)


@api.post("/reviews/{review_id}/items/{position}/skip", response_model=MyScore,
          responses=errors(WRITE, UNKNOWN, CLOSED, BAD_PARAMETER),
          summary="Skip an item for now (it comes back after the unseen ones)")
def post_skip(request: Request, user: CurrentUser, review_id: ReviewId, position: Position):
    return score(request, user, review_id, position, None)


@api.post("/reviews/{review_id}/close", response_model=ReviewSummary,
          responses=errors(WRITE, UNKNOWN, {403: "Only the review's creator can close it (or, from a browser, the CSRF token is missing)"}, BAD_PARAMETER),
          summary="Close a review (its creator): scores freeze, results open to all")
def post_close(request: Request, user: CurrentUser, review_id: ReviewId):
    return close(request, user, review_id)


@api.get("/reviews/{review_id}/results", openapi_extra=OPTIONAL_AUTH, response_model=ReviewResults,
         responses=errors(BAD_TOKEN, {403: "The results open when the review is closed, or to a rater who has "
                                           "finished it"}, UNKNOWN, BAD_PARAMETER),
         summary="Totals by basis, tests, agreement, and every item revealed")
def get_results(session: SessionDep, user: OptionalUser, review_id: ReviewId):
    return queries.review_results(session=session, review_id=review_id, user=user)


# --- pages ------------------------------------------------------------------------------------------------------


def _next(request: Request, user, review_id: int) -> RedirectResponse:
    with request.app.state.sessionmaker() as session:
        summary = queries.summary(session, queries.get_review(session, review_id), user)
    return RedirectResponse(summary.next_url or summary.url, status_code=303)


@pages.get("/reviews")
def reviews_page(request: Request, session: SessionDep, user: OptionalUser):
    listing = queries.review_list(session=session, user=user)
    return render(request, "reviews.html", {"listing": listing, "user": user, "csrftoken": csrf_token(request),
                                            "rubric": rubric}, api_url=twin_url(request))


@pages.post("/reviews")
async def create_page(request: Request, user: CurrentUser, body: Annotated[ReviewIn, form_fields(ReviewIn)]):
    summary = await run_in_threadpool(create, request, user, body)  # database work stays off the event loop
    return RedirectResponse(summary.url, status_code=303)


@pages.get("/reviews/{review_id}")
def review_page(request: Request, session: SessionDep, user: OptionalUser, review_id: ReviewId):
    review = queries.get_review(session, review_id)
    context = {"r": queries.summary(session, review, user), "user": user, "csrftoken": csrf_token(request),
               "is_creator": user is not None and review.created_by == user.id}
    return render(request, "review.html", context, api_url=twin_url(request))


@pages.get("/reviews/{review_id}/next")
def next_page(request: Request, user: CurrentUser, review_id: ReviewId):
    return _next(request, user, review_id)


def item_context(item: ReviewItem, csrftoken: str, action: str) -> dict:
    """What templates/review_item.html renders: the item, and the form of the rubric that posts to `action`."""
    return {"it": item, "csrftoken": csrftoken, "rubric": rubric, "not_applicable": NOT_APPLICABLE, "action": action}


@pages.get("/reviews/{review_id}/items/{position}")
def item_page(request: Request, session: SessionDep, user: CurrentUser, review_id: ReviewId, position: Position):
    item = queries.review_item(session=session, review_id=review_id, position=position, user=user)
    context = item_context(item, csrf_token(request), f"/reviews/{review_id}/items/{position}")
    return render(request, "review_item.html", context, api_url=twin_url(request))


def form_scores(form) -> dict:
    """Each rubric component's radio value from the item's form (strings; ScoreIn checks them): a component that may
    not apply is None when unanswered or answered n/a, any other is None only when missing."""
    values = {}
    for c in rubric.COMPONENTS:
        value = form.get(c.name)
        if c.not_applicable_when is not None and (value or NOT_APPLICABLE) == NOT_APPLICABLE:
            value = None
        values[c.name] = value
    return values


@pages.post("/reviews/{review_id}/items/{position}")
async def score_page(request: Request, user: CurrentUser, review_id: ReviewId, position: Position,
                     form: ScoreFields):
    """Save the rubric from the item's form (radio values as strings; pydantic checks them) and open the next item."""
    fields = {name: form.value(name) for name in [*rubric.NAMES, *(f"interval_{i}" for i in range(form.n_intervals))]}
    intervals = [fields[f"interval_{i}"] or None for i in range(form.n_intervals)]
    body = ScoreIn(hypothesis=form.hypothesis, **form_scores(fields),
                   interval_scores=intervals if any(v is not None for v in intervals) else None)

    def save_and_next():
        score(request, user, review_id, position, body)
        return _next(request, user, review_id)

    return await run_in_threadpool(save_and_next)


@pages.post("/reviews/{review_id}/items/{position}/skip")
def skip_page(request: Request, user: CurrentUser, review_id: ReviewId, position: Position):
    score(request, user, review_id, position, None)
    return _next(request, user, review_id)


@pages.post("/reviews/{review_id}/close")
def close_page(request: Request, user: CurrentUser, review_id: ReviewId):
    summary = close(request, user, review_id)
    return RedirectResponse(summary.url, status_code=303)


@pages.get("/reviews/{review_id}/results")
def results_page(request: Request, session: SessionDep, user: OptionalUser, review_id: ReviewId):
    results = queries.review_results(session=session, review_id=review_id, user=user)
    context = {"res": results, "plots": True, "rubric": rubric,
               "totals_plot": plots.totals_plot(results.distributions, rubric.MAX_TOTAL),
               "curves_plot": plots.interval_curves_plot(results.interval_curves, rubric.MAX_INTERVAL_SCORE)
               if results.interval_curves else None}
    return render(request, "review_results.html", context, api_url=twin_url(request))


@pages.get("/reviews/{review_id}/results.csv")
def results_csv(session: SessionDep, user: OptionalUser, review_id: ReviewId):
    """Every score with its item revealed, one row per (item, rater), for pandas and spreadsheets."""
    results = queries.review_results(session=session, review_id=review_id, user=user)
    out = io.StringIO()
    write_csv(out, CSV_FIELDS, ({"item": item.item, "basis": item.basis, "index": item.index,
                                 **s.model_dump(exclude={"interval_scores"}), "interval_scores": " ".join(
                                     "" if v is None else str(v) for v in s.interval_scores or [])}
                                for item in results.items for s in item.scores))
    return Response(out.getvalue(), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="review-{review_id}.csv"'})
