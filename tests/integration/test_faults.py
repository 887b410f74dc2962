"""Faults survived, nothing lost: the operator SIGKILLed mid-burst, the API server restarted mid-burst."""

from __future__ import annotations

import itertools
import json
import time

from tests.support.cells import cell_manifest, ready_condition, records
from tests.support.kubectl import eventually
from tests.support.rules import CATCH_ALL, SESSION
from tests.support.rules import rule_manifest as rule


def burst(n_cells: int, n_rules: int, invalid_every: int = 0) -> tuple[list[dict], list[dict]]:
    cells = [cell_manifest(f"c{i:03}", i, firstCell=i == 1) for i in range(1, n_cells + 1)]
    rules = [rule(f"r{i:03}", {**SESSION, "priority": i}) for i in range(n_rules - 1)]
    if invalid_every:
        for r in rules[::invalid_every]:
            r["spec"] = {**r["spec"], "classify": {"type": "SESSION_PREFIX", "value": "${unknown}"}}
    rules.append(rule("zz-catch-all", CATCH_ALL))
    return cells, rules


def assert_converged(kubectl, namespace: str, n_cells: int, rules: list[dict]) -> None:
    def converged():
        cells = kubectl.get("cells", namespace=namespace)["items"]
        rrs = kubectl.get("routingrules", namespace=namespace)["items"]
        done = len(cells) == n_cells and all(ready_condition(c).get("status") == "True" for c in cells)
        settled = len(rrs) == len(rules) and all(
            (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"] for o in rrs
        )
        return done and settled

    eventually(converged, timeout=240, interval=1, message="everything converged")
    topology, config = records(kubectl, namespace)
    assert len(topology["cells"]) == n_cells and len(config["cells"]) == n_cells
    ranges = sorted((r["minval"], r["maxval"]) for c in topology["cells"] for r in c["sequence_ranges"])
    assert len(ranges) == n_cells, "every cell has exactly one range"
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges)), "overlapping ranges"
    for cell in kubectl.get("cells", namespace=namespace)["items"]:
        published = next(c for c in topology["cells"] if c["name"] == cell["metadata"]["name"])
        assert cell["status"]["sequenceRanges"] == published["sequence_ranges"]
    valid = [r for r in rules if "${unknown}" not in json.dumps(r["spec"])]
    cm = kubectl.get("configmap", "cells-router-rules", namespace)
    assert len(json.loads(cm["data"]["session_token.json"])) == len(valid), (
        "router ConfigMap holds exactly the valid rules"
    )


def test_operator_sigkilled_mid_burst_converges_without_reallocating(kubectl, namespace, operator):
    cells, rules = burst(50, 500, invalid_every=50)
    kubectl.apply(cells[:25], namespace)
    eventually(lambda: len(records(kubectl, namespace)[0]["cells"]) >= 1, message="first registrations")
    kubectl.apply(cells[25:], namespace)
    kubectl.apply(rules[:250], namespace)
    operator.kill()  # SIGKILL in the middle of the burst
    before = {c["name"]: c["sequence_ranges"] for c in records(kubectl, namespace)[0]["cells"]}
    kubectl.apply(rules[250:], namespace)
    operator.start()
    assert_converged(kubectl, namespace, 50, rules)
    after = {c["name"]: c["sequence_ranges"] for c in records(kubectl, namespace)[0]["cells"]}
    for name, ranges in before.items():
        assert after[name] == ranges, f"{name} was re-allocated after the crash"


def test_apiserver_restart_mid_burst_reconnects_without_operator_restart(kubectl, namespace, operator, control_plane):
    if not hasattr(control_plane, "restart_apiserver"):
        import pytest

        pytest.skip("needs the local control plane (the API server is restarted)")  # e2e on foreign clusters
    cells, rules = burst(30, 100)
    kubectl.apply(cells[:15], namespace)
    kubectl.apply(rules[:50], namespace)
    # the operator is serving (it registered a cell) and the burst is still being processed
    eventually(lambda: len(records(kubectl, namespace)[0]["cells"]) >= 1, message="operator serving")
    control_plane.restart_apiserver()
    time.sleep(1)
    kubectl.apply(cells[15:], namespace)
    kubectl.apply(rules[50:], namespace)
    assert_converged(kubectl, namespace, 30, rules)
    assert operator.running(), "the operator must not have restarted"
