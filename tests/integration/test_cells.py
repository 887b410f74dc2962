"""Issue 3 on the real control plane: Cells in, Topology Service records and status out."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from tests.support.audit import audit_writes
from tests.support.cells import (
    cell_manifest,
    events_for,
    ready_condition,
    records,
    wait_ready,
    wait_reason,
)
from tests.support.kubectl import eventually
from tests.support.operator import metric_value

SIZE = 100_000_000_000


def ranges_of(topology: dict) -> dict[str, list[tuple[int, int]]]:
    return {c["name"]: [(r["minval"], r["maxval"]) for r in c["sequence_ranges"]] for c in topology["cells"]}


def assert_disjoint(all_ranges: list[tuple[int, int]]) -> None:
    ordered = sorted(all_ranges)
    for (a_min, a_max), (b_min, b_max) in itertools.pairwise(ordered):
        assert a_max < b_min, f"overlap: [{a_min}, {a_max}] and [{b_min}, {b_max}]"


def test_fifty_cells_at_once_get_unique_disjoint_ranges(kubectl, namespace, operator):
    kubectl.apply([cell_manifest(f"cell-{i}", i) for i in range(1, 51)], namespace)

    def all_ready():
        items = kubectl.get("cells", namespace=namespace)["items"]
        return len(items) == 50 and all(ready_condition(o).get("status") == "True" for o in items) and items

    items = eventually(all_ready, timeout=120, message="50 cells Ready")
    topology, config = records(kubectl, namespace)
    published = ranges_of(topology)
    assert len(published) == 50
    assert_disjoint([r for rs in published.values() for r in rs])
    assert all(rs[0][1] - rs[0][0] + 1 == SIZE for rs in published.values())
    # status reports exactly what is published
    for obj in items:
        status_ranges = [(r["minval"], r["maxval"]) for r in obj["status"]["sequenceRanges"]]
        assert status_ranges == published[obj["metadata"]["name"]]
    assert sorted(c["id"] for c in config["cells"]) == list(range(1, 51))
    assert {c["session_prefix"] for c in config["cells"]} == {f"cell-{i}" for i in range(1, 51)}


def test_printer_columns_events_and_finalizer(kubectl, namespace, operator):
    kubectl.apply(cell_manifest("alpha", 7, ring=1), namespace)
    obj = wait_ready(kubectl, "cell", "alpha", namespace)
    assert "cells.dev/topology" in obj["metadata"]["finalizers"]
    table = kubectl("get", "cells", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "ID", "PREFIX", "STATE", "READY", "ADDRESS", "AGE"]
    assert table[1].split()[:5] == ["alpha", "7", "cell-7", "Active", "True"]
    assert kubectl("get", "cl", "-n", namespace, "-o", "name").stdout.strip() == "cell.cells.dev/alpha"
    reasons = eventually(
        lambda: {e["reason"] for e in events_for(kubectl, namespace, "alpha")} or None, message="Registered event"
    )
    assert "Registered" in reasons
    described = kubectl("describe", "cell", "alpha", "-n", namespace).stdout
    assert "Registered" in described and "sequence ranges" in described


def test_edits_reach_the_records(kubectl, namespace, operator):
    kubectl.apply(cell_manifest("c1", 1, firstCell=True), namespace)
    kubectl.apply(cell_manifest("c2", 2), namespace)
    wait_ready(kubectl, "cell", "c2", namespace)
    before, _ = records(kubectl, namespace)

    kubectl.merge_patch("cell", "c2", namespace, {"spec": {"address": "10.1.2.3:9000", "state": "Offline"}})
    obj = wait_ready(kubectl, "cell", "c2", namespace)
    assert obj["status"]["state"] == "Offline"
    topology, config = records(kubectl, namespace)
    c2 = next(c for c in topology["cells"] if c["name"] == "c2")
    assert (c2["address"], c2["state"]) == ("10.1.2.3:9000", "Offline")
    assert [c["id"] for c in config["cells"]] == [1, 2]  # Offline stays in the authoritative record (ADR 0010)
    assert topology["revision"] > before["revision"]
    assert ranges_of(topology) == ranges_of(before)  # edits never move ranges

    kubectl.merge_patch("cell", "c2", namespace, {"spec": {"state": "Draining"}})
    eventually(
        lambda: next(c for c in records(kubectl, namespace)[0]["cells"] if c["name"] == "c2")["state"] == "Draining",
        message="draining published",
    )


def test_unchanged_records_are_not_rewritten(kubectl, namespace, operator, control_plane):
    kubectl.apply(cell_manifest("c1", 1), namespace)
    wait_ready(kubectl, "cell", "c1", namespace)
    rv = kubectl.get("configmap", "cells-topology", namespace)["metadata"]["resourceVersion"]

    def operator_writes() -> int:
        """The operator's writes in this namespace, from the API server's audit log (the operator also
        serves the namespaces of earlier tests, still being deleted: its global write counter moves)."""
        events = audit_writes(control_plane.logdir, namespace)
        return sum(1 for e in events if e.get("userAgent", "").startswith("cells-operator/"))

    # a no-op change to the Cell (a label) triggers a reconcile that must not write anything
    writes = operator_writes()
    kubectl("label", "cell", "c1", "-n", namespace, "touched=yes")
    labelled = time.time()  # the label is stored: a pass that starts later reads it

    def pass_after_the_label_finished():
        m = operator.scrape()
        started = metric_value(m, "cells_operator_reconcile_last_start_timestamp_seconds", namespace=namespace)
        confirmed = metric_value(
            m, "cells_operator_publish_last_success_timestamp_seconds", namespace=namespace, output="records"
        )
        return started > labelled and confirmed >= started and m

    eventually(pass_after_the_label_finished, message="a reconcile that read the label")
    assert operator_writes() == writes  # it ran, and wrote nothing
    assert kubectl.get("configmap", "cells-topology", namespace)["metadata"]["resourceVersion"] == rv


BAD_INPUTS = [
    ("duplicate-id", {"id": 1}, "DuplicateId"),
    ("duplicate-prefix", {"id": 9, "sessionPrefix": "cell-1"}, "DuplicateSessionPrefix"),
    ("overlap", {"id": 9, "sequenceRanges": [{"minval": 50, "maxval": 50 + SIZE}]}, "RangeOverlap"),
    ("too-small", {"id": 9, "sequenceSize": 1000}, "RangeTooSmall"),
    (  # refused by the CRD's CEL rule (ADR 0012)
        "inverted",
        {"id": 9, "skipRangeValidation": True, "sequenceRanges": [{"minval": 9 * SIZE, "maxval": 5}]},
        None,
    ),
    ("second-first", {"id": 9, "firstCell": True}, "DuplicateFirstCell"),
    ("bad-address", {"id": 9, "address": "::1:8080"}, None),  # rejected by the CRD schema itself (IPv6 needs [])
]


@pytest.mark.parametrize(("name", "spec", "reason"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_stalled_never_published_and_fixable(kubectl, namespace, operator, name, spec, reason):
    kubectl.apply(cell_manifest("good", 1, firstCell=True), namespace)
    wait_ready(kubectl, "cell", "good", namespace)
    before, config_before = records(kubectl, namespace)

    spec = dict(spec)
    manifest = cell_manifest(name, spec.pop("id"), **spec)
    if reason is None:
        proc = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False)
        field = "spec.sequenceRanges[0]" if "sequenceRanges" in spec else "spec.address"
        assert proc.returncode != 0 and field in proc.stderr, proc.stderr
        return
    kubectl.apply(manifest, namespace)
    obj = wait_reason(kubectl, "cell", name, namespace, reason)
    conds = {c["type"]: c for c in obj["status"]["conditions"]}
    assert conds["Ready"]["status"] == "False"
    assert conds["Stalled"]["status"] == "True" and conds["Stalled"]["reason"] == reason
    assert conds["Stalled"]["message"]
    topology, config = records(kubectl, namespace)
    assert name not in ranges_of(topology)
    assert config == config_before
    assert ranges_of(topology) == ranges_of(before)
    warning = eventually(
        lambda: [e for e in events_for(kubectl, namespace, name) if e["reason"] == reason],
        message=f"Warning event {reason}",
    )
    assert warning[0]["type"] == "Warning"

    # fixing the input clears the condition by itself
    kubectl.apply(cell_manifest(name, 9), namespace)
    obj = wait_ready(kubectl, "cell", name, namespace)
    assert {c["type"]: c["status"] for c in obj["status"]["conditions"]}["Stalled"] == "False"


def test_immutable_id_and_allocated_range(kubectl, namespace, operator):
    """The API server itself refuses a changed id or a dropped range of a registered Cell (the CRD's CEL
    rules, ADR 0012); the registration stays as it was, and growing the ranges is allowed."""
    kubectl.apply(cell_manifest("c1", 1), namespace)
    obj = wait_ready(kubectl, "cell", "c1", namespace)
    allocated = obj["status"]["sequenceRanges"]
    before, _ = records(kubectl, namespace)

    proc = kubectl.merge_patch("cell", "c1", namespace, {"spec": {"id": 5}}, check=False)
    assert proc.returncode != 0 and "(IdImmutable)" in proc.stderr, proc.stderr
    assert kubectl.get("cell", "c1", namespace)["spec"]["id"] == 1
    assert records(kubectl, namespace)[0]["cells"] == before["cells"]  # old registration stays

    moved = [{"minval": 7 * SIZE, "maxval": 8 * SIZE}]
    proc = kubectl.merge_patch("cell", "c1", namespace, {"spec": {"sequenceRanges": moved}}, check=False)
    assert proc.returncode != 0 and "(RangeImmutable)" in proc.stderr, proc.stderr
    assert records(kubectl, namespace)[0]["cells"] == before["cells"]

    grown = [*allocated, {"minval": 7 * SIZE, "maxval": 8 * SIZE}]
    kubectl.merge_patch("cell", "c1", namespace, {"spec": {"sequenceRanges": grown}})
    obj = wait_ready(kubectl, "cell", "c1", namespace)
    assert obj["status"]["sequenceRanges"] == grown


def test_delete_without_blockers_retires_ranges(kubectl, namespace, operator):
    kubectl.apply([cell_manifest("c1", 1, firstCell=True), cell_manifest("c2", 2)], namespace)
    obj = wait_ready(kubectl, "cell", "c2", namespace)
    c2_ranges = obj["status"]["sequenceRanges"]
    kubectl("delete", "cell", "c2", "-n", namespace, "--timeout=60s")
    topology, config = records(kubectl, namespace)
    assert [c["name"] for c in topology["cells"]] == ["c1"]
    assert [{"minval": r["minval"], "maxval": r["maxval"]} for r in topology["retired_ranges"]] == c2_ranges
    assert [c["id"] for c in config["cells"]] == [1]
    # a retired range is never handed out again, neither by allocation nor explicitly
    kubectl.apply(cell_manifest("c3", 3), namespace)
    new = wait_ready(kubectl, "cell", "c3", namespace)["status"]["sequenceRanges"][0]
    assert new["minval"] > c2_ranges[0]["maxval"]
    kubectl.apply(cell_manifest("c4", 4, sequenceRanges=c2_ranges), namespace)
    obj = wait_reason(kubectl, "cell", "c4", namespace, "RangeOverlap")
    assert "retired range" in ready_condition(obj)["message"]


def test_delete_held_while_routed_to_or_first_cell(kubectl, namespace, operator):
    kubectl.apply([cell_manifest("first", 1, firstCell=True), cell_manifest("pinned", 2)], namespace)
    wait_ready(kubectl, "cell", "pinned", namespace)
    wait_ready(kubectl, "cell", "first", namespace)
    rule = {
        "apiVersion": "cells.dev/v1alpha1",
        "kind": "RoutingRule",
        "metadata": {"name": "pin"},
        "spec": {
            "ruleset": "session_token",
            "priority": 1,
            "action": "proxy",
            "proxy": {"cellRef": "pinned"},
            "match": {"type": "header", "regexName": "^x-pin$", "regexValue": ".*"},
        },
    }
    kubectl.apply(rule, namespace)
    kubectl("delete", "cell", "pinned", "first", "-n", namespace, "--wait=false")

    obj = wait_reason(kubectl, "cell", "pinned", namespace, "DeletionBlocked")
    assert "'pin'" in ready_condition(obj)["message"]
    assert {c["type"]: c["status"] for c in obj["status"]["conditions"]}["Reconciling"] == "True"
    first = wait_reason(kubectl, "cell", "first", namespace, "DeletionBlocked")
    assert "first cell" in ready_condition(first)["message"]
    assert sorted(c["name"] for c in records(kubectl, namespace)[0]["cells"]) == ["first", "pinned"]
    eventually(
        lambda: any(e["reason"] == "DeletionBlocked" for e in events_for(kubectl, namespace, "pinned")),
        message="DeletionBlocked event",
    )

    kubectl("delete", "routingrule", "pin", "-n", namespace)
    eventually(lambda: kubectl.get_or_none("cell", "pinned", namespace) is None, message="pinned deleted")
    assert kubectl.get_or_none("cell", "first", namespace) is not None
    assert [c["name"] for c in records(kubectl, namespace)[0]["cells"]] == ["first"]


def test_operator_restart_midway_reallocates_nothing(kubectl, namespace, operator):
    kubectl.apply([cell_manifest(f"c{i}", i) for i in range(1, 11)], namespace)
    eventually(lambda: len(records(kubectl, namespace)[0]["cells"]) >= 1, message="first registrations")
    operator.kill()
    seen = ranges_of(records(kubectl, namespace)[0])
    kubectl.apply([cell_manifest(f"c{i}", i) for i in range(11, 21)], namespace)
    operator.start()

    def converged():
        items = kubectl.get("cells", namespace=namespace)["items"]
        return len(items) == 20 and all(ready_condition(o).get("status") == "True" for o in items)

    eventually(converged, timeout=90, message="20 cells Ready after restart")
    after = ranges_of(records(kubectl, namespace)[0])
    assert len(after) == 20
    for name, rs in seen.items():
        assert after[name] == rs, f"{name} was re-allocated"
    assert_disjoint([r for rs in after.values() for r in rs])


def test_deleting_the_whole_namespace_is_not_held_by_finalizers(kubectl, operator):
    """Deleting a topology's namespace deletes its first cell too: the finalizers must not hold it forever."""
    kubectl("create", "namespace", "doomed-topology")
    kubectl.apply([cell_manifest("first", 1, firstCell=True), cell_manifest("second", 2)], "doomed-topology")
    wait_ready(kubectl, "cell", "first", "doomed-topology")
    wait_ready(kubectl, "cell", "second", "doomed-topology")
    kubectl("delete", "namespace", "doomed-topology", "--wait=false")
    eventually(
        lambda: kubectl("get", "namespace", "doomed-topology", check=False).returncode != 0,
        timeout=180,
        interval=1,
        message="namespace gone",
    )
