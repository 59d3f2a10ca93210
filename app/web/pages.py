"""HTML pages. Each calls the same query function as its JSON twin (app/web/api.py) and renders the schema;
an htmx request gets the page's named block alone."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from app.present import plots, unit_sections
from app.read import queries
from app.read.infer_schemas import MAX_INFER_CHARS
from app.read.steer_schemas import STEER_LIMITS
from app.read.urls import with_query
from app.web.deps import (ModelParam, SessionDep, SteerQueryDep, UnitIndex, UnitListFormDep, cached_unit_response,
                          run_db)
from app.web.render import render, twin_url

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


@router.get("/")
def overview_page(request: Request, session: SessionDep):
    overview = queries.overview(session=session)
    density = [plots.density_plot(b.density_histogram, b.metrics.n_tokens) for b in overview.bases]
    context = {"overview": overview, "density_plots": density, "frontier": plots.frontier_plots(overview.bases),
               "plots": True}
    return render(request, "overview.html", context, api_url=twin_url(request))


@router.get("/bases/{basis}")
async def basis_page(request: Request, basis: str, params: UnitListFormDep, model: ModelParam = None):
    units = await run_db(request, lambda session: queries.unit_list(session=session, basis=basis, model=model,
                                                                    params=params))
    base = units.basis.url
    page = lambda n: with_query(base, params.model_copy(update={"page": n}))  # noqa: E731
    context = {"units": units, "model_param": model,
               "prev_page_url": page(params.page - 1) if params.page > 1 else None,
               "next_page_url": page(params.page + 1) if params.page < units.pages else None}
    return render(request, "basis.html", context, block="units", api_url=twin_url(request))


@router.get("/bases/{basis}/units/{index}")
async def unit_page(request: Request, basis: str, index: UnitIndex, model: ModelParam = None):
    """The unit page; rendered once per (ingest, labels) state and then served from the response cache."""
    def page(unit: queries.UnitView) -> bytes:  # the twin renders the same UnitView (app/web/api.py)
        context = {"unit": unit.around, "sections": unit_sections.PLACEHOLDERS, "plots": True}
        return unit_sections.splice(render(request, "unit.html", context, api_url=twin_url(request)).body,
                                    unit.page_sections())

    body = await cached_unit_response(request, "page", basis=basis, index=index, model=model, render=page)
    return HTMLResponse(body, headers={"Vary": "HX-Request"})


@router.get("/compare")
def compare_page(request: Request, session: SessionDep, basis: Annotated[str | None, Query(max_length=200)] = None,
                 neuron: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None, model: ModelParam = None):
    comparison = queries.comparison(session=session, basis=basis, neuron=neuron, model=model)
    density_plot, entropy_plot = plots.distribution_plots(comparison.distributions)
    context = {"comparison": comparison, "sae_names": comparison.sae_bases, "basis_name": comparison.basis,
               "model_param": model, "plots": True, "density_plot": density_plot, "entropy_plot": entropy_plot}
    return render(request, "compare.html", context, api_url=twin_url(request))


@router.get("/matches")
def matches_page(request: Request, session: SessionDep):
    result = queries.matches(session=session)
    context = {"matches": result, "plots": True, "match_plot": plots.match_plot(result.pairs) if result.pairs else None}
    return render(request, "matches.html", context, api_url=twin_url(request))


@router.get("/map")
def map_page(request: Request, session: SessionDep, model: ModelParam = None,
             colour: Annotated[Literal["dictionary", "density", "label"], Query()] = "dictionary"):
    result = queries.feature_map(session=session, model=model)
    context = {"map": result, "colour": colour, "colours": plots.MAP_COLOURS, "model_param": model, "plots": True,
               "map_plot": plots.map_plot(result.points, colour) if result.points else None}
    return render(request, "map.html", context, api_url=twin_url(request))


@router.get("/autointerp")
def autointerp_page(request: Request, session: SessionDep, model: ModelParam = None,
                    llm: Annotated[str, Query(max_length=300)] = ""):
    result = queries.autointerp_results(session=session, model=model, llm=llm or None)
    context = {"res": result, "model_param": model, "plots": True,
               "scores_plot": plots.autointerp_plot(result.bases) if result.units else None}
    return render(request, "autointerp.html", context, api_url=twin_url(request))


@router.get("/infer")
def infer_page(request: Request, session: SessionDep, text: Annotated[str, Query()] = "",
               position: Annotated[str, Query(max_length=20)] = "", strip: Annotated[str, Query(max_length=300)] = "",
               at: Annotated[int | None, Query(ge=0, le=100_000)] = None,
               show: Annotated[str, Query(max_length=300)] = "",
               run: Annotated[str, Query(max_length=5)] = "", model: ModelParam = None):
    """Live inference. Buttons of the form send `at` (a token) or `show` (a unit); `run` starts over."""
    import app.web.infer as infer
    from sae.errors import MonoscopeError

    if run:
        position, strip = "", ""
    digits = position.strip()
    position_value = at if at is not None else (int(digits) if digits.isascii() and digits.isdigit() else None)
    context = {"text": text, "max_chars": MAX_INFER_CHARS, "model_param": model, "result": None, "error": None}
    status = 200
    if text.strip():
        try:
            context["result"] = infer.infer_result(session=session, text=text, position=position_value,
                                                   strip=show or strip, model=model)
        except MonoscopeError as e:
            context["error"] = str(e)
            status = 503 if isinstance(e, infer.Unavailable) else 404 if isinstance(e, queries.NotFound) else 422
    result = context["result"]
    query = {"text": text} if text else {}
    if result is not None:
        query.update(position=result.position, strip=f"{result.strip_basis}:{result.strip_index}"
                     if result.strip_basis else "")
    if model:
        query["model"] = model
    return render(request, "infer.html", context, block="result", status_code=status,
                  api_url=f"/api/v1/infer?{urlencode(query)}" if text.strip() else None)


@router.get("/steer")
def steer_page(request: Request, session: SessionDep, query: SteerQueryDep):
    """Pinned sampling: the form, and with at least one pin the steered and unsteered continuations."""
    import app.web.steer as steer
    from sae.errors import MonoscopeError

    context = {"query": query, "limits": STEER_LIMITS, "result": None, "error": None, "model_param": query.model}
    status = 200
    if query.pin:
        try:
            context["result"] = steer.steer_result(session, query.request())
        except (MonoscopeError, ValueError) as e:
            context["error"] = _one_line(e)
            status = 503 if isinstance(e, steer.Unavailable) else 404 if isinstance(e, queries.NotFound) else 422
    return render(request, "steer.html", context, block="result", status_code=status,
                  api_url=twin_url(request) if query.pin else None)


def _one_line(e: Exception) -> str:
    """Return an error's message in one line (a pydantic error: its first problem)."""
    errors = getattr(e, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}".lstrip(": ")
    return str(e)


