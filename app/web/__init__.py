"""The web app: `create_app(settings)` builds FastAPI with the pages, the JSON API, static assets and handlers."""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import sessionmaker

from app.resources import resource

STATIC = resource("static")
# Third-party JS comes from installed packages (never a CDN): the app works air-gapped.
SWAGGER = Path(swagger_ui_bundle.swagger_ui_path)  # from swagger-ui-bundle-v2: Swagger UI 5 (reads OpenAPI 3.1)
VENDOR = {
    "plotly.min.js": Path(str(files("plotly") / "package_data" / "plotly.min.js")),
    "htmx.min.js": Path(str(files("js_lib_htmx") / "static" / "htmx" / "htmx.min.js")),
    "swagger-ui-bundle.js": SWAGGER / "swagger-ui-bundle.js",
    "swagger-ui.css": SWAGGER / "swagger-ui.css",
}
CACHE = {"Cache-Control": "public, max-age=86400"}
# Swagger UI with its start-up in static/docs.js, not inline (FastAPI's page has an inline script, which the
# Content-Security-Policy of app.web.middleware forbids).
DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Monoscope API</title><link rel="stylesheet" href="/vendor/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/vendor/swagger-ui-bundle.js"></script><script src="/static/docs.js"></script></body></html>
"""


def create_app(settings=None, *, engine=None) -> FastAPI:
    """Return the app reading the database of `settings` (app.settings.Settings; default from the environment)."""
    from fastapi import Depends

    from app.read.cache import Cache
    from app.settings import Settings
    from app.web import account, api, auth, errors, labels, pages, reviews
    from app.web.deps import RESPONSE_CACHE_BYTES
    from app.web.middleware import BodyLimit, HeadAsGet, SecurityHeaders

    settings = settings if settings is not None else Settings()
    if engine is None:
        from app.store.db import make_engine

        engine = make_engine(settings.database_url)
    from app.store.db import check_schema

    check_schema(engine)  # serve upgrades first; an app started any other way must not meet an older schema
    app = FastAPI(title="Monoscope", version="1", docs_url=None, redoc_url=None, lifespan=_lifespan,
                  description="Neurons and sparse-autoencoder features of a one-layer transformer's MLP. Every page "
                              "of the web app has its JSON twin here (the page's path under /api/v1; `/` is "
                              "/api/v1/overview), built from the same query. A basis is named in paths by its name "
                              "(`neurons` or the SAE's name); when several models are ingested, `?model=NAME` picks "
                              "one, and without it the most recently ingested model having that basis is used. "
                              "Errors are JSON `{\"detail\": message}`; each operation lists the statuses it can "
                              "return (404 unknown, 422 bad parameter, 401 no or bad token, ...). "
                              "Reads are open unless the server sets MONOSCOPE_REQUIRE_LOGIN; writes (labels, "
                              "reviews) need `Authorization: Bearer <token>` with a token from `monoscope user add "
                              "NAME` (401 without one).")
    app.state.engine = engine
    app.state.sessionmaker = sessionmaker(engine, expire_on_commit=False)
    app.state.cache = Cache(max_size=RESPONSE_CACHE_BYTES, size=len)
    app.state.inline_reads = engine.dialect.name == "sqlite"  # app.web.deps.run_db
    errors.install(app)
    auth.install(app, settings)  # the session and CSRF middlewares; those below wrap them (the last added is outermost)
    app.add_middleware(HeadAsGet)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    reads = [Depends(auth.read_access)]
    app.include_router(pages.router, dependencies=reads)
    app.include_router(api.router, dependencies=reads)
    app.include_router(labels.pages)
    app.include_router(labels.api)
    app.include_router(account.pages)
    app.include_router(account.api)
    app.include_router(reviews.pages)
    app.include_router(reviews.api)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    app.add_api_route("/favicon.ico", lambda: Response(status_code=204), include_in_schema=False)
    app.add_api_route("/docs", lambda: HTMLResponse(DOCS_PAGE), include_in_schema=False)
    for name, path in VENDOR.items():
        app.add_api_route(f"/vendor/{name}", _file_route(path), include_in_schema=False)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI):
    """Move every object alive once the app is up (modules, templates, the ORM's registries: ~170k) out of the
    collector's reach: a full collection then takes microseconds instead of ~100 ms, a pause every in-flight request
    would wait through (gc.freeze, as servers that preload their app do)."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


def _file_route(path: Path):
    """Return a route serving one installed file (a closure: FastAPI would read a default argument as a parameter)."""
    def serve_file() -> FileResponse:
        return FileResponse(path, media_type="text/css" if path.suffix == ".css" else "text/javascript",
                            headers=CACHE)

    return serve_file
