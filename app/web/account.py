"""Signing in and out: the /login page and form, sign-out (this browser, or everywhere), and the API's `me`.

A browser signs in with its API token and gets a session on the server (app/store/sessions.py) whose key the signed
cookie carries; signing out deletes that session, so the cookie (and any copy of it) stops working at once.
"Sign out everywhere" (the form's second button, or `DELETE /api/v1/me/sessions`) ends every browser session of
the user; the API token itself stays valid until `monoscope user revoke`.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.read.label_schemas import Me, SessionsEnded
from app.store.db import write_transaction
from app.store.sessions import end_all_sessions, end_session, start_session
from app.store.users import user_for_token
from app.web.auth import SESSION_KEY, CurrentUser, OptionalUser, csrf_token
from app.web.error_docs import WRITE, errors
from app.web.forms import LoginFields, LogoutFields
from app.web.render import render

pages = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)
api = APIRouter(prefix="/api/v1", tags=["account"])


@api.get("/me", response_model=Me, responses=errors({401: "Not signed in (no valid API token or session)"}),
         summary="The signed-in user (checks a token)")
def me(user: CurrentUser):
    return Me(name=user.name)


@api.delete("/me/sessions", response_model=SessionsEnded, responses=errors(WRITE),
            summary="Sign out everywhere: end every browser session of the user (the API token stays valid)")
def end_my_sessions(request: Request, user: CurrentUser):
    with write_transaction(request.app.state.sessionmaker) as session:
        ended = end_all_sessions(session, user.id)
    request.session.clear()
    return SessionsEnded(ended=ended)


def _safe_next(url: str) -> str:
    """Return `url` if it is a path on this site, else "/" (no open redirect through ?next=)."""
    parts = urlsplit(url or "/")
    return url if url.startswith("/") and not url.startswith("//") and not parts.scheme and not parts.netloc else "/"


@pages.get("/login")
def login_page(request: Request, user: OptionalUser, next: Annotated[str, Query(max_length=2000)] = "/"):
    return render(request, "login.html", {"user": user, "csrftoken": csrf_token(request),
                                          "next_url": _safe_next(next), "error": None})


@pages.post("/login")
def login(request: Request, form: LoginFields):
    with write_transaction(request.app.state.sessionmaker) as session:
        user = user_for_token(session, form.token.strip())
        key = start_session(session, user) if user is not None else None
    if key is None:
        return render(request, "login.html", {"user": None, "csrftoken": csrf_token(request),
                                              "next_url": _safe_next(form.next),
                                              "error": "That token is unknown or revoked."}, status_code=401)
    _end_this_session(request)  # signing in again replaces the browser's earlier session
    request.session[SESSION_KEY] = key
    return RedirectResponse(_safe_next(form.next), status_code=303)


@pages.post("/logout")
def logout(request: Request, user: OptionalUser, form: LogoutFields):
    if form.everywhere and user is not None:
        with write_transaction(request.app.state.sessionmaker) as session:
            end_all_sessions(session, user.id)
    _end_this_session(request)
    return RedirectResponse("/login", status_code=303)


def _end_this_session(request: Request) -> None:
    key = request.session.get(SESSION_KEY)
    if isinstance(key, str):
        with write_transaction(request.app.state.sessionmaker) as session:
            end_session(session, key)
    request.session.clear()
