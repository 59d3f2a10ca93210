"""Who is asking: API tokens (`Authorization: Bearer`), browser sessions (signed cookie + a row on the server) and
CSRF protection.

Writes need a user. The API takes the token as a Bearer header; the browser signs in once with the token and gets a
signed, HTTP-only, SameSite=Lax session cookie (Starlette's SessionMiddleware, itsdangerous) that carries the key
of a server-side session (app/store/sessions.py): signing out deletes it, so a copied cookie dies with it. Every
browser write carries a CSRF token (asgi-csrf, double-submit cookie): form field `csrftoken` or header
`x-csrftoken`. A request with a Bearer header skips the CSRF check (a cross-site page cannot set that header) and
is then judged by its token alone, never by a cookie it may also carry: `bearer_header` decides both, for every
header shape (any case, any whitespace, several Authorization headers).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from asgi_csrf import asgi_csrf
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker
from starlette.middleware.sessions import SessionMiddleware

from app.store.models import AppSecret, User
from app.store.sessions import SESSION_DAYS, session_user
from app.store.users import user_for_token
from app.web.deps import run_db
from app.web.middleware import send_error
from sae.errors import MonoscopeError

SESSION_COOKIE = "monoscope_session"
CSRF_COOKIE = "monoscope_csrf"
SESSION_KEY = "sid"  # the session cookie's one field: the key of the user's row in browser_session
SIGN_IN_MESSAGE = "sign in first: send `Authorization: Bearer <token>` (from `monoscope user add NAME`), or sign in " \
                  "at /login in the browser"
bearer = HTTPBearer(auto_error=False, description="The API token `monoscope user add NAME` printed.")


def secret_key(settings, sessions: sessionmaker) -> str:
    """Return the signing secret: the settings', else the one kept in the database (made on first start)."""
    if settings.secret_key:
        return settings.secret_key
    try:
        with sessions.begin() as session:
            row = session.get(AppSecret, "session")
            if row is None:
                row = AppSecret(name="session", value=secrets.token_urlsafe(48))
                session.add(row)
            return row.value
    except IntegrityError:  # another worker made it at the same moment: use theirs
        with sessions() as session:
            return session.get(AppSecret, "session").value
    except (OperationalError, ProgrammingError):
        raise MonoscopeError("the database has no app_secret table: run `monoscope db upgrade`") from None


