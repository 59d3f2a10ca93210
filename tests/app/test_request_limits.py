"""What the server answers before a route runs, against a real `monoscope serve`: request bodies are bounded (413 at
once, unread, when Content-Length says too much; as soon as a streamed body passes the limit otherwise), every
answer carries the security headers, HEAD mirrors GET, and multipart forms get a clear 415."""

from __future__ import annotations

import json
import select
import socket
import time
from urllib.parse import urlsplit

import httpx
from webapp_fixtures import SAE_NAME

LIMIT = 1 << 20  # MONOSCOPE_MAX_BODY_BYTES's default
HUNDRED_MB = 100 * 1000 * 1000


def raw_exchange(site, head: str, chunks=(), timeout: float = 10) -> tuple[int, dict[str, str], bytes, float]:
    """Send `head` (request line and headers) and then `chunks` while reading: return the status, headers and body
    of the answer and the seconds until it began. Stops sending once the server has answered."""
    url = urlsplit(site.url)
    received = b""
    started = time.perf_counter()
    first = None
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as s:
        s.sendall(head.encode("latin-1"))
        pending = list(chunks)
        deadline = started + timeout
        while time.perf_counter() < deadline:
            readable, writable, _ = select.select([s], [s] if pending else [], [], 0.05)
            if readable:
                part = s.recv(1 << 16)
                first = first or time.perf_counter()
                if not part:
                    break
                received += part
                pending = []  # answered: send no more
                if b"\r\n\r\n" in received and _complete(received):
                    break
            elif writable and pending:
                try:
                    s.sendall(pending.pop(0))
                except (BrokenPipeError, ConnectionResetError):
                    pending = []
    assert received, "no answer"
    head_bytes, _, body = received.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body, first - started


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.decode("latin-1").split("\r\n"):
        if line.lower().startswith("content-length:"):
            return len(body) >= int(line.split(":")[1])
    return False


def _chunked(total: int, size: int = 1 << 16):
    """A chunked-encoded body of `total` bytes of `x` (no Content-Length), in chunks of `size`."""
    for _ in range(total // size):
        yield b"%x\r\n" % size + b"x" * size + b"\r\n"


def test_a_body_declared_too_large_is_refused_at_once_unread(site):
    for path, kind in (("/login", "application/x-www-form-urlencoded"),
                       (f"/api/v1/bases/{SAE_NAME}/units/0/labels", "application/json")):
        head = (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {HUNDRED_MB}\r\n\r\n")
        status, headers, body, seconds = raw_exchange(site, head)  # not one byte of the body is sent
        assert status == 413 and seconds < 2, (path, status, seconds)
        assert headers["connection"] == "close" and "content-security-policy" in headers
        message = json.loads(body)["detail"] if path.startswith("/api/") else body.decode()
        assert "1,048,576 bytes" in message and "MONOSCOPE_MAX_BODY_BYTES" in message, message


def test_a_streamed_body_is_cut_off_at_the_limit(site):
    # a form read by the CSRF check (sign-in is always checked), JSON read by the route
    for path, kind in (("/login", "application/x-www-form-urlencoded"),
                       (f"/api/v1/bases/{SAE_NAME}/units/0/labels", "application/json")):
        head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {kind}\r\nTransfer-Encoding: chunked\r\n\r\n"
        status, headers, body, _ = raw_exchange(site, head, _chunked(4 * LIMIT))
        assert status == 413, (path, status, body[:300])
        assert headers["connection"] == "close"
    assert site.get("/api/v1/overview").status_code == 200  # and the server is fine


def test_a_body_under_the_limit_is_read_as_usual(site):
    big = {"text": "x" * (LIMIT // 2)}  # half the limit: read, then refused by the label's own rule
    r = site.post(f"/api/v1/bases/{SAE_NAME}/units/0/labels", json=big)
    assert r.status_code in (401, 422), r.text  # not 413


def test_every_answer_carries_the_security_headers(site):
    paths = ["/", f"/bases/{SAE_NAME}", "/api/v1/overview", "/static/monoscope.css", "/vendor/htmx.min.js", "/docs",
             "/openapi.json", "/no-such-page", "/api/v1/no-such-thing"]
    for path in paths:
        r = site.get(path)
        policy = r.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy, path
        assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0], path
        assert r.headers["x-frame-options"] == "DENY", path
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["referrer-policy"] == "same-origin", path


def test_head_answers_as_get_without_the_body(site):
    for path in ["/", f"/bases/{SAE_NAME}", f"/bases/{SAE_NAME}/units/0", "/api/v1/overview", "/labels", "/docs",
                 "/login", "/static/monoscope.css", "/no-such-page"]:
        get, head = site.get(path), httpx.head(site.url + path, timeout=30)
        assert head.status_code == get.status_code, (path, head.status_code)
        assert head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path
        if "content-length" in get.headers:
            assert head.headers["content-length"] == get.headers["content-length"], path
    wrong = site.post("/api/v1/overview")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, HEAD"


def test_multipart_forms_get_a_clear_415(writable_site):
    ws = writable_site
    with ws.site.client() as browser:
        token = browser.get("/login").text.split('name="csrftoken" value="')[1].split('"')[0]
        # The token first, as asgi-csrf wants it: still refused (it never matched), now with a reason.
        r = browser.post("/login", data={"csrftoken": token, "token": ws.tokens["alice"]},
                         files={"note": ("note.txt", b"hello")})
        assert r.status_code == 415 and "x-www-form-urlencoded" in r.text
    # A file where a review name is expected (a Bearer page write skips the CSRF check): refused, nothing stored.
    r = ws.site.post("/reviews", data={"per_basis": "1", "bases": "neurons"},
                     files={"name": ("evil.txt", b"a file")}, headers=ws.auth("alice"))
    assert r.status_code == 415, r.text
    names = [v["name"] for v in ws.site.get("/api/v1/reviews").json()["reviews"]]
    assert not any("UploadFile" in n or "evil" in n for n in names), names