ProxyParam = Annotated[str | None, Query(max_length=300, description="Proxy name (default: the first)")]


@router.get("/proxies")
def proxies_page(request: Request, session: SessionDep, basis: Annotated[str | None, Query(max_length=200)] = None,
                 proxy: ProxyParam = None, model: ModelParam = None):
    """Which units detect a property: a basis's units ranked by correlation with a proxy, neurons beside features."""
    ranking = queries.proxy_ranking(session=session, basis=basis, proxy=proxy, model=model)
    context = {"ranking": ranking, "basis_name": basis, "model_param": model, "plots": bool(ranking.bases),
               "corr_plot": plots.proxy_corr_plot(ranking.bases) if ranking.bases else None}
    return render(request, "proxies.html", context, api_url=twin_url(request))


@router.get("/bases/{basis}/units/{index}/proxy")
def unit_proxy_page(request: Request, session: SessionDep, basis: str, index: UnitIndex, proxy: ProxyParam = None,
                    model: ModelParam = None):
    """A unit's two stacked histograms (count, expected value) against a chosen proxy."""
    result = queries.unit_proxy_plots(session=session, basis=basis, index=index, proxy=proxy, model=model)
    count_plot = value_plot = None
    if result.stat is not None and len(result.interval_edges) > 1:
        count_plot, value_plot = unit_sections.proxy_plots_of_edges(result.stat, result.interval_edges)
    context = {"result": result, "model_param": model, "plots": True, "count_plot": count_plot,
               "value_plot": value_plot}
    return render(request, "unit_proxy.html", context, block="plots", api_url=twin_url(request))
