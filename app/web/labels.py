"""Labels: the label panel of every unit (htmx, in place), the label list, and their JSON twins (sign-in is
app/web/account.py).

Reads stay open (unless MONOSCOPE_REQUIRE_LOGIN); writes need a user (app/web/auth.py). A write is one short
transaction: the label row and nothing else, so concurrent writers only wait for each other.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BeforeValidator

from app.read.label_schemas import REQUEST_KEY_PATTERN, LabelHistory, LabelIn, LabelListing, LabelOut
from app.read.queries.bases import check_unit, resolve
from app.read.queries.label_history import label_history, label_listing, label_out
from app.store.db import write_transaction
from app.store.labels import add_label
from app.web.auth import CurrentUser, OptionalUser, csrf_token, read_access
from app.web.deps import ModelParam, SessionDep, UnitIndex
from app.web.error_docs import BAD_PARAMETER, BAD_TOKEN, BODY, OPTIONAL_AUTH, UNKNOWN_UNIT, WRITE, errors
from app.web.forms import LabelFields
from app.web.render import render, twin_url
from sae.errors import MonoscopeError

BasisFilter = Annotated[str | None, Query(max_length=200, description="Only labels of this basis")]
AuthorFilter = Annotated[str | None, Query(max_length=100, description="Only labels by this user")]
ModelFilter = Annotated[str | None, Query(max_length=200, description="Only labels of this model's bases (with "
                                                                      "`basis`: the model whose basis it is)")]


def _not_a_number(value):
    """Refuse a number for `since`: pydantic would read it as a Unix time, which the API does not take."""
    if isinstance(value, (str, int, float)):
        try:
            float(value)
        except ValueError:
            return value
        raise ValueError("give an ISO 8601 date and time (e.g. 2026-12-02T21:00:00Z), not a number")
    return value


SinceFilter = Annotated[datetime | None, Query(description="Only labels written at or after this time (ISO 8601; "
                                                           "UTC when no offset is given)"),
                        BeforeValidator(_not_a_number)]
SinceBox = Annotated[SinceFilter, BeforeValidator(lambda v: None if isinstance(v, str) and not v.strip() else v)]
"""`since` from the labels page's form, whose empty box means no filter (the API keeps to its schema: a 422)."""
Limit = Annotated[int, Query(ge=1, le=10_000, description="Labels per page")]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1, description="Labels to skip (oldest first)")]
WRITE_ERRORS = errors(WRITE, UNKNOWN_UNIT, BODY, {409: "The Idempotency-Key was used before for another label"},
                      {422: "Bad label or parameter (the message says what)"})
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=100, pattern=REQUEST_KEY_PATTERN,
    description="Optional: a key of your choice (1-100 visible ASCII characters) that makes a retry safe: a second "
                "write of the same label with the same key returns the first one instead of adding another.")]

pages = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)
api = APIRouter(prefix="/api/v1", tags=["labels"])


def write_label(request: Request, basis: str, index: int, model: str | None, user, label: LabelIn,
                request_key: str | None = None) -> LabelOut:
    """Append the label in one transaction (once per request key) and return it as stored."""
    with write_transaction(request.app.state.sessionmaker) as session:
        b, _, _ = resolve(session, basis, model)
        check_unit(b, index)
        return label_out(session, add_label(session, basis=b, index=index, author=user, text=label.text,
                                            note=label.note, request_key=request_key))


# --- JSON API ---------------------------------------------------------------------------------------------------


@api.get("/bases/{basis}/units/{index}/labels", openapi_extra=OPTIONAL_AUTH, response_model=LabelHistory,
         dependencies=[Depends(read_access)],
         responses=errors(BAD_TOKEN, UNKNOWN_UNIT, BAD_PARAMETER),
         summary="A unit's labels, newest (the current one) first")
def unit_labels(session: SessionDep, basis: str, index: UnitIndex, model: ModelParam = None):
    return label_history(session=session, basis=basis, index=index, model=model)


@api.post("/bases/{basis}/units/{index}/labels", response_model=LabelOut, status_code=201, responses=WRITE_ERRORS,
          summary="Label a unit (appends to its history; the newest label is current)")
def post_label(request: Request, user: CurrentUser, basis: str, index: UnitIndex, label: LabelIn,
               model: ModelParam = None, idempotency_key: IdempotencyKey = None):
    return write_label(request, basis, index, model, user, label, idempotency_key)


@api.get("/labels", openapi_extra=OPTIONAL_AUTH, response_model=LabelListing, dependencies=[Depends(read_access)],
         responses=errors(BAD_TOKEN, {404: "Unknown model or basis"}, BAD_PARAMETER),
         summary="Labels of every unit (oldest first), by basis, author and time")
def labels(session: SessionDep, basis: BasisFilter = None, author: AuthorFilter = None, since: SinceFilter = None,
           model: ModelFilter = None, limit: Limit = 1000, offset: Offset = 0):
    return label_listing(session=session, basis=basis, author=author, since=since, model=model, limit=limit,
                         offset=offset)


# --- pages ------------------------------------------------------------------------------------------------------


def _panel(request: Request, session, basis: str, index: int, model: str | None, user, *, error: str | None = None,
           draft: LabelIn | None = None, oob: bool = False, status_code: int = 200) -> HTMLResponse:
    history = label_history(session=session, basis=basis, index=index, model=model)
    form_url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    context = {"h": history, "user": user, "csrftoken": csrf_token(request), "form_url": form_url, "error": error,
               "draft_text": draft.text if draft else None, "draft_note": draft.note if draft else None, "oob": oob,
               "request_key": secrets.token_urlsafe(16)}  # a form sent twice (a retry, a double click) is one label
    return render(request, "unit_labels.html", context, block="panel", status_code=status_code,
                  api_url=twin_url(request))


@pages.get("/bases/{basis}/units/{index}/labels", dependencies=[Depends(read_access)])
def unit_labels_page(request: Request, session: SessionDep, user: OptionalUser, basis: str, index: UnitIndex,
                     model: ModelParam = None):
    return _panel(request, session, basis, index, model, user)


@pages.post("/bases/{basis}/units/{index}/labels")
def unit_labels_post(request: Request, user: CurrentUser, basis: str, index: UnitIndex, form: LabelFields,
                     model: ModelParam = None):
    """Save a label from the unit page's form: the panel again (htmx), or back to the unit page."""
    draft = LabelIn.model_construct(text=form.text, note=form.note or None)
    try:
        saved = write_label(request, basis, index, model, user, draft, form.request_key or None)
    except MonoscopeError as e:
        with request.app.state.sessionmaker() as session:
            return _panel(request, session, basis, index, model, user, error=str(e), draft=draft, status_code=422)
    if request.headers.get("HX-Request") != "true":
        return RedirectResponse(saved.unit_url, status_code=303)
    with request.app.state.sessionmaker() as session:
        return _panel(request, session, basis, index, model, user, oob=True)


@pages.get("/labels", dependencies=[Depends(read_access)])
def labels_page(request: Request, session: SessionDep, basis: BasisFilter = None, author: AuthorFilter = None,
                since: SinceBox = None, model: ModelFilter = None, limit: Limit = 1000, offset: Offset = 0):
    listing = label_listing(session=session, basis=basis or None, author=author or None, since=since,
                            model=model or None, limit=limit, offset=offset)
    return render(request, "labels.html", {"listing": listing}, api_url=twin_url(request))
