"""Issue 13 end to end: API server + operator -> ConfigMaps -> files -> Topology Service and router processes
-> echo cells. The cell is told which rule routed it, as GitLab's router tells it; proxy rules without an
address reach the default upstream; Offline cells are classified as GitLab's Topology Service would."""

from __future__ import annotations

import json

import pytest

from tests.support.cells import cell_manifest
from tests.support.dataplane import (
    request,
)
from tests.support.kubectl import eventually
from tests.support.rules import rule_manifest as rule

RULESET = "fidelity"
RULES = {
    # upstream's session_token shape: force-cell cookie by SESSION_PREFIX, session cookie, fallback
    "force-cell": {
        "priority": 10,
        "match": {"type": "cookie", "regexName": "^force-cell$", "regexValue": r"^(?<cell_name>cell-\d+)$"},
        "action": "classify",
        "classify": {"type": "SESSION_PREFIX", "value": "${cell_name}"},
    },
    "session-cookie": {
        "priority": 20,
        "match": {"type": "cookie", "regexName": "^_gitlab_session(_[0-9a-f]+)?$", "regexValue": r"^(?<c>cell-\d+)-"},
        "action": "classify",
        "classify": {"type": "SESSION_PREFIX", "value": "${c}"},
    },
    "health": {"priority": 30, "match": {"type": "path", "regexValue": "^/-/health"}, "action": "proxy"},
    "pinned": {
        "priority": 40,
        "match": {"type": "path", "regexValue": "^/pinned/"},
        "action": "proxy",
        "proxy": {"cellRef": "cell-2"},
    },
    "fallback": {"priority": 1000, "action": "classify", "classify": {"type": "FIRST_CELL"}},
}


@pytest.fixture
def edge(data_plane, namespace):
    plane = data_plane
    plane.echo_cells("cell-1", "cell-2", "cell-3", "default-upstream")
    cells = [
        cell_manifest("cell-1", 1, address=f"localhost:{plane.ports['cell-1']}", firstCell=True),  # a hostname
        cell_manifest("cell-2", 2, address=plane.local("cell-2")),
        cell_manifest("cell-3", 3, address=plane.local("cell-3")),
    ]
    plane.register(cells, [rule(name, {"ruleset": RULESET, **spec}) for name, spec in RULES.items()])
    rules_file, records_file = plane.mount(RULESET)
    topology = plane.topology_service(records_file, max_age=1, negative_max_age=1, poll=0.2)
    routers = {
        name: plane.router(name, rules_file, topology, cache_ttl=1, negative_ttl=1, poll=0.2, **options)[0]
        for name, options in (
            ("router", {}),
            ("router-with-default", {"default_upstream": plane.local("default-upstream")}),
        )
    }
    return {**routers, "topology": topology, "records": records_file, "namespace": namespace}


def through(base: str, path: str = "/", cookie: str | None = None, **headers: str) -> tuple[str, dict, dict]:
    """(cell that answered, headers the cell received (lower-case names), response headers)."""
    if cookie:
        headers["Cookie"] = cookie
    r = request(base + path, headers=headers)
    assert r.status == 200, (r.status, r.body)
    body = r.json()
    return body["cell"], {k.lower(): v for k, v in body["headers"].items()}, r.headers


ACTION = "x-gitlab-http-router-rule-action"
TYPE = "x-gitlab-http-router-rule-type"


def test_the_cell_is_told_which_rule_routed_it(edge):
    cell, seen, response = through(edge["router"], cookie="_gitlab_session=cell-2-0123")
    assert cell == "cell-2"
    assert (seen[ACTION], seen[TYPE]) == ("classify", "SESSION_PREFIX")
    assert (response["X-Cells-Router-Rule-Action"], response["X-Cells-Router-Rule-Type"]) == (
        "classify",
        "SESSION_PREFIX",
    )  # the debugging aid on the response stays

    cell, seen, _ = through(edge["router"], cookie="_gitlab_session=cell-2-0123; force-cell=cell-3")
    assert (cell, seen[ACTION], seen[TYPE]) == ("cell-3", "classify", "SESSION_PREFIX")

    cell, seen, _ = through(edge["router"], "/explore")
    assert (cell, seen[ACTION], seen[TYPE]) == ("cell-1", "classify", "FIRST_CELL")  # via hostname localhost

    # proxy: the action and no type, even when the client sent its own values
    cell, seen, _ = through(
        edge["router"],
        "/pinned/x",
        **{"X-Gitlab-Http-Router-Rule-Action": "classify", "X-Gitlab-Http-Router-Rule-Type": "CELL_ID"},
    )
    assert (cell, seen[ACTION]) == ("cell-2", "proxy")
    assert TYPE not in seen


def test_proxy_without_address_goes_to_the_default_upstream(edge):
    cell, seen, _ = through(edge["router"], "/-/health")
    assert (cell, seen[ACTION]) == ("cell-1", "proxy")  # no --default-upstream: the first cell
    assert TYPE not in seen
    cell, seen, _ = through(edge["router-with-default"], "/-/health")
    assert (cell, seen[ACTION]) == ("default-upstream", "proxy")
    assert through(edge["router-with-default"], "/explore")[0] == "cell-1"  # other rules unaffected


def test_offline_cell_is_still_classified_as_upstream_would(edge, kubectl):
    ns = edge["namespace"]
    kubectl.merge_patch("cell", "cell-3", ns, {"spec": {"state": "Offline"}})
    eventually(
        lambda: any(c["state"] == "Offline" for c in json.loads(edge["records"].read_text())["cells"]),
        message="Offline reaches the Topology Service's file",
    )
    cm = kubectl.get("configmap", "cells-topology", ns)
    assert "id = 3" in cm["data"]["config.toml"]
    cell, seen, _ = through(edge["router"], cookie="force-cell=cell-3")
    assert (cell, seen[TYPE]) == ("cell-3", "SESSION_PREFIX")


def test_classify_takes_enum_numbers_and_answers_not_found_like_the_gateway(edge):
    def classify(body):
        return request(
            edge["topology"] + "/v1/classify", "POST", {"Content-Type": "application/json"}, json.dumps(body).encode()
        )

    assert classify({"type": 3, "value": "2"}).json()["proxy"]["address"].startswith("127.0.0.1:")
    assert classify({"type": 1}).json()["proxy"]["address"].startswith("localhost:")
    missing = classify({"type": 2, "value": "cell-9"})
    assert (missing.status, missing.json()) == (404, {"code": 5, "message": 'cell not found: "cell-9"', "details": []})
    assert classify({"type": 0, "value": "2"}).status == 400
