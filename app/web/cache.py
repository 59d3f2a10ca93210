"""A bounded in-process cache of rendered responses, keyed by everything they depend on.

Unit pages are read-mostly: they change only on re-ingest or when a label is added, both part of the key
(queries.unit_version), so a hit is never stale beyond the basis-resolution TTL. Bounded by bytes, not entries:
a unit page is ~50-100 kB.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


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
