"""The read model's one in-process cache: values computed from the database, kept per key while they are current.

Every cache of the read path is a `Cache`: rendered unit responses (bounded by bytes), resolved bases (kept for a few
seconds), vocabularies and per-basis unit arrays (kept while their basis's ingest is the same). What is cached is plain
data (records, tuples, arrays, bytes), never ORM rows: a row outlives its session and a rollback there would expire it
for everyone.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Hashable, TypeVar

T = TypeVar("T")


class Cache:
    """LRU map of key -> value. An entry is current while its `state` equals the caller's (e.g. a basis's ingest) and,
    with `ttl_s`, for that many seconds; beyond `max_size` (the sum of `size(value)`, default 1 an entry) the least
    recently used go. A miss computes under its key's lock (one of LOCKS, by hash), so concurrent requests after a
    change compute once, and keys that never get a value (a bad name, say) leave nothing behind."""

    LOCKS = 64

    def __init__(self, *, max_size: int = 1 << 16, ttl_s: float | None = None,
                 size: Callable[[object], int] = lambda value: 1):
        self.max_size, self.ttl_s, self._size = max_size, ttl_s, size
        self._items: OrderedDict[Hashable, tuple[Hashable, float, object, int]] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()
        self._key_locks = [threading.RLock() for _ in range(self.LOCKS)]  # re-entrant: a compute may nest

    def _current(self, key: Hashable, state: Hashable):
        """Return (True, value) for a current entry of `key` (marking it recently used), else (False, None)."""
        with self._lock:
            hit = self._items.get(key)
            if hit is None or hit[0] != state or (self.ttl_s is not None and time.monotonic() - hit[1] >= self.ttl_s):
                return False, None
            self._items.move_to_end(key)
            return True, hit[2]

    def get(self, key: Hashable, compute: Callable[[], T], *, state: Hashable = None) -> T:
        """Return the current value of `key`, or compute and keep it."""
        found, value = self._current(key, state)
        if found:
            return value
        with self._key_locks[hash(key) % self.LOCKS]:
            found, value = self._current(key, state)
            if not found:
                value = compute()
                self._put(key, state, value)
        return value

    def _put(self, key: Hashable, state: Hashable, value: object) -> None:
        size = self._size(value)
        if size > self.max_size:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self._total += size - (old[3] if old else 0)
            self._items[key] = (state, time.monotonic(), value, size)
            while self._total > self.max_size:
                _, dropped = self._items.popitem(last=False)
                self._total -= dropped[3]
