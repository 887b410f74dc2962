"""Issue 5, end to end with real everything: API server + operator -> ConfigMaps -> files (as a kubelet
mounts them) -> Topology Service and router processes -> echo cells. A request lands on the right cell."""

from __future__ import annotations

import hashlib
import http.client
import json
import time

import pytest

from tests.support.cells import cell_manifest
from tests.support.dataplane import (
    HttpResult,
    request,
)
from tests.support.kubectl import eventually
from tests.support.operator import metric_value
from tests.support.rules import SAMPLE_SPECS
from tests.support.rules import rule_manifest as rule
from tests.support.tokens import basic_authorization, job_token, personal_access_token, runner_token


@pytest.fixture
def stack(data_plane, namespace):
    """Three echo cells registered through the API, the demo rules, and the data plane reading the files."""
    plane = data_plane
    plane.echo_cells("cell-1", "cell-2", "cell-3", "cell-2b")
    cells = [
        cell_manifest("cell-1", 1, address=plane.local("cell-1"), firstCell=True),
        cell_manifest("cell-2", 2, address=plane.local("cell-2")),
        cell_manifest("cell-3", 3, address=plane.local("cell-3")),
    ]
    plane.register(cells, [rule(name, spec) for name, spec in SAMPLE_SPECS.items()])
    rules_file, records_file = plane.mount("session_token")
    topology = plane.topology_service(records_file, max_age=1, negative_max_age=1, poll=0.2)
    router, admin = plane.router(
        "router", rules_file, topology, cache_ttl=1, negative_ttl=1, poll=0.2, upstream_timeout=2
    )
    return {
        "router": router,
        "admin": admin,
        "topology": topology,
        "ports": plane.ports,
        "procs": plane.procs,
        "namespace": namespace,
    }


def get(stack, path="/", cookie=None, **kwargs):
    headers = kwargs.pop("headers", {})
    if cookie:
        headers["Cookie"] = cookie
    return request(stack["router"] + path, headers=headers, **kwargs)


def lands_on(stack, cell, **kwargs):
    def probe():
        result = get(stack, **kwargs)
        return result if result.cell == cell else None

    return eventually(probe, timeout=30, interval=0.3, message=f"request lands on {cell}")


def test_requests_land_on_the_right_cell(stack):
    r = get(stack, cookie="_gitlab_session=cell-2-0123abcd")
    assert (r.status, r.cell) == (200, "cell-2")
    assert r.headers["X-Cells-Router-Rule-Action"] == "classify"
    assert r.headers["X-Cells-Router-Rule-Type"] == "SESSION_PREFIX"

    r = get(stack, cookie="_gitlab_session=cell-2-0123abcd; force-cell=cell-3")
    assert (r.cell, r.headers["X-Cells-Router-Rule-Type"]) == ("cell-3", "SESSION_PREFIX")

    r = get(stack, "/api/v4/cells/3/projects?page=2")
    assert r.cell == "cell-3" and r.json()["path"] == "/api/v4/cells/3/projects" and r.json()["query"] == "page=2"

    r = get(stack)
    assert (r.cell, r.headers["X-Cells-Router-Rule-Type"]) == ("cell-1", "FIRST_CELL")

    r = get(stack, cookie="_gitlab_session=cell-99-abc")  # a session of a cell that does not exist
    assert r.status == 502 and "cell not found" in r.body.decode()


def test_proxying_streams_bodies_and_handles_headers(stack):
    payload = bytes(range(256)) * 20_000  # 5 MB
    # http.client, not urllib: urllib replaces the Connection header with its own
    conn = http.client.HTTPConnection(stack["router"].removeprefix("http://"), timeout=15)
    conn.request(
        "POST",
        "/upload?x=1",
        body=payload,
        headers={
            "Cookie": "_gitlab_session=cell-2-ab",
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "hop",
            "X-Keep": "end-to-end",
        },
    )
    raw = conn.getresponse()
    r = HttpResult(raw.status, dict(raw.getheaders()), raw.read())
    conn.close()
    body = r.json()
    assert (r.status, body["cell"], body["method"]) == (200, "cell-2", "POST")
    assert body["body_bytes"] == len(payload) and body["body_sha256"] == hashlib.sha256(payload).hexdigest()
    sent = {k.lower(): v for k, v in body["headers"].items()}
    assert sent["x-keep"] == "end-to-end" and "x-drop-me" not in sent
    assert sent["x-forwarded-for"] == "127.0.0.1" and sent["x-forwarded-proto"] == "http"
    assert sent["x-forwarded-host"].startswith("127.0.0.1:")
    assert "X-Secret-Hop" not in r.headers  # listed in the cell's Connection header: hop-by-hop

    streamed = get(stack, "/stream?chunks=4&pause=0.1", cookie="_gitlab_session=cell-3-x")
    assert streamed.body.decode().splitlines() == [f"chunk {i} from cell-3" for i in range(4)]


