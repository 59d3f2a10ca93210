"""Dependencies of the routes, as `Annotated` aliases so a route's signature says what it needs (SessionDep, ...)."""

from __future__ import annotations

from typing import Annotated, Callable, Iterator, TypeVar

from fastapi import Depends, Path, Query, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.read import queries
from app.read.unit_list_schemas import UnitListForm, UnitListParams
from app.read.steer_schemas import SteerQuery


def get_session(request: Request) -> Iterator[Session]:
    """Yield one read session per request from the app's sessionmaker (closed afterwards)."""
    with request.app.state.sessionmaker() as session:
        yield session


T = TypeVar("T")


async def run_db(request: Request, work: Callable[[Session], T]) -> T:
    """Return `work(session)` run in a read session of its own: on the event loop on SQLite, in the thread pool on a
    server database. Callers pass bounded work only (a handful of indexed lookups, an in-memory filter).

    Python's sqlite3 releases the GIL while a statement runs, so a worker thread pays off only for long queries; for
    sub-millisecond lookups it only adds GIL hand-offs between it and the loop (a unit page's first render: 153 -> 205
    requests/s at concurrency 16, BENCHMARKS.md). A server database's round trips always wait in a worker thread."""
    if request.app.state.inline_reads:
        return _in_session(request, work)
    return await run_in_threadpool(_in_session, request, work)


def _in_session(request: Request, work: Callable[[Session], T]) -> T:
    with request.app.state.sessionmaker() as session:
        return work(session)


RESPONSE_CACHE_BYTES = 64 << 20  # rendered unit responses kept per process (a unit page is ~50-100 kB)


async def cached_unit_response(request: Request, kind: str, *, basis: str, index: int, model: str | None,
                               render: Callable[[queries.UnitView], bytes]) -> bytes:
    """Return the body of unit (basis, index) as `kind` ("page", "json"): `render` of its UnitView, made once per
    (ingest, labels shown) state (queries.unit_version, part of the key) and then kept in the app's cache."""
    def lookup(session: Session) -> bytes:
        key = (kind, queries.unit_version(session=session, basis=basis, index=index, model=model), request.url.query)
        return request.app.state.cache.get(
            key, lambda: render(queries.unit_view(session=session, basis=basis, index=index, model=model)))

    return await run_db(request, lookup)


SessionDep = Annotated[Session, Depends(get_session)]
ModelParam = Annotated[
    str | None,
    Query(max_length=200, description="Model (run) name; needed only when several models are ingested. "
                                      "Without it, the most recently ingested model that has the basis is used."),
]
UnitListParamsDep = Annotated[UnitListParams, Query()]
UnitListFormDep = Annotated[UnitListForm, Query()]  # the page's: an empty density box is no bound
UnitIndex = Annotated[int, Path(ge=0, le=2**31 - 1, description="Unit index within its basis (0-based)")]
SteerQueryDep = Annotated[SteerQuery, Query()]
