"""Pure ASGI middlewares around the whole app: security headers on every answer, a bound on request bodies, and HEAD
answered as GET without the body.

Pure ASGI (not Starlette's BaseHTTPMiddleware) so that nothing is buffered: the body limit sees each chunk as the
server receives it and can answer before the app reads a byte.
"""

from __future__ import annotations

import json

from markupsafe import escape
from starlette.exceptions import HTTPException

# Everything the pages load is the app's own (htmx, plotly.js and Swagger UI are served locally); no inline script,
# no eval. Inline style *attributes* stay allowed (style-src-attr): the token windows set their colour through CSS
# variables (`--a`, `--e`) and plotly styles its SVG; they cannot run code. Style elements are the app's files or
# plotly.js's two, by hash: the empty <style> it then fills through the CSSOM (which CSP allows), and the maplibre
# stylesheet it adds when it loads (plotly.js 3 of plotly 7.1; another version may add another one: the Chromium test
# tests/app/test_csp.py then names its hash, and blocking it only loses the styles of map traces, which we do not use).
PLOTLY_STYLES = ("'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='",  # "" (empty)
                 "'sha256-ji27qzEtxXZW+7dun6UwjHXJ18e6WAin1VvNtkzIE/o='")  # maplibre-gl.css
CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    f"style-src-elem 'self' {' '.join(PLOTLY_STYLES)}",
    "style-src-attr 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """Add SECURITY_HEADERS to every HTTP answer (pages, the API, static files, errors) that does not set its own."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooLarge(HTTPException):
    """A streamed body went past the limit: raised from `receive` into whatever was reading it. An HTTPException,
    so that a route reading its body answers it through the app's error handlers (FastAPI turns any other error
    of a body read into a 400); a middleware reading the body (the CSRF check) lets it through to BodyLimit."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"the request body is larger than this server takes ({max_bytes:,} bytes; "
                              "MONOSCOPE_MAX_BODY_BYTES)", headers={"Connection": "close"})


class BodyLimit:
    """Refuse a request body larger than `max_bytes` with 413: at once, unread, when its Content-Length says so;
    otherwise as soon as the bytes received pass the limit (a chunked body, or a Content-Length that lied).

    The 413 says `Connection: close`, so the server drops the rest of the body instead of reading it."""

    def __init__(self, app, *, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers") or ():
            digits = value.strip()
            if name == b"content-length" and digits.isdigit() and (len(digits) > 18 or int(digits) > self.max_bytes):
                return await self._refuse(scope, send, BodyTooLarge(self.max_bytes))
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as e:
            if started:  # the app had answered already and read on: nothing more to say
                return
            await self._refuse(scope, send, e)

    @staticmethod
    async def _refuse(scope, send, error: BodyTooLarge):
        await send_error(scope, send, 413, error.detail, [(b"connection", b"close")])


async def send_error(scope, send, status: int, message: str, headers=()) -> None:
    """Answer `status` with `message`: `{"detail": message}` under /api/, else a short escaped HTML page."""
    if scope["path"].startswith("/api/"):
        body, kind = json.dumps({"detail": message}).encode(), b"application/json"
    else:
        body, kind = f'<p class="error">{escape(message)}</p>'.encode(), b"text/html; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class HeadAsGet:
    """Answer HEAD as the same GET would, without its body (FastAPI's routes list GET only, so HEAD got 405)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def send_headers_only(message):
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the GET's body, dropped
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_headers_only)
