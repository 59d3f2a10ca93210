"""Ingest's CPU work, CHUNK units at a time: a chunk's unit rows (with their UnitData and page sections, and their
proxy statistics) and their example windows, from a basis's analysis arrays. Building and rendering the pages is most
of an ingest's time even made a chunk at a time (app/store/unit_pages.py), so `Chunks` makes the chunks of a large
basis in worker processes while the ingest's own process writes the earlier ones; a chunk comes out the same bytes
whichever process made it.
"""

from __future__ import annotations

import gc
import json
import math
import multiprocessing
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from app.store.example_rows import chunk_windows, packed_rows
from app.store.models import TOP_TOKENS_SEPARATOR
from app.store.npz import read_npz
from app.store.proxy_columns import proxy_columns
from sae.errors import MonoscopeError
from sae.memory import keep_freed_memory

CHUNK = 256  # units a chunk: bounded memory whatever the basis size (~60 MB of a worker's arrays)
MAX_WORKERS = 8


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def unit_rows(basis_id: int, a: dict[str, np.ndarray], strings: list[str], start: int, stop: int,
              before: int) -> list[dict]:
    """Return the `unit` table's rows of units [start, stop) of a basis from its units.npz arrays."""
    c = {name: a[name][start:stop].tolist() for name in _ROW_ARRAYS}
    max_ids = a["top_token_ids"][start:stop, :, before].tolist()
    rows = []
    for i, u in enumerate(range(start, stop)):
        max_tokens = {t for t in max_ids[i][:c["top_count"][i]] if t >= 0}
        density = c["density"][i]
        rows.append(dict(
            basis_id=basis_id, index=u, firing_count=c["firing_count"][i], density=density,
            log10_density=math.log10(density) if density > 0 else None,
            max_activation=c["max_activation"][i], mean_activation=c["mean_activation"][i],
            top_token_entropy=_finite(c["top_token_entropy"][i]),
            top_tokens=TOP_TOKENS_SEPARATOR.join(sorted(strings[t] for t in max_tokens if t < len(strings))),
            act_hist={"edges": c["act_hist_edges"][i], "counts": c["act_hist_counts"][i]},
            logit_hist={"edges": c["logit_hist_edges"][i], "counts": c["logit_hist_counts"][i]},
            top_logits=[[t, v] for t, v in zip(c["logit_top_ids"][i], c["logit_top_values"][i])],
            bottom_logits=[[t, v] for t, v in zip(c["logit_bottom_ids"][i], c["logit_bottom_values"][i])],
            interval_edges=c["interval_edges"][i], interval_counts=c["interval_counts"][i],
        ))
    return rows


_ROW_ARRAYS = ("top_count", "density", "firing_count", "max_activation", "mean_activation", "top_token_entropy",
               "act_hist_edges", "act_hist_counts", "logit_hist_edges", "logit_hist_counts", "logit_top_ids",
               "logit_top_values", "logit_bottom_ids", "logit_bottom_values", "interval_edges", "interval_counts")


_STRINGS: list[str] = []  # a worker's copy of the vocabulary (its initializer sets it)


def _set_strings(strings: list[str]) -> None:
    _STRINGS[:] = strings


def _start_worker(strings: list[str]) -> None:
    """A worker process's initializer: its vocabulary, and the allocator told to keep freed memory for the next
    chunk (sae/memory.py): making the chunks of 4,096 features took 0.8 s of system time with it (and CHUNK 256),
    3.0 s without (and CHUNK 512)."""
    _set_strings(strings)
    keep_freed_memory()


@lru_cache(maxsize=2)
def _arrays(units_npz: Path) -> dict[str, np.ndarray]:
    return read_npz(units_npz)  # memory-mapped: each chunk reads only its own pages


UNIT_COLUMNS = ("basis_id", "index", "firing_count", "density", "log10_density", "max_activation", "mean_activation",
                "top_token_entropy", "top_tokens", "act_hist", "logit_hist", "top_logits", "bottom_logits",
                "interval_edges", "interval_counts", "sections", "proxy_stats", "proxy_hists")
_JSON_COLUMNS = frozenset(("act_hist", "logit_hist", "top_logits", "bottom_logits", "interval_edges",
                           "interval_counts"))  # written as json.dumps text, as SQLAlchemy's JSON type writes them


class Chunk(NamedTuple):
    """What ingest writes for a chunk of units: their `unit` rows (UNIT_COLUMNS, with the packed `sections` and
    proxy statistics) and their example rows (app.store.example_rows.EXAMPLE_COLUMNS, compressed, each with its
    unit's index where its unit's row id goes)."""

    units: list[tuple]
    examples: list[tuple]


@contextmanager
def _cycles_uncollected() -> Iterator[None]:
    """Python's cycle collector paused: a chunk makes ~200k lists, numbers and view-model objects that live until it
    is written, and the collector's full passes over them took ~20% of a worker's CPU (1.45 -> 1.2 ms a unit); the
    chunk's objects are freed by reference counting when it is, and any cycle at the next collection."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@_cycles_uncollected()
def make_chunk(units_npz: Path, basis_id: int, model_name: str, before: int, start: int, stop: int) -> Chunk:
    """Return the Chunk of units [start, stop) of a basis."""
    # Here, not at the top: app.read.unit_data imports app.store.models, whose package imports this module.
    from app.read.unit_data import analysis_fields_of
    from app.store.unit_pages import add_sections

    a = _arrays(units_npz)
    units = unit_rows(basis_id, a, _STRINGS, start, stop, before)
    windows = chunk_windows(a, start, stop)
    add_sections(units, windows, analysis_fields_of(a, start, stop), _STRINGS, model_name, before)
    for row, (stats, hists) in zip(units, proxy_columns(a, start, stop)):
        row["proxy_stats"], row["proxy_hists"] = stats, hists
    rows = [tuple(json.dumps(row[c]) if c in _JSON_COLUMNS else row[c] for c in UNIT_COLUMNS) for row in units]
    return Chunk(rows, packed_rows(windows, np.arange(stop)))


class Chunks:
    """Makes the chunks of every basis of one ingest: in this process for a basis of one chunk, else in up to
    `workers` processes (started at the first large basis and kept for the others), at most `workers` + 1 chunks
    ahead of the writer, so memory stays bounded."""

    def __init__(self, strings: list[str], workers: int | None = None):
        self.strings = strings
        self.workers = workers if workers is not None else min(os.cpu_count() or 1, MAX_WORKERS)
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Chunks:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def of(self, units_npz: Path, basis_id: int, model_name: str, before: int,
           n_units: int) -> Iterator[Chunk]:
        """Yield the chunks of a basis in unit order."""
        bounds = [(start, min(start + CHUNK, n_units)) for start in range(0, n_units, CHUNK)]
        if self.workers <= 1 or len(bounds) <= 1:
            _set_strings(self.strings)
            for start, stop in bounds:
                yield make_chunk(units_npz, basis_id, model_name, before, start, stop)
            return
        if self._pool is None:  # spawn: a fork could inherit a lock another thread of this process holds
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=(self.strings,))
        ahead: deque[Future] = deque()
        try:
            for start, stop in bounds:
                ahead.append(self._pool.submit(make_chunk, units_npz, basis_id, model_name, before, start, stop))
                if len(ahead) > self.workers:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        except BrokenProcessPool:  # a worker killed (out of memory, say): the basis rolls back
            raise MonoscopeError("an ingest worker process died (out of memory?); the database keeps its previous "
                                 "version: run `monoscope ingest --workers 1`") from None