def test_api_changes_move_traffic_without_restarts(stack, kubectl):
    ns, ports = stack["namespace"], stack["ports"]
    lands_on(stack, "cell-2", cookie="_gitlab_session=cell-2-a")
    kubectl.merge_patch("cell", "cell-2", ns, {"spec": {"address": f"127.0.0.1:{ports['cell-2b']}"}})
    lands_on(stack, "cell-2b", cookie="_gitlab_session=cell-2-a")

    kubectl("delete", "routingrule", "force-cell", "-n", ns)
    lands_on(stack, "cell-2b", cookie="force-cell=cell-3; _gitlab_session=cell-2-a")  # force cookie no longer wins

    kubectl("delete", "routingrule", "catch-all", "-n", ns)
    eventually(lambda: get(stack).status == 502, timeout=30, message="no rule matches without the catch-all")
    assert "no routing rule matched" in get(stack).body.decode()
    for p in stack["procs"].values():
        assert p.proc.poll() is None, f"{p.name} restarted or died"


def stale_answers(stack) -> float:
    metrics = request(stack["admin"] + "/metrics").body.decode()
    return metric_value(metrics, "cells_router_classify_cache_total", result="stale") or 0.0


def test_topology_service_down_serves_cached_decisions(stack):
    warm = get(stack, cookie="_gitlab_session=cell-2-warm")
    assert warm.cell == "cell-2"
    before = stale_answers(stack)
    stack["procs"]["topology-service"].stop()
    time.sleep(1.5)  # past the router's cache TTL (1 s): only stale-if-error can answer from here on
    r = get(stack, cookie="_gitlab_session=cell-2-warm")
    assert (r.status, r.cell) == (200, "cell-2")
    assert stale_answers(stack) == before + 1, "answered stale during the outage, not fresh from the cache"
    cold = get(stack, "/api/v4/cells/3/never-asked-before")
    assert cold.status == 503 and "topology service unavailable" in cold.body.decode()
    metrics = request(stack["admin"] + "/metrics").body.decode()
    assert 'cells_router_requests_total{action="classify",code="200",type="SESSION_PREFIX"}' in metrics


def test_unreachable_and_slow_cells_are_answered_not_hung(stack):
    stack["procs"]["echo-cell-3"].stop()
    r = get(stack, cookie="force-cell=cell-3")
    assert r.status == 502 and "cell unreachable" in r.body.decode()
    r = get(stack, "/slow?seconds=5", cookie="force-cell=cell-2")
    assert r.status == 504 and "timed out" in r.body.decode()


def test_topology_service_api(stack):
    ts = stack["topology"]
    ok = request(
        ts + "/v1/classify",
        "POST",
        {"Content-Type": "application/json"},
        json.dumps({"type": "CELL_ID", "value": "2"}).encode(),
    )
    assert ok.status == 200 and ok.json() == {
        "action": "PROXY",
        "proxy": {"address": f"127.0.0.1:{stack['ports']['cell-2']}"},
    }
    assert ok.headers["Cache-Control"] == "max-age=1"
    missing = request(
        ts + "/v1/classify", "POST", {}, json.dumps({"type": "SESSION_PREFIX", "value": "cell-9"}).encode()
    )
    assert missing.status == 404 and missing.json() == {"code": 5, "message": 'cell not found: "cell-9"', "details": []}
    bad = request(ts + "/v1/classify", "POST", {}, b"{nope")
    assert bad.status == 400 and bad.json()["code"] == 3
    cells = request(ts + "/v1/cells").json()
    assert [c["id"] for c in cells["cells"]] == [1, 2, 3]
    assert request(ts + "/v1/cells/2").json()["session_prefix"] == "cell-2"
    assert request(ts + "/v1/cells/42").status == 404
    metrics = request(ts + "/metrics").body.decode()
    assert "topology_service_records_revision" in metrics and "topology_service_requests_total" in metrics


def test_api_tokens_minted_for_cell_2_reach_cell_2(stack):
    """Issue 18: every routable kind, generated for cell 2 (never copied tokens), through the operator's
    published current-dialect rules and the router: cell 2 answers and sees ``CELL_ID`` as the rule type."""
    pat = personal_access_token(2, 1, 1234)
    kinds = {
        "PRIVATE-TOKEN": {"PRIVATE-TOKEN": pat},
        "Authorization: Bearer": {"Authorization": f"Bearer {pat}"},
        "RUNNER-TOKEN": {"RUNNER-TOKEN": runner_token(2, 1, group=77)},
        "JOB-TOKEN": {"JOB-TOKEN": job_token(2, 1, 1234, project=5)},
        "Basic password (PAT)": {"Authorization": basic_authorization("oauth2", pat)},
        "Basic password (job token)": {"Authorization": basic_authorization("gitlab-ci-token", job_token(2, 1, 9))},
    }
    for kind, headers in kinds.items():
        r = get(stack, "/api/v4/user", headers=dict(headers))
        assert (r.status, r.cell) == (200, "cell-2"), kind
        sent = {k.lower(): v for k, v in r.json()["headers"].items()}
        assert sent["x-gitlab-http-router-rule-type"] == "CELL_ID", kind
        assert sent["x-gitlab-http-router-rule-action"] == "classify", kind
    # A token without a cell id falls through to the catch-all: the first cell.
    r = get(stack, "/api/v4/user", headers={"PRIVATE-TOKEN": personal_access_token(None, 1, 1234)})
    assert (r.cell, r.headers["X-Cells-Router-Rule-Type"]) == ("cell-1", "FIRST_CELL")
