"""The read model's one cache (app/read/cache.py): current while its state holds, bounded, computed once per miss."""

from __future__ import annotations

import threading
import time

import pytest

from app.read.cache import Cache


def test_a_value_is_kept_while_its_state_holds():
    cache, calls = Cache(), []
    compute = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert cache.get("k", compute, state=("ingest", 1)) == 1
    assert cache.get("k", compute, state=("ingest", 1)) == 1
    assert cache.get("k", compute, state=("ingest", 2)) == 2  # a re-ingest: computed again
    assert len(calls) == 2


def test_ttl_expires_a_value():
    cache = Cache(ttl_s=0.05)
    assert cache.get("k", lambda: "old") == "old"
    assert cache.get("k", lambda: "new") == "old"
    time.sleep(0.08)
    assert cache.get("k", lambda: "new") == "new"


def test_the_least_recently_used_go_beyond_the_size_bound():
    cache = Cache(max_size=10, size=len)
    for key in "abc":
        cache.get(key, lambda: b"xxxx")  # 4 bytes each: c pushes a out
    cache.get("b", lambda: b"????")  # b is now the most recently used
    assert cache.get("a", lambda: b"AAAA") == b"AAAA"  # recomputed; pushes c (least recent) out
    assert cache.get("b", lambda: b"BBBB") == b"xxxx"
    assert cache.get("c", lambda: b"CCCC") == b"CCCC"
    assert cache.get("big", lambda: b"x" * 11) == b"x" * 11  # larger than the bound: returned, not kept
    assert cache.get("big", lambda: b"y") == b"y"


def test_a_failed_compute_keeps_nothing():
    cache = Cache()

    def fails():
        raise LookupError("no basis named 'nope'")

    with pytest.raises(LookupError):
        cache.get("nope", fails)
    assert cache.get("nope", lambda: 1) == 1


def test_concurrent_misses_compute_once():
    cache, calls, start = Cache(), [], threading.Barrier(8)

    def slow():
        calls.append(1)
        time.sleep(0.05)
        return "value"

    def reader(out: list):
        start.wait()
        out.append(cache.get("k", slow))

    results: list = []
    threads = [threading.Thread(target=reader, args=(results,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["value"] * 8 and len(calls) == 1
