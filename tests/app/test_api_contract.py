"""The JSON API's error contract, checked against a real `monoscope serve` over a throwaway database.

1. /openapi.json documents, for every operation, each 4xx it can return, all with the ErrorBody schema: the expected
   statuses follow from what the operation takes (any: a token -> 401; POST: cookies -> CSRF 403; a body -> 400 and
   422; a path parameter or a basis/model name -> 404; any parameter -> 422), and one request per status shows the
   server really answers it, with a message.
2. schemathesis fuzzes every operation from that document (examples, coverage and fuzzing phases), once as a
   signed-in user and once anonymously, with every check: no 5xx, every status documented, every body as
   documented, invalid data rejected, valid data accepted (a rule the server keeps is in the schema: patterns, item
   counts, unique items; what only the data decides is a 404 or 409), undeclared methods answered 405 with
   `Allow`, every error a non-empty `{"detail": message}`. Bounded (a few examples an operation) and reproducible
   (derandomized, no example database).
Writes (labels, reviews) land only in this module's database, ingested from the shared analysed run.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from webapp_fixtures import SAE_NAME, add_user, ingest_run, start_server, stop_server

EXAMPLES_PER_OPERATION = 30
# Statuses no request shape predicts: they come from the state of a review or of the machine.
STATEFUL = {("post", "/api/v1/reviews"): {409},  # a name taken, too few live units, bases of two models
            ("post", "/api/v1/bases/{basis}/units/{index}/labels"): {409},  # an Idempotency-Key used before
            ("post", "/api/v1/reviews/{review_id}/items/{position}/score"): {409},  # closed, or scores final
            ("post", "/api/v1/reviews/{review_id}/items/{position}/skip"): {409},
            ("post", "/api/v1/reviews/{review_id}/close"): {403},  # not its creator
            ("get", "/api/v1/reviews/{review_id}/results"): {403},  # not finished rating it
            ("get", "/api/v1/infer"): {503},  # the run folder is elsewhere
            ("get", "/api/v1/steer"): {503},
            ("post", "/api/v1/steer"): {404, 503}}  # a pin's basis or unit is in the body: the data decides
KNOWN = {"basis": "neurons", "index": 0, "review_id": 1, "position": 1, "text": "def f(x):", "pin": "neurons:0"}
UNKNOWN = {"basis": "no-such-basis", "index": 0, "review_id": 2**31 - 1, "position": 1}
VALID_BODIES = {"/api/v1/steer": {"pins": [{"basis": "no-such-basis", "index": 0}], "max_tokens": 1},
                "/api/v1/bases/{basis}/units/{index}/labels": {"text": "a label"},
                "/api/v1/reviews": {"name": "probe", "bases": ["no-such-basis"], "per_basis": 1},
                "/api/v1/reviews/{review_id}/items/{position}/score": {
                    "hypothesis": "h", "confidence": 1, "token_consistency": 1, "logit_consistency": 1,
                    "effect_gap": 0, "specificity": 1}}


@pytest.fixture(scope="module")
def api_server(tmp_path_factory, analysed_run):
    """A server over a throwaway SQLite database, the API token of its one user, and review 1 (two items a basis,
    so that item routes have something to find)."""
    db_url = f"sqlite:///{tmp_path_factory.mktemp('contract_db') / 'monoscope.db'}"
    ingest_run(analysed_run, db_url)
    token = add_user(db_url, "fuzzer")
    site = start_server(db_url, analysed_run)
    review = site.post("/api/v1/reviews", json={"name": "fuzzed", "bases": ["neurons", SAE_NAME], "per_basis": 2},
                       headers={"Authorization": f"Bearer {token}"})
    assert review.status_code == 201 and review.json()["id"] == 1, review.text
    yield site, token
    stop_server(site)


# --- 1. the documented errors ------------------------------------------------------------------------------------


def operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield method, path, op


def _types(schema: dict) -> set[str]:
    return {schema["type"]} if "type" in schema else set().union(*map(_types, schema.get("anyOf", [])))


def _names_a_thing(op: dict, spec: dict) -> bool:
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    fields = spec["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]["properties"] if body else {}
    return (any(p["in"] == "path" or p["name"] in ("basis", "model") for p in op.get("parameters", []))
            or "bases" in fields)


def expected_4xx(method: str, path: str, op: dict, spec: dict) -> set[int]:
    """The 4xx statuses the operation can return, from what it takes (STATEFUL adds the rest)."""
    expected = {401}
    if method in ("post", "delete"):  # asgi-csrf checks every unsafe method that carries cookies
        expected.add(403)
    if "requestBody" in op:
        expected |= {400, 422}
    if op.get("parameters"):
        expected.add(422)
    if _names_a_thing(op, spec):
        expected.add(404)
    return expected | {s for s in STATEFUL.get((method, path), ()) if s < 500}


def request(site, token: str | None, method: str, path: str, op: dict, values: dict, *, query=None, headers=None,
            **kwargs) -> httpx.Response:
    """Send the operation with path parameters from `values`, the required query parameters, and `query`."""
    params = {p["name"]: KNOWN[p["name"]] for p in op.get("parameters", []) if p["in"] == "query" and p["required"]}
    headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    url = site.url + path.format(**{k: v for k, v in values.items() if "{" + k + "}" in path})
    with httpx.Client(timeout=30) as client:
        return client.request(method, url, params={**params, **(query or {})}, headers=headers, **kwargs)


def invalid_query(op: dict) -> dict | None:
    """Return one parameter value the schema forbids (an integer that is not one, a string one too long)."""
    params = op.get("parameters", [])
    for p in params:
        if "integer" in _types(p["schema"]) and p["in"] == "query":
            return {p["name"]: "x"}
    for p in params:
        longest = [s["maxLength"] for s in [p["schema"], *p["schema"].get("anyOf", [])] if "maxLength" in s]
        if p["in"] == "query" and longest:
            return {p["name"]: "m" * (longest[0] + 1)}
    return None


def probe(site, token: str, method: str, path: str, op: dict, status: int) -> httpx.Response | None:
    """Send a request that must get `status`; None for statuses no request shape brings about."""
    body = VALID_BODIES.get(path) if "requestBody" in op else None
    if status == 401:  # a token that names nobody, on any operation
        return request(site, "mst_" + "x" * 43, method, path, op, KNOWN, json=body)
    if status == 403 and method in ("post", "delete"):  # a browser's cookies without the CSRF token
        return request(site, None, method, path, op, KNOWN, json=body, cookies={"monoscope_session": "x"})
    if status == 400:  # bytes that are no JSON text
        return request(site, token, method, path, op, KNOWN, content=b"\x80\x81",
                       headers={"Content-Type": "application/json"})
    if status == 404:
        names = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        query = {"basis": "no-such-basis"} if "basis" in names else {"model": "no-such-model"} if "model" in names else {}
        return request(site, token, method, path, op, UNKNOWN, query=query, json=body)
    if status == 422:
        if body is not None:
            return request(site, token, method, path, op, KNOWN, json=[])
        if (query := invalid_query(op)) is not None:
            return request(site, token, method, path, op, KNOWN, query=query)
        return request(site, token, method, path, op, {**KNOWN, "index": "x", "review_id": "x"})
    return None


@pytest.fixture(scope="module")
def spec(api_server) -> dict:
    site, _ = api_server
    return site.get("/openapi.json").json()


def test_every_operation_documents_the_4xx_it_returns(api_server, spec):
    site, token = api_server
    for method, path, op in operations(spec):
        documented = {int(s) for s in op["responses"] if s.startswith("4")}
        expected = expected_4xx(method, path, op, spec)
        assert documented == expected, (method, path, documented, expected)
        for status in sorted(expected):
            response = probe(site, token, method, path, op, status)
            if response is not None:
                assert response.status_code == status, (method, path, status, response.text)
                assert response.json()["detail"].strip(), (method, path, status)


def test_every_documented_error_has_the_error_schema(spec):
    assert "HTTPValidationError" not in str(spec)  # our handler answers 422 as ErrorBody, not FastAPI's list
    assert spec["components"]["schemas"]["ErrorBody"]["properties"]["detail"]["minLength"] == 1
    for method, path, op in operations(spec):
        errors = {s: r for s, r in op["responses"].items() if s[0] in "45"}
        assert {int(s) for s in errors if s.startswith("5")} == {s for s in STATEFUL.get((method, path), ())
                                                                 if s >= 500}, (method, path)
        for status, response in errors.items():
            assert response["description"], (method, path, status)
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)


def test_the_score_schema_states_the_interval_score_range(spec):
    # it said any integer, so a schema-valid score of 4 got a 422
    items = spec["components"]["schemas"]["ScoreIn"]["properties"]["interval_scores"]["anyOf"][0]["items"]["anyOf"]
    assert {"type": "integer", "minimum": 0, "maximum": 3} in items


def test_reads_declare_the_token_optional_and_writes_required(api_server, spec):
    site, _ = api_server
    for method, path, op in operations(spec):
        body = VALID_BODIES.get(path) if "requestBody" in op else None
        anonymous = request(site, None, method, path, op, KNOWN, json=body)
        optional = {} in op["security"]
        assert {"HTTPBearer": []} in op["security"], (method, path)
        assert optional == (anonymous.status_code != 401), (method, path, anonymous.status_code)


# --- 2. the fuzz -------------------------------------------------------------------------------------------------


def _fuzz_config(token: str | None) -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        "cache": {"enabled": False},
        "generation": {"max-examples": EXAMPLES_PER_OPERATION, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
        **({"auth": {"openapi": {"HTTPBearer": {"bearer": token}}}} if token else {}),
        "request-timeout": 30,
        # Names and numbers that exist, drawn half the time, so that requests also get past the lookups.
        "dictionaries": {"bases": {"values": ["neurons", SAE_NAME]}, "numbers": {"values": [1, 3]}},
        "parameters": {"path.basis": {"dictionary": "bases", "probability": 0.5},
                       "query.basis": {"dictionary": "bases", "probability": 0.5},
                       "body.bases[*]": {"dictionary": "bases", "probability": 0.5},
                       "body.per_basis": {"dictionary": "numbers", "probability": 0.5},
                       **{f"path.{name}": {"dictionary": "numbers", "probability": 0.5}
                          for name in ("index", "review_id", "position")}},
        # Every check, with its defaults: no operation is excused from accepting the data its schema allows.
    })


@pytest.fixture(scope="module")
def api_schema(api_server):
    site, token = api_server
    return schemathesis.openapi.from_url(f"{site.url}/openapi.json", config=_fuzz_config(token))


@pytest.fixture(scope="module")
def anonymous_schema(api_server):
    site, _ = api_server
    return schemathesis.openapi.from_url(f"{site.url}/openapi.json", config=_fuzz_config(None))


schema = schemathesis.pytest.from_fixture("api_schema")
anonymous = schemathesis.pytest.from_fixture("anonymous_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    # schemathesis 4.32's lazy loader reads and renames `item._nodeid`, which pytest 9.2 items no longer have
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


STATUSES: dict[str, set[int]] = {}  # what the fuzz got, by operation


def _call(case) -> int:
    response = case.call_and_validate()
    if response.status_code >= 400:
        detail = response.json().get("detail")
        assert isinstance(detail, str) and detail.strip(), response.text
    return response.status_code


@schema.parametrize()
def test_fuzzed_requests_get_documented_answers(case):
    STATUSES.setdefault(case.operation.label, set()).add(_call(case))


@anonymous.parametrize()
def test_fuzzed_anonymous_requests_get_documented_answers(case):
    _call(case)


def test_the_fuzz_got_past_the_token_and_the_lookups(spec):
    assert STATUSES, "the fuzz did not run: select its test too (this test checks what it got)"
    for method, path, _ in operations(spec):
        label = f"{method.upper()} {path}"
        assert any(200 <= s < 300 for s in STATUSES.get(label, ())), (label, STATUSES.get(label))
