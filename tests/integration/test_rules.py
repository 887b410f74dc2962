"""Issue 4 on the real control plane: RoutingRules in, router rules ConfigMap and status out."""

from __future__ import annotations

import json

import pytest

from tests.support.audit import audit_writes
from tests.support.cells import cell_manifest, events_for, ready_condition, wait_ready, wait_reason
from tests.support.kubectl import eventually
from tests.support.operator import metric_value
from tests.support.rules import CATCH_ALL, FORCE, PATH, SESSION
from tests.support.rules import rule_manifest as rule


def published(kubectl, namespace: str, ruleset: str = "session_token") -> list | None:
    cm = kubectl.get_or_none("configmap", "cells-router-rules", namespace)
    if cm is None or f"{ruleset}.json" not in (cm.get("data") or {}):
        return None
    return json.loads(cm["data"][f"{ruleset}.json"])


def test_gitlab_session_rules_end_to_end(kubectl, namespace, operator):
    kubectl.apply([cell_manifest("cell-1", 1, firstCell=True), cell_manifest("cell-2", 2)], namespace)
    kubectl.apply(
        [rule("catch-all", CATCH_ALL), rule("path", PATH), rule("session", SESSION), rule("force-cell", FORCE)],
        namespace,
    )
    statuses = {
        n: wait_ready(kubectl, "routingrule", n, namespace)["status"]
        for n in ("force-cell", "session", "path", "catch-all")
    }
    rules = published(kubectl, namespace)
    assert rules == [
        {
            "id": "force-cell",
            "match": {"type": "cookie", "regexName": "^force-cell$", "regexValue": r"^(?<cell_name>cell-\d+)$"},
            "action": "classify",
            "classify": {"type": "SESSION_PREFIX", "value": "${cell_name}"},
        },
        {
            "id": "session",
            "match": {
                "type": "cookie",
                "regexName": "^_gitlab_session(_[0-9a-f]+)?$",
                "regexValue": r"^(?<cell_name>cell-\d+)-.*",
            },
            "action": "classify",
            "classify": {"type": "SESSION_PREFIX", "value": "${cell_name}"},
        },
        {
            "id": "path",
            "match": {"type": "path", "regexValue": r"^/api/v4/cells/(?<cell_id>\d+)/"},
            "action": "classify",
            "classify": {"type": "CELL_ID", "value": "${cell_id}"},
        },
        {"id": "catch-all", "action": "classify", "classify": {"type": "FIRST_CELL"}},
    ]
    assert [statuses[n]["position"] for n in ("force-cell", "session", "path", "catch-all")] == [0, 1, 2, 3]
    cm = kubectl.get("configmap", "cells-router-rules", namespace)
    assert cm["metadata"]["annotations"]["rules.cells.dev/session_token"] == statuses["session"]["contentHash"]
    conds = {c["type"]: c["status"] for c in statuses["session"]["conditions"]}
    assert conds == {"Ready": "True", "Reconciling": "False", "Stalled": "False", "RulesetComplete": "True"}
    table = kubectl("get", "routingrules", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "RULESET", "PRIORITY", "ACTION", "READY", "AGE"]


INVALID = [
    (
        "bad-pattern",
        {**SESSION, "match": {**SESSION["match"], "regexValue": "^(?<cell_name>cell-\\d+"}},
        "InvalidPattern",
    ),
    ("unknown-group", {**SESSION, "classify": {"type": "SESSION_PREFIX", "value": "${nope}"}}, "UnknownInterpolation"),
    ("no-name", {**SESSION, "match": {"type": "header", "regexValue": "x"}}, "MissingRegexName"),
    ("bad-cell-id", {**FORCE, "classify": {"type": "CELL_ID", "value": "two"}}, "InvalidCellId"),
    ("no-cell", {"ruleset": "session_token", "action": "proxy", "proxy": {"cellRef": "nope"}}, "CellNotFound"),
]


def test_invalid_rules_never_enter_the_output(kubectl, namespace, operator):
    kubectl.apply([cell_manifest("cell-1", 1, firstCell=True), rule("catch-all", CATCH_ALL)], namespace)
    wait_ready(kubectl, "routingrule", "catch-all", namespace)
    before = published(kubectl, namespace)
    kubectl.apply([rule(name, spec) for name, spec, _ in INVALID], namespace)
    for name, _, reason in INVALID:
        obj = wait_reason(kubectl, "routingrule", name, namespace, reason)
        assert "not published" in ready_condition(obj)["message"]
        assert {c["type"]: c["status"] for c in obj["status"]["conditions"]}["Stalled"] == "True"
        assert obj["status"].get("liveGeneration") is None
    assert published(kubectl, namespace) == before
    eventually(
        lambda: any(
            e["reason"] == "InvalidPattern" and e["type"] == "Warning"
            for e in events_for(kubectl, namespace, "bad-pattern")
        ),
        message="warning event",
    )


