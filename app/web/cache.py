"""The web app's in-process caches, each written once: rendered unit responses (ResponseCache, with
`cached_unit_response` for the page and its JSON twin) and computed values kept a while (Memo).

Unit pages are read-mostly: they change only on re-ingest or when a label they show is added, both part of the key
(queries.unit_version), so a hit is never stale beyond the basis-resolution TTL. Bounded by bytes, not entries:
a unit page is ~50-100 kB.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable

from fastapi import Request
from sqlalchemy.orm import Session

from app.web.deps import run_db


class ResponseCache:
    """LRU of bytes, evicting the least recently used entries beyond `max_bytes`."""

    def __init__(self, max_bytes: int = 64 << 20):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            body = self._items.get(key)
            if body is not None:
                self._items.move_to_end(key)
            return body

    def put(self, key: tuple, body: bytes) -> None:
        if len(body) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self._bytes += len(body) - (len(old) if old is not None else 0)
            self._items[key] = body
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)


async def cached_unit_response(request: Request, kind: str, *, basis: str, index: int, model: str | None,
                               render: Callable[[Session], bytes]) -> bytes:
    """Return the body of unit (basis, index) as `kind` ("page", "json"), rendered by `render(session)` once per
    (ingest, labels shown) state: the key's query and, on a miss, the render in one session (run_db)."""
    from app.web import queries

    cache = request.app.state.cache

    def lookup(session: Session) -> bytes:
        key = (kind, queries.unit_version(session=session, basis=basis, index=index, model=model), request.url.query)
        body = cache.get(key)
        if body is None:
            body = render(session)
            cache.put(key, body)
        return body

    return await run_db(request, lookup)


class Memo:
    """Values computed from the database, kept per key for `ttl_s` seconds (None: for the process's life,
    for keys that name an immutable state)."""

    def __init__(self, ttl_s: float | None = None):
        self.ttl_s = ttl_s
        self._items: dict[tuple, tuple[float, object]] = {}

    def get(self, key: tuple, compute: Callable[[], object]):
        """Return the remembered value of `key`, or compute and remember it."""
        now = time.monotonic()
        hit = self._items.get(key)
        if hit is not None and (self.ttl_s is None or now - hit[0] < self.ttl_s):
            return hit[1]
        value = compute()
        self._items[key] = (now, value)
        return value
