"""What OpenAPI says about the JSON API's errors: each route's `responses=` lists every 4xx it can return, each
with the ErrorBody schema (the handlers in app/web/errors.py answer them all as `{"detail": message}`); reads
declare the token optional."""

from __future__ import annotations

from app.read.schemas import ErrorBody

# Any route: a Bearer token that names no user is refused, even on a read (the caller meant to be someone).
BAD_TOKEN = {401: "The API token is unknown or revoked, or none was sent to a server that sets "
                  "MONOSCOPE_REQUIRE_LOGIN"}
# Writes: no user at all; a browser's cookies without the CSRF token (asgi-csrf checks every POST that has cookies).
SIGN_IN = {401: "No valid API token or session"}
WRITE = {**SIGN_IN,
         403: "Cookies sent without a valid CSRF token (API clients: send `Authorization: Bearer <token>` instead)"}
# A JSON body: FastAPI answers 400 when the bytes cannot be decoded at all, 422 when the JSON is not the model.
BODY = {400: "The body cannot be read as JSON text (not UTF-8, UTF-16 or UTF-32)",
        422: "Bad body or parameter (the message says which)"}
BAD_PARAMETER = {422: "Bad parameter (the message says which)"}
UNKNOWN_UNIT = {404: "Unknown model, basis or unit"}
# `openapi_extra` of a route that reads the token but needs none: FastAPI lists the Bearer scheme as required
# wherever the token is read, and appends this list to it, giving OpenAPI's "optional" (`[{"HTTPBearer": []}, {}]`).
OPTIONAL_AUTH = {"security": [{}]}


def errors(*parts: dict[int, str]) -> dict[int, dict]:
    """Return FastAPI `responses=` for the statuses of `parts` ({status: description}; later parts win)."""
    merged: dict[int, str] = {}
    for part in parts:
        merged.update(part)
    return {status: {"model": ErrorBody, "description": text} for status, text in sorted(merged.items())}
