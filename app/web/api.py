"""The JSON API (/api/v1): one endpoint per page, from the same query function and schema as the page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.read import queries
from app.read.autointerp_schemas import AutointerpResults
from app.read.infer_schemas import MAX_INFER_CHARS, STRIP_PATTERN, InferResult
from app.read.match_schemas import FeatureMap, Matches
from app.read.proxy_schemas import ProxyRanking, UnitProxyPlots
from app.read.schemas import BasisSummary, Comparison, Overview, UnitDetail
from app.read.unit_list_schemas import UnitList
from app.read.steer_schemas import SteerApiQuery, SteerRequest, SteerResult
from app.read.text_rules import Matching, Text
from app.web.deps import ModelParam, SessionDep, UnitIndex, UnitListParamsDep, cached_unit_response, run_db
from app.web.error_docs import BAD_PARAMETER, BAD_TOKEN, BODY, OPTIONAL_AUTH, UNKNOWN_UNIT, WRITE, errors
from sae.errors import MonoscopeError

READ = errors(BAD_TOKEN)
LOOKUP = errors(BAD_TOKEN, UNKNOWN_UNIT, BAD_PARAMETER)
router = APIRouter(prefix="/api/v1", tags=["api"])


@router.get("/overview", openapi_extra=OPTIONAL_AUTH, response_model=Overview, responses=READ,
            summary="Every basis with its metrics and density histogram")
def overview(session: SessionDep):
    return queries.overview(session=session)


@router.get("/bases", openapi_extra=OPTIONAL_AUTH, response_model=list[BasisSummary], responses=READ,
            summary="Every basis (the collection; /overview is its page)")
def bases(session: SessionDep):
    return queries.overview(session=session).bases


@router.get("/bases/{basis}", openapi_extra=OPTIONAL_AUTH, response_model=UnitList, responses=LOOKUP,
            summary="Units of a basis: sort, filter, search, paginate")
async def unit_list(request: Request, basis: str, params: UnitListParamsDep, model: ModelParam = None):
    return await run_db(request, lambda session: queries.unit_list(session=session, basis=basis, model=model,
                                                                   params=params))


@router.get("/bases/{basis}/units", openapi_extra=OPTIONAL_AUTH, response_model=UnitList, responses=LOOKUP,
            summary="The units collection of a basis (the same list as /bases/{basis}, under its REST path)")
async def basis_units(request: Request, basis: str, params: UnitListParamsDep, model: ModelParam = None):
    return await run_db(request, lambda session: queries.unit_list(session=session, basis=basis, model=model,
                                                                   params=params))


@router.get("/bases/{basis}/units/{index}", openapi_extra=OPTIONAL_AUTH, response_model=UnitDetail,
            responses=LOOKUP, summary="One neuron or feature")
async def unit_detail(request: Request, basis: str, index: UnitIndex, model: ModelParam = None):
    body = await cached_unit_response(request, "json", basis=basis, index=index, model=model,
                                      render=queries.UnitView.json)  # the page renders the same UnitView
    return Response(body, media_type="application/json")


@router.get("/compare", openapi_extra=OPTIONAL_AUTH, response_model=Comparison,
            summary="A neuron beside its features; basis distributions",
            responses=errors(BAD_TOKEN, {404: "Unknown model, SAE basis (the neuron basis is none) or neuron"},
                             BAD_PARAMETER))
def compare(session: SessionDep, basis: Annotated[str | None, Query(max_length=200, description="SAE basis")] = None,
            neuron: Annotated[int | None, Query(ge=0, le=2**31 - 1,
                                                description="Neuron index (default: the least specific)")] = None,
            model: ModelParam = None):
    return queries.comparison(session=session, basis=basis, neuron=neuron, model=model)


@router.get("/matches", openapi_extra=OPTIONAL_AUTH, response_model=Matches, responses=READ,
            summary="Best-match correlations between bases (universality across LMs, splitting across sizes)")
def matches(session: SessionDep):
    return queries.matches(session=session)


@router.get("/map", openapi_extra=OPTIONAL_AUTH, response_model=FeatureMap,
            responses=errors(BAD_TOKEN, {404: "Unknown model"}, BAD_PARAMETER),
            summary="The feature map: a 2-D UMAP of a model's dictionaries")
def feature_map(session: SessionDep, model: ModelParam = None):
    return queries.feature_map(session=session, model=model)


@router.get("/autointerp", openapi_extra=OPTIONAL_AUTH, response_model=AutointerpResults,
            responses=errors(BAD_TOKEN, {404: "Unknown model, or no explanation by that language model"},
                             BAD_PARAMETER),
            summary="Automated interpretability: explanation scores of features against neurons")
def autointerp(session: SessionDep, model: ModelParam = None,
               llm: Annotated[str, Query(max_length=300, description="Only this language model's explanations "
                                                                     "(default: each unit's newest)")] = ""):
    return queries.autointerp_results(session=session, model=model, llm=llm or None)


@router.get("/infer", openapi_extra=OPTIONAL_AUTH, response_model=InferResult,
            summary=f"Run the model on a text (at most {MAX_INFER_CHARS:,} characters)",
            responses=errors(BAD_TOKEN, {404: "Unknown model or none ingested yet, or no token at `position` or no "
                                              "unit `strip` in the text's result"}, BAD_PARAMETER,
                             {503: "The run folder is not on this machine"}))
def infer(session: SessionDep, text: Annotated[Text(MAX_INFER_CHARS), Query(description="Not only whitespace")],
          position: Annotated[int | None, Query(ge=0, le=100_000,
                                                description="Token whose most active units to list (default: the "
                                                            "last; 0-based, beyond the text is a 404)")] = None,
          strip: Annotated[Matching(STRIP_PATTERN, "strip is `basis:index` (or empty)"), Query(
              max_length=300, description="`basis:index` of the unit shown over the text")] = "",
          model: ModelParam = None):
    import app.web.infer as live

    return live.infer_result(session=session, text=text, position=position, strip=strip, model=model)


STEER_UNKNOWN = {404: "Unknown model, basis or unit of a pin"}
STEER_UNAVAILABLE = {503: "The run folder (or a pinned SAE) is not on this machine"}
STEER_ERRORS = errors(BAD_TOKEN, STEER_UNKNOWN, BAD_PARAMETER, STEER_UNAVAILABLE)
# A POST with cookies is checked for CSRF like any other, though steering writes nothing.
STEER_POST_ERRORS = errors(BAD_TOKEN, {403: WRITE[403]}, STEER_UNKNOWN, BODY, STEER_UNAVAILABLE)


@router.get("/steer", openapi_extra=OPTIONAL_AUTH, response_model=SteerResult, responses=STEER_ERRORS,
            summary="Pinned sampling: continue a prompt with units pinned, beside the unsteered continuation")
def steer_get(session: SessionDep, query: Annotated[SteerApiQuery, Query()]):
    import app.web.steer as steer

    try:
        request = query.request()
    except ValueError as e:
        raise MonoscopeError(str(e).splitlines()[0]) from None
    return steer.steer_result(session, request)


@router.post("/steer", openapi_extra=OPTIONAL_AUTH, response_model=SteerResult, responses=STEER_POST_ERRORS,
             summary="Pinned sampling (a computation, not a write: no login needed)")
def steer_post(session: SessionDep, request: SteerRequest):
    import app.web.steer as steer

    return steer.steer_result(session, request)


@router.get("/proxies", openapi_extra=OPTIONAL_AUTH, response_model=ProxyRanking,
            responses=errors(BAD_TOKEN, {404: "Unknown model, SAE basis or proxy"}, BAD_PARAMETER),
            summary="Units ranked by correlation with a specificity proxy, neurons beside features")
def proxies(session: SessionDep, basis: Annotated[str | None, Query(max_length=200, description="SAE basis")] = None,
            proxy: Annotated[str | None, Query(max_length=300, description="Proxy name (default: the first)")] = None,
            model: ModelParam = None):
    return queries.proxy_ranking(session=session, basis=basis, proxy=proxy, model=model)


@router.get("/bases/{basis}/units/{index}/proxy", openapi_extra=OPTIONAL_AUTH, response_model=UnitProxyPlots,
            responses=errors(BAD_TOKEN, {404: "Unknown model, basis, unit or proxy"}, BAD_PARAMETER),
            summary="One unit against one proxy: its statistics and stacked histograms")
def unit_proxy(session: SessionDep, basis: str, index: UnitIndex,
               proxy: Annotated[str | None, Query(max_length=300, description="Default: its best-correlated")] = None,
               model: ModelParam = None):
    return queries.unit_proxy_plots(session=session, basis=basis, index=index, proxy=proxy, model=model)