def test_last_valid_version_stays_published_until_fixed(kubectl, namespace, operator):
    kubectl.apply(
        [cell_manifest("cell-1", 1, firstCell=True), rule("session", SESSION), rule("catch-all", CATCH_ALL)], namespace
    )
    wait_ready(kubectl, "routingrule", "session", namespace)
    good = published(kubectl, namespace)
    broken = {"spec": {"match": {"regexValue": "^(?<cell_name>cell-\\d+-.*"}}}
    kubectl.merge_patch("routingrule", "session", namespace, broken)
    obj = wait_reason(kubectl, "routingrule", "session", namespace, "InvalidPattern")
    assert obj["status"]["liveGeneration"] == 1 and obj["metadata"]["generation"] == 2
    assert "Generation 1 stays published" in ready_condition(obj)["message"]
    assert published(kubectl, namespace) == good
    fixed = {"spec": {"match": {"regexValue": "^(?<cell_name>cell-\\d+)_.*"}}}
    kubectl.merge_patch("routingrule", "session", namespace, fixed)
    obj = wait_ready(kubectl, "routingrule", "session", namespace)
    assert obj["status"]["liveGeneration"] == 3
    assert published(kubectl, namespace)[0]["match"]["regexValue"] == "^(?<cell_name>cell-\\d+)_.*"


def test_cell_address_change_and_offline_flow_into_proxy_rules(kubectl, namespace, operator):
    kubectl.apply([cell_manifest("cell-1", 1, firstCell=True), cell_manifest("cell-2", 2, address="old:1")], namespace)
    kubectl.apply(rule("pin", {"ruleset": "passthrough", "action": "proxy", "proxy": {"cellRef": "cell-2"}}), namespace)
    wait_ready(kubectl, "routingrule", "pin", namespace)
    assert published(kubectl, namespace, "passthrough") == [
        {"id": "pin", "action": "proxy", "proxy": {"address": "old:1"}}
    ]
    kubectl.merge_patch("cell", "cell-2", namespace, {"spec": {"address": "new:2"}})
    eventually(
        lambda: published(kubectl, namespace, "passthrough")[0]["proxy"]["address"] == "new:2",
        message="new address in the ruleset",
    )
    kubectl.merge_patch("cell", "cell-2", namespace, {"spec": {"state": "Offline"}})
    wait_reason(kubectl, "routingrule", "pin", namespace, "CellNotRoutable")
    assert published(kubectl, namespace, "passthrough")[0]["proxy"]["address"] == "new:2"  # last valid kept


def test_missing_catch_all_is_flagged_and_rule_deletion_updates_output(kubectl, namespace, operator):
    kubectl.apply(
        [cell_manifest("cell-1", 1, firstCell=True), rule("session", SESSION), rule("catch-all", CATCH_ALL)], namespace
    )
    wait_ready(kubectl, "routingrule", "catch-all", namespace)
    kubectl("delete", "routingrule", "catch-all", "-n", namespace)
    eventually(lambda: len(published(kubectl, namespace)) == 1, message="catch-all removed from the output")

    def flagged():
        obj = kubectl.get("routingrule", "session", namespace)
        return {c["type"]: c for c in obj["status"]["conditions"]}.get("RulesetComplete", {}).get("status") == "False"

    eventually(flagged, message="RulesetComplete=False")
    obj = kubectl.get("routingrule", "session", namespace)
    assert ready_condition(obj)["status"] == "True"  # still published
    eventually(
        lambda: any(
            e["reason"] == "NoCatchAll" and e["type"] == "Warning" for e in events_for(kubectl, namespace, "session")
        ),
        message="NoCatchAll event",
    )


def test_burst_of_300_rules_is_coalesced(kubectl, namespace, operator, control_plane):
    kubectl.apply(cell_manifest("cell-1", 1, firstCell=True), namespace)
    wait_ready(kubectl, "cell", "cell-1", namespace)
    rules = [rule(f"r{i:03}", {**SESSION, "priority": i}) for i in range(299)] + [rule("zz-catch-all", CATCH_ALL)]
    kubectl.apply(rules, namespace)

    def complete():
        out = published(kubectl, namespace)
        return out is not None and len(out) == 300

    eventually(complete, timeout=180, message="300 rules published")

    def all_ready():
        items = kubectl.get("routingrules", namespace=namespace)["items"]
        return len(items) == 300 and all(ready_condition(o).get("status") == "True" for o in items)

    eventually(all_ready, timeout=180, message="300 rules Ready")
    writes = audit_writes(control_plane.logdir, namespace, "configmaps", "cells-router-rules")
    print(f"router ConfigMap writes for 300 rules: {len(writes)}")
    assert 1 <= len(writes) <= 30, f"{len(writes)} ConfigMap writes for 300 rules"
    positions = sorted(o["status"]["position"] for o in kubectl.get("routingrules", namespace=namespace)["items"])
    assert positions == list(range(300))


