"""Dependencies of the routes, as `Annotated` aliases so a route's signature says what it needs (SessionDep, ...)."""

from __future__ import annotations

from typing import Annotated, Iterator

from fastapi import Depends, Path, Query, Request
from sqlalchemy.orm import Session

from app.web.schemas import UnitListParams


def get_session(request: Request) -> Iterator[Session]:
    """Yield one read session per request from the app's sessionmaker (closed afterwards)."""
    with request.app.state.sessionmaker() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
ModelParam = Annotated[
    str | None,
    Query(max_length=200, description="Model (run) name; needed only when several models are ingested. "
                                      "Without it, the most recently ingested model that has the basis is used."),
]
UnitListParamsDep = Annotated[UnitListParams, Query()]
UnitIndex = Annotated[int, Path(ge=0, le=2**31 - 1, description="Unit index within its basis (0-based)")]