class CSRFMiddleware:
    """asgi-csrf as a Starlette middleware class; a failed check answers 403 with a message (JSON under /api/).

    Sign-in and sign-out are checked even without cookies (a cross-site page could otherwise sign a victim in as
    the attacker). A request so malformed that the check itself fails (a non-ASCII token, an undecodable form)
    is refused with the same 403; errors of the app behind it are not touched.
    """

    def __init__(self, app, *, signing_secret: str, secure: bool = False):
        self.inner = app
        self.app = asgi_csrf(self._entered, signing_secret=signing_secret, cookie_name=CSRF_COOKIE,
                             always_protect={"/login", "/logout"}, send_csrf_failed=_csrf_failed,
                             cookie_secure=secure, skip_if_scope=_is_bearer_request)

    async def _entered(self, scope, receive, send):
        scope["monoscope.csrf_passed"][0] = True
        await self.inner(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        if _is_multipart(scope) and not scope["path"].startswith("/api/"):
            # asgi-csrf looks for the token in multipart bodies with rules of its own that python-multipart does not
            # share (every such form failed its check with a 403 that named no reason), and no page takes a file.
            return await send_error(scope, send, 415, "forms here are sent as application/x-www-form-urlencoded "
                                                      "(this server takes no file uploads)")
        passed = [False]
        scope = {**scope, "monoscope.csrf_passed": passed}
        try:
            await self.app(scope, receive, send)
        except (TypeError, ValueError, IndexError, AssertionError, UnicodeError):
            if passed[0]:
                raise
            await _csrf_failed(scope, send, None)


async def _csrf_failed(scope, send, message_id) -> None:
    await send_error(scope, send, 403, "the CSRF token is missing or wrong: reload the page and try again (API "
                                       "clients: send `Authorization: Bearer <token>` instead of cookies)")


def _is_multipart(scope) -> bool:
    return scope["method"] not in ("GET", "HEAD", "OPTIONS", "TRACE") and any(
        name == b"content-type" and value.split(b";")[0].strip().lower() == b"multipart/form-data"
        for name, value in scope.get("headers") or ())


def bearer_header(headers) -> str | None:
    """Return the Authorization value of a Bearer request, None when there is none. `headers` are the raw ASGI
    (name, value) pairs. Bearer means any Authorization header whose first word is `bearer` in any case, before
    any whitespace (Unicode's too: "Bearer\\xa0..."), or glued to the token: all of them skip the CSRF check, and
    each is then judged by its token alone. Several Authorization headers are one Bearer request if any of them is
    (a malformed one: 401), so the CSRF check and the user lookup cannot read different ones."""
    values = [value.decode("latin-1") for name, value in headers if name.lower() == b"authorization"]
    if not any(value.strip()[:6].lower() == "bearer" for value in values):
        return None
    return values[0] if len(values) == 1 else ""


def _is_bearer_request(scope) -> bool:
    return bearer_header(scope.get("headers") or ()) is not None


def _token_of(header: str) -> str | None:
    """The token of a well-formed `Bearer <token>` header, else None."""
    parts = header.split()
    return parts[1] if len(parts) == 2 and parts[0].lower() == "bearer" and header.isascii() else None


def install(app, settings) -> None:
    """Add the session and CSRF middlewares, signed with the app's secret."""
    key = secret_key(settings, app.state.sessionmaker)
    app.state.require_login = bool(settings.require_login)
    app.add_middleware(CSRFMiddleware, signing_secret=key, secure=settings.secure_cookies)
    app.add_middleware(SessionMiddleware, secret_key=key, session_cookie=SESSION_COOKIE, same_site="lax",
                       max_age=SESSION_DAYS * 86400, https_only=settings.secure_cookies)


def request_user(request: Request, session: Session) -> User | None:
    """Return the user behind the request's Bearer token or session cookie, None when anonymous; a Bearer request
    with a bad or malformed token is a 401 (not anonymous: the caller meant to be someone), never its cookie's."""
    header = bearer_header(request.scope["headers"])
    if header is not None:  # other schemes (a proxy's Basic) are ignored, and the cookie decides
        token = _token_of(header)
        user = user_for_token(session, token) if token else None
        if user is None:
            message = ("the API token is unknown or revoked" if token else
                       "malformed Authorization header: send `Authorization: Bearer <token>`")
            raise HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})
        return user
    key = request.session.get(SESSION_KEY)
    return session_user(session, key) if isinstance(key, str) else None


async def optional_user(request: Request,
                        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> User | None:
    """The request's user, looked up in a session of its own that is closed at once: a dependency's session
    would hold a pooled connection for the whole request, and writes open their own. Async, so an anonymous
    reader (no token, no signed-in cookie: most requests) costs no database query and no thread-pool hop.
    (`credentials` declares the Bearer scheme in OpenAPI; `request_user` reads the header itself.)"""
    if bearer_header(request.scope["headers"]) is None and not isinstance(request.session.get(SESSION_KEY), str):
        return None
    return await run_db(request, lambda session: request_user(request, session))


def _sign_in_first() -> HTTPException:
    return HTTPException(401, SIGN_IN_MESSAGE, headers={"WWW-Authenticate": "Bearer"})


async def required_user(user: Annotated[User | None, Depends(optional_user)]) -> User:
    if user is None:
        raise _sign_in_first()
    return user


async def read_access(request: Request, user: Annotated[User | None, Depends(optional_user)]) -> None:
    """Let reads through unless MONOSCOPE_REQUIRE_LOGIN is set and nobody is signed in."""
    if user is None and getattr(request.app.state, "require_login", False):
        raise _sign_in_first()


OptionalUser = Annotated[User | None, Depends(optional_user)]
CurrentUser = Annotated[User, Depends(required_user)]


def csrf_token(request: Request) -> str:
    """Return the CSRF token to put in a form (and make sure its cookie is set)."""
    return request.scope["csrftoken"]()
