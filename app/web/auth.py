"""Who is asking: API tokens (`Authorization: Bearer`), browser sessions (signed cookie) and CSRF protection.

Writes need a user. The API takes the token as a Bearer header; the browser signs in once with the token and gets a
signed, HTTP-only, SameSite=Lax session cookie (Starlette's SessionMiddleware, itsdangerous). Every browser write
carries a CSRF token (asgi-csrf, double-submit cookie): form field `csrftoken` or header `x-csrftoken`. A request
with a Bearer header skips the CSRF check (a cross-site page cannot set that header) and is then judged by its
token alone, never by a cookie it may also carry.
"""

from __future__ import annotations

import json
import secrets
from typing import Annotated

from asgi_csrf import asgi_csrf
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from markupsafe import escape
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker
from starlette.middleware.sessions import SessionMiddleware

from app.store.models import AppSecret, User
from app.store.users import active_user, user_for_token
from app.web.deps import run_db
from sae.errors import MonoscopeError

SESSION_COOKIE = "monoscope_session"
CSRF_COOKIE = "monoscope_csrf"
SESSION_DAYS = 14
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
                             cookie_secure=secure)

    async def _entered(self, scope, receive, send):
        scope["monoscope.csrf_passed"][0] = True
        await self.inner(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        passed = [False]
        scope = {**scope, "monoscope.csrf_passed": passed}
        try:
            await self.app(scope, receive, send)
        except (TypeError, ValueError, IndexError, AssertionError, UnicodeError):
            if passed[0]:
                raise
            await _csrf_failed(scope, send, None)


async def _csrf_failed(scope, send, message_id) -> None:
    message = ("the CSRF token is missing or wrong: reload the page and try again (API clients: send "
               "`Authorization: Bearer <token>` instead of cookies)")
    if scope["path"].startswith("/api/"):
        body, kind = json.dumps({"detail": message}).encode(), b"application/json"
    else:
        body, kind = f'<p class="error">{escape(message)}</p>'.encode(), b"text/html; charset=utf-8"
    await send({"type": "http.response.start", "status": 403, "headers": [(b"content-type", kind)]})
    await send({"type": "http.response.body", "body": body})


def install(app, settings) -> None:
    """Add the session and CSRF middlewares, signed with the app's secret."""
    key = secret_key(settings, app.state.sessionmaker)
    app.state.require_login = bool(settings.require_login)
    app.add_middleware(CSRFMiddleware, signing_secret=key, secure=settings.secure_cookies)
    app.add_middleware(SessionMiddleware, secret_key=key, session_cookie=SESSION_COOKIE, same_site="lax",
                       max_age=SESSION_DAYS * 86400, https_only=settings.secure_cookies)


def request_user(request: Request, session: Session,
                 credentials: HTTPAuthorizationCredentials | None = None) -> User | None:
    """Return the user behind the request's Bearer token or session cookie, None when anonymous; a bad token is a
    401 (not anonymous: the caller meant to be someone)."""
    if credentials is not None and credentials.scheme.lower() == "bearer":  # other schemes (a proxy's) are ignored
        user = user_for_token(session, credentials.credentials)
        if user is None:
            raise HTTPException(401, "the API token is unknown or revoked", headers={"WWW-Authenticate": "Bearer"})
        return user
    user_id = request.session.get("user_id")
    return active_user(session, user_id) if isinstance(user_id, int) else None


async def optional_user(request: Request,
                        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> User | None:
    """The request's user, looked up in a session of its own that is closed at once: a dependency's session
    would hold a pooled connection for the whole request, and writes open their own. Async, so an anonymous
    reader (no token, no signed-in cookie: most requests) costs no database query and no thread-pool hop."""
    if credentials is None and not isinstance(request.session.get("user_id"), int):
        return None
    return await run_db(request, lambda session: request_user(request, session, credentials))


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
