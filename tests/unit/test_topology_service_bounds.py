"""The Topology Service's request bounds and its OpenAPI document, kept in sync (issue 17 item 4, ADR 0013).

The document is the contract schemathesis fuzzes the running service against
(tests/integration/test_topology_service_api.py); here, without a process: every route the service
registers is documented and nothing else is, the ClassifyRequest schema accepts exactly what
:func:`classify` accepts (hypothesis), and every answer matches its response schema."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema_rs  # schemathesis' own validator
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cells_dataplane.classify import MAX_VALUE_CHARS, Snapshot, classify
from cells_dataplane.topology_service import DEFAULT_MAX_BODY, OPENAPI, build_app, parse_args
from cells_formats.fields import CellState, SequenceRange
from cells_formats.records import CellRecord, Topology

DOC = json.loads(OPENAPI.read_text())


def rec(i: int, state: CellState = CellState.ACTIVE, first: bool = False) -> CellRecord:
    return CellRecord(
        name=f"c{i}",
        uid=f"u{i}",
        id=i,
        address=f"10.0.0.{i}:80",
        session_prefix=f"cell-{i}",
        state=state,
        first_cell=first,
        sequence_ranges=(SequenceRange(minval=i * 10**11, maxval=(i + 1) * 10**11 - 1),),
    )


SNAP = Snapshot(Topology(cells=(rec(1, first=True), rec(2), rec(3, CellState.DRAINING))))


def _json_schema(node):
    """OpenAPI 3.0 to JSON Schema for what the document uses: ``nullable``."""
    if isinstance(node, list):
        return [_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
    return out


def validator(name: str) -> jsonschema_rs.Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{name}", "components": _json_schema(copy.deepcopy(DOC["components"]))}
    return jsonschema_rs.Draft202012Validator(schema)


REQUEST = validator("ClassifyRequest")
STATUS = validator("Status")
CLASSIFY_RESPONSE = validator("ClassifyResponse")


def test_every_route_is_documented_and_every_documented_operation_exists():
    app = build_app(Path("/nonexistent/topology.json"))
    served = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.method != "HEAD"  # aiohttp adds HEAD to every GET
    }
    documented = {(path, method) for path, item in DOC["paths"].items() for method in item}
    assert served == documented


def test_document_is_openapi_3_with_resolvable_references():
    assert DOC["openapi"].startswith("3.0")
    text = json.dumps(DOC)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        node = DOC
        for key in ref.removeprefix("#/").split("/"):
            node = node[key]  # KeyError: a dangling reference
    assert REQUEST.is_valid({"type": "FIRST_CELL"})  # the schema compiles


def test_document_states_the_bounds_the_service_applies():
    assert f"default {DEFAULT_MAX_BODY}" in DOC["info"]["description"]
    for schema in ("FirstCellRequest", "SessionPrefixRequest"):
        assert DOC["components"]["schemas"][schema]["properties"]["value"]["maxLength"] == MAX_VALUE_CHARS
    responses = DOC["paths"]["/v1/classify"]["post"]["responses"]
    assert set(responses) == {"200", "400", "404", "413", "415", "503"}


@pytest.mark.parametrize(
    "body",
    [
        {"type": "FIRST_CELL"},
        {"type": 1, "value": None},
        {"type": "SESSION_PREFIX", "value": "cell-2"},
        {"type": 2, "value": "cell-9"},
        {"type": "CELL_ID", "value": "3"},
        {"type": "CELL_ID", "value": 4},
        {"type": 3, "value": "-1"},
    ],
)
def test_documented_requests_are_answered(body):
    assert REQUEST.is_valid(body)
    assert classify(SNAP, body).status in (200, 404)


@pytest.mark.parametrize(
    "body",
    [
        {"type": "CELL_ID", "value": "2", "claims": []},
        {"type": "SESSION_PREFIX", "value": 7},
        {"type": "CELL_ID", "value": "2\n"},
        {"type": "CELL_ID", "value": "1_000"},
        {"type": "CELL_ID", "value": 10**20},
        {"type": "SESSION_PREFIX", "value": "a" * (MAX_VALUE_CHARS + 1)},
        {"type": 0},
        {"type": True},
        [],
    ],
)
def test_undocumented_requests_are_refused(body):
    assert not REQUEST.is_valid(body)
    answer = classify(SNAP, body)
    assert answer.status == 400 and STATUS.is_valid(answer.body), answer.body


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**21), max_value=10**21)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["FIRST_CELL", "SESSION_PREFIX", "CELL_ID", "UNSPECIFIED", "cell-2", "3", "-3", "2\n", ""])
)
json_any = st.recursive(
    json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
)
near_request = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["FIRST_CELL", "SESSION_PREFIX", "CELL_ID", 0, 1, 2, 3, 4, 2.0, True]) | json_leaf,
        "value": json_leaf | st.text(min_size=MAX_VALUE_CHARS - 1, max_size=MAX_VALUE_CHARS + 1),
        "claims": json_leaf,
    },
)


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(near_request | json_any)
def test_schema_accepts_exactly_what_classify_accepts(body):
    """The document and the code cannot drift apart: valid by the schema iff not a 400, and every answer
    has its documented shape."""
    answer = classify(SNAP, body)
    assert REQUEST.is_valid(body) == (answer.status != 400), (body, answer.body)
    if answer.status == 200:
        assert CLASSIFY_RESPONSE.is_valid(answer.body)
    else:
        assert STATUS.is_valid(answer.body) and answer.body["code"] in (3, 5), answer.body
        assert len(answer.body["message"]) < 300  # a hostile value is never echoed whole


def test_body_limit_defaults_to_64_kib_and_is_configurable(monkeypatch):
    monkeypatch.delenv("CELLS_MAX_BODY_BYTES", raising=False)
    assert parse_args([]).max_body_bytes == DEFAULT_MAX_BODY == 64 * 1024
    monkeypatch.setenv("CELLS_MAX_BODY_BYTES", "1000")
    assert parse_args([]).max_body_bytes == 1000
    assert parse_args(["--max-body-bytes", "2000"]).max_body_bytes == 2000  # the flag wins over the env
    with pytest.raises(SystemExit):
        parse_args(["--max-body-bytes", "0"])
    assert build_app(Path("/nonexistent"), max_body=1234)._client_max_size == 1234
