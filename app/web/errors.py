"""Exception handlers: bad input gives 404/422 with one clear message (JSON under /api/, a page or an htmx
fragment elsewhere), never a 500."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from markupsafe import escape
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from app.read.queries import NotFound
from app.store.reviews import Conflict, Forbidden
from app.web.infer import Unavailable
from app.web.render import is_fragment_request, render
from sae.errors import MonoscopeError

PROBED_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")
TITLES = {401: "Sign in", 403: "Not allowed", 404: "Not found", 405: "Method not allowed", 409: "Conflict",
          413: "Too large", 415: "Unsupported form", 422: "Bad request", 503: "Unavailable"}


def validation_message(errors: list[dict]) -> str:
    """Return pydantic errors as one line: `min_density: Input should be less than or equal to 1; ...`."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def error_response(request: Request, status: int, message: str):
    """Return the error as JSON for the API, as a fragment for htmx (keeping the target's id), else as a page."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": message}, status_code=status)
    if is_fragment_request(request):
        target = request.headers.get("HX-Target", "")
        ident = f' id="{escape(target)}"' if target else ""
        return HTMLResponse(f'<div{ident}><p class="error">{escape(message)}</p></div>', status_code=status)
    return render(request, "error.html", {"status": status, "title": TITLES.get(status, "Error"), "message": message},
                  status_code=status)


def install(app: FastAPI) -> None:
    """Register the handlers on the app."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"there is no page at {request.url.path}"
        response = error_response(request, exc.status_code, message)
        response.headers.update(exc.headers or {})  # e.g. WWW-Authenticate on a 401
        if exc.status_code == 405 and (allow := allowed_methods(request)):
            response.headers["Allow"] = allow
        return response

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError):
        return error_response(request, 422, validation_message(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def model_invalid(request: Request, exc: ValidationError):
        return error_response(request, 422, validation_message(exc.errors()))

    # Our own exceptions carry their message; the class says the status (most specific class wins).
    for exc_type, status in ((NotFound, 404), (Forbidden, 403), (Conflict, 409), (Unavailable, 503),
                             (MonoscopeError, 422)):
        app.add_exception_handler(exc_type, _answer_with(status))

    @app.exception_handler(IntegrityError)
    async def write_collision(request: Request, exc: IntegrityError):
        # Two writers raced for one unique row (a review name, one rater's score of one item): nothing was stored.
        return error_response(request, 409, "another write got there first (same name or same item): nothing was "
                                            "stored; reload and try again")


def allowed_methods(request: Request) -> str | None:
    """Return the `Allow` header of the request's path: every method some route answers there (Starlette's own
    405 names only the first matching route's, so a GET-and-POST path said `Allow: GET`); None when no route
    answers the path (a mount's own 405)."""
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]
    allowed: list[str] = []
    for method in PROBED_METHODS:  # GET comes before HEAD, which app.web.middleware.HeadAsGet answers as GET
        if (method == "HEAD" and "GET" in allowed) or any(
                route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes):
            allowed.append(method)
    return ", ".join(allowed) or None


def _answer_with(status: int):
    async def handler(request: Request, exc: Exception):
        return error_response(request, status, str(exc))

    return handler
