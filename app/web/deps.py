"""Dependencies of the routes, as `Annotated` aliases so a route's signature says what it needs (SessionDep, ...)."""

from __future__ import annotations

from typing import Annotated, Callable, Iterator, TypeVar

from fastapi import Depends, Path, Query, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.web.schemas import UnitListParams


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


SessionDep = Annotated[Session, Depends(get_session)]
ModelParam = Annotated[
    str | None,
    Query(max_length=200, description="Model (run) name; needed only when several models are ingested. "
                                      "Without it, the most recently ingested model that has the basis is used."),
]
UnitListParamsDep = Annotated[UnitListParams, Query()]
UnitIndex = Annotated[int, Path(ge=0, le=2**31 - 1, description="Unit index within its basis (0-based)")]