def test_ruleset_over_the_configmap_limit_keeps_the_previous_version(kubectl, namespace, operator):
    kubectl.apply(
        [cell_manifest("cell-1", 1, firstCell=True), rule("session", SESSION), rule("catch-all", CATCH_ALL)], namespace
    )
    wait_ready(kubectl, "routingrule", "catch-all", namespace)
    # 12 rules with ~100 KB patterns, one after the other: together over the ~1 MiB ConfigMap limit
    huge = [
        rule(
            f"huge-{i:02}",
            {
                **SESSION,
                "priority": 100 + i,
                "match": {**SESSION["match"], "regexValue": f"^(?<cell_name>cell-{i}{'x' * 100_000})"},
            },
        )
        for i in range(12)
    ]
    for obj in huge:
        kubectl.apply(obj, namespace)

    def settled():
        items = [kubectl.get("routingrule", o["metadata"]["name"], namespace) for o in huge]
        reasons = [ready_condition(o).get("reason") for o in items]
        return reasons if all(r in ("Published", "RulesetTooLarge") for r in reasons) else None

    reasons = eventually(settled, timeout=120, message="every huge rule published or held")
    held = [o["metadata"]["name"] for o, r in zip(huge, reasons, strict=True) if r == "RulesetTooLarge"]
    assert held, "the limit was never reached"
    obj = kubectl.get("routingrule", held[0], namespace)
    message = ready_condition(obj)["message"]
    assert "router ConfigMap would be 1," in message and "over the ConfigMap limit of 1,000,000 bytes" in message
    cm = kubectl.get("configmap", "cells-router-rules", namespace)
    assert sum(len(k) + len(v.encode()) for k, v in cm["data"].items()) <= 1_000_000
    rules = published(kubectl, namespace)  # whole, parseable, never truncated
    assert len(rules) == 2 + reasons.count("Published")
    assert rules[0]["match"]["regexValue"] == SESSION["match"]["regexValue"]
    assert rules[-1] == {"id": "catch-all", "action": "classify", "classify": {"type": "FIRST_CELL"}}


def test_metrics_after_real_reconciles(kubectl, namespace, operator):
    """Prometheus metrics of the operator, scraped from its /metrics after real reconciles."""
    kubectl.apply(
        [
            cell_manifest("cell-1", 1, firstCell=True),
            cell_manifest("cell-2", 2, state="Draining"),
            cell_manifest("dup", 1),
            rule("session", SESSION),
            rule("catch-all", CATCH_ALL),
            rule("broken", {**SESSION, "classify": {"type": "SESSION_PREFIX", "value": "${nope}"}}),
        ],
        namespace,
    )
    wait_ready(kubectl, "routingrule", "catch-all", namespace)
    wait_reason(kubectl, "cell", "dup", namespace, "DuplicateId")

    def converged():
        text = operator.scrape()
        return (
            text
            if metric_value(
                text,
                "cells_operator_stalled_resources",
                namespace=namespace,
                kind="RoutingRule",
                reason="UnknownInterpolation",
            )
            == 1
            else None
        )

    text = eventually(converged, message="metrics reflect the namespace")
    assert metric_value(text, "controller_runtime_reconcile_total", controller="namespace", result="success") >= 1
    assert metric_value(text, "controller_runtime_reconcile_time_seconds_count", controller="namespace") >= 1
    assert metric_value(text, "cells_operator_cells", namespace=namespace, state="Active") == 1
    assert metric_value(text, "cells_operator_cells", namespace=namespace, state="Draining") == 1
    assert metric_value(text, "cells_operator_rules", namespace=namespace, ruleset="session_token") == 2
    assert (
        metric_value(text, "cells_operator_stalled_resources", namespace=namespace, kind="Cell", reason="DuplicateId")
        == 1
    )
    assert metric_value(text, "cells_operator_publish_total", namespace=namespace, output="records") >= 1
    assert metric_value(text, "cells_operator_publish_total", namespace=namespace, output="router") >= 1
    assert metric_value(text, "cells_operator_publish_bytes", namespace=namespace, output="router") > 0
    assert (
        metric_value(
            text, "cells_operator_publish_last_success_timestamp_seconds", namespace=namespace, output="records"
        )
        > 1.7e9
    )
    assert metric_value(text, "cells_operator_sequence_ids_allocated", namespace=namespace) == 2 * 10**11
    remaining = metric_value(text, "cells_operator_sequence_ids_remaining", namespace=namespace)
    assert remaining == pytest.approx(2**57 - 1 - 2 * 10**11, rel=1e-12)
    assert metric_value(text, "cells_operator_api_writes_total") > 0
