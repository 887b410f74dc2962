"""The data-plane processes and their mounted files: readiness, hot reload without dropped requests, and
bad files rejected with the last good version kept. Real processes, real files; no cluster needed."""

from __future__ import annotations

import json
import os
import threading

from cells_devtools.devcluster.cluster import free_port
from cells_formats.records import Topology, render_topology_json
from cells_operator.topology import CellObject, plan_topology
from tests.support.dataplane import Process, echo_backend, request, router_argv, topology_service_argv, wait_http_ok
from tests.support.kubectl import eventually
from tests.support.prometheus import samples


def write_atomically(path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def records(*cells: tuple[int, str, str]) -> str:
    objs = [
        CellObject(f"c{i}", f"u{i}", {"id": i, "address": addr, "firstCell": i == 1, "state": state})
        for i, addr, state in cells
    ]
    return render_topology_json(plan_topology(Topology(), objs).records)


def classify(base: str, kind: str, value: str | None = None):
    body = {"type": kind} if value is None else {"type": kind, "value": value}
    return request(base + "/v1/classify", "POST", {"Content-Type": "application/json"}, json.dumps(body).encode())


def metric(text: str, name: str) -> float:
    found = samples(text, name)
    assert found, f"{name} not exported"
    return found[0].value


def test_topology_service_ready_only_when_loaded_and_keeps_last_good(tmp_path):
    path = tmp_path / "topology.json"
    port = free_port()
    ts = Process("ts", topology_service_argv(path, port, poll=0.1), tmp_path).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(base + "/healthz")
        assert request(base + "/readyz").status == 503  # no records yet
        assert classify(base, "FIRST_CELL").status == 503
        write_atomically(path, records((1, "a:1", "Active"), (2, "b:2", "Active")))
        wait_http_ok(base + "/readyz")
        assert classify(base, "CELL_ID", "2").json()["proxy"]["address"] == "b:2"

        path.write_text('{"cells": [{"name": "half-writ')  # a torn, half-written file
        eventually(
            lambda: metric(request(base + "/metrics").body.decode(), "topology_service_records_rejected_total") >= 1,
            message="rejection counted",
        )
        assert classify(base, "CELL_ID", "2").json()["proxy"]["address"] == "b:2"  # last good kept
        assert "keeping the last good version" in ts.logfile.read_text()

        # Offline cells are classified like the others, as GitLab's Topology Service does (ADR 0010)
        write_atomically(path, records((1, "a:1", "Active"), (2, "b:3", "Offline")))
        eventually(lambda: classify(base, "CELL_ID", "2").json()["proxy"]["address"] == "b:3", message="reloaded")
        missing = classify(base, "CELL_ID", "9")
        assert (missing.status, missing.json()) == (404, {"code": 5, "message": 'cell not found: "9"', "details": []})
    finally:
        ts.stop()


def test_router_reloads_without_dropping_requests_and_rejects_bad_rulesets(tmp_path):
    echo, echo_port = echo_backend("cell-x", tmp_path)
    rules = tmp_path / "rules.json"
    proxy_all = [{"action": "proxy", "proxy": {"address": f"127.0.0.1:{echo_port}"}}]
    write_atomically(rules, json.dumps(proxy_all))
    port, admin = free_port(), free_port()
    router = Process("router", router_argv(rules, "http://127.0.0.1:9", port, admin, poll=0.05), tmp_path).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"http://127.0.0.1:{admin}/readyz")
        failures: list[int] = []
        done = threading.Event()

        def load() -> None:
            while not done.is_set():
                r = request(base + "/x")
                if r.status != 200:
                    failures.append(r.status)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        admin_url = f"http://127.0.0.1:{admin}/metrics"
        reloads_before = metric(request(admin_url).body.decode(), "cells_router_rules_reloads_total")
        for i in range(20):  # 20 rewrites while requests flow: same routing, different bytes
            variant = [
                {
                    "match": {"type": "path", "regex_value": f"^/never-{i}$"},
                    "action": "proxy",
                    "proxy": {"address": "127.0.0.1:9"},
                },
                *proxy_all,
            ]
            write_atomically(rules, json.dumps(variant))
            # each version is loaded (and serving) before the next is written: every rewrite is a reload
            eventually(
                lambda i=i: (
                    metric(request(admin_url).body.decode(), "cells_router_rules_reloads_total")
                    >= reloads_before + i + 1
                ),
                message=f"rewrite {i} loaded",
            )
        done.set()
        for t in threads:
            t.join()
        assert failures == []
        assert metric(request(admin_url).body.decode(), "cells_router_rules_reloads_total") == reloads_before + 20

        rules.write_text('[{"action": "proxy"')  # broken
        eventually(
            lambda: (
                metric(request(f"http://127.0.0.1:{admin}/metrics").body.decode(), "cells_router_rules_rejected_total")
                >= 1
            ),
            message="bad ruleset rejected",
        )
        assert request(base + "/still-routed").status == 200

        write_atomically(
            rules,
            json.dumps(
                [
                    {
                        "match": {"type": "path", "regex_value": "^/only$"},
                        "action": "proxy",
                        "proxy": {"address": f"127.0.0.1:{echo_port}"},
                    }
                ]
            ),
        )
        eventually(lambda: request(base + "/other").status == 502, message="new ruleset in service")
        assert "no routing rule matched" in request(base + "/other").body.decode()
    finally:
        router.stop()
        echo.stop()
