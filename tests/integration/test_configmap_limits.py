"""The operator's two ConfigMaps on the real API server: it owns only its keys (others' labels,
annotations and finalizers survive its publishes), and output over the size limits is held back with
the last valid version still published and the resources Stalled with the reason (issue 15)."""

from __future__ import annotations

import json

import pytest

from tests.support.cells import cell_manifest, events_for, ready_condition, touch, wait_ready, wait_reason
from tests.support.kubectl import eventually
from tests.support.operator import operator_running
from tests.support.rules import CATCH_ALL, SESSION
from tests.support.rules import rule_manifest as rule

TOPOLOGY, ROUTER = "cells-topology", "cells-router-rules"
FINALIZER = "example.com/keep"
MIB = 1024 * 1024


def conditions(obj: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in obj["status"]["conditions"]}


def warned(kubectl, namespace: str, name: str, reason: str) -> list[dict]:
    """The Warning Events ``reason`` on ``name``, once there is one."""
    return eventually(
        lambda: [e for e in events_for(kubectl, namespace, name) if e["reason"] == reason and e["type"] == "Warning"],
        message=f"Warning {reason} on {name}",
    )


def test_others_labels_annotations_and_finalizers_survive_the_next_publish(kubectl, namespace, operator):
    """Argo CD, Flux or a person adds metadata to the published ConfigMaps: the operator's next replace of
    each (a new Cell changes the records, a new rule the router rules) keeps it and sets only its own."""
    kubectl.apply([cell_manifest("cell-1", 1, firstCell=True), rule("catch-all", CATCH_ALL)], namespace)
    wait_ready(kubectl, "cell", "cell-1", namespace)
    wait_ready(kubectl, "routingrule", "catch-all", namespace)
    before = {name: kubectl.get("configmap", name, namespace) for name in (TOPOLOGY, ROUTER)}
    try:
        for name in (TOPOLOGY, ROUTER):
            kubectl("label", "configmap", name, "-n", namespace, "team=routing")
            kubectl("annotate", "configmap", name, "-n", namespace, "argocd.argoproj.io/tracking-id=app:x")
            kubectl.merge_patch("configmap", name, namespace, {"metadata": {"finalizers": [FINALIZER]}})
        kubectl.apply([cell_manifest("cell-2", 2), rule("session", SESSION)], namespace)
        wait_ready(kubectl, "cell", "cell-2", namespace)
        wait_ready(kubectl, "routingrule", "session", namespace)
        for name in (TOPOLOGY, ROUTER):
            cm = kubectl.get("configmap", name, namespace)
            assert cm["data"] != before[name]["data"], f"{name} was not published again"
            meta = cm["metadata"]
            assert meta["labels"]["team"] == "routing" and meta["labels"]["app.kubernetes.io/managed-by"]
            assert meta["annotations"]["argocd.argoproj.io/tracking-id"] == "app:x"
            assert meta["finalizers"] == [FINALIZER]
            assert any(k.startswith(("cells.dev/", "rules.cells.dev/")) for k in meta["annotations"])  # ours too
    finally:  # or the namespace could never go
        for name in (TOPOLOGY, ROUTER):
            kubectl.merge_patch("configmap", name, namespace, {"metadata": {"finalizers": None}}, check=False)


# ---------------------------------------------------------------- the records over 1 MiB
BASE_NAME = "ts-base"


def base_configmap(size: int) -> str:
    """A valid base config.toml of exactly ``size`` bytes, as a ConfigMap (JSON for kubectl create/replace:
    ``kubectl apply`` would copy it into an annotation, which is limited to 256 KiB)."""
    tail = '\nenv = "production"\n'
    text = "# " + "x" * (size - len(tail) - 2) + tail
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": BASE_NAME}, "data": {"config.toml": text}}
    return json.dumps(cm)


@pytest.fixture
def operator_with_base(control_plane, tmp_path, request):
    args = ["--standalone", "--base-config-configmap", BASE_NAME]
    yield from operator_running(control_plane.kubeconfig, tmp_path / "operator.log", args, request)


def test_records_over_one_mib_stall_every_cell_and_the_last_published_records_stay(
    kubectl, namespace, operator_with_base
):
    """A base config.toml of exactly 1 MiB fits its own ConfigMap (the API server accepts it) but not the
    records (base plus the cells): no 422 on every pass, but Stalled with the size and the limit."""
    kubectl("create", "-n", namespace, "-f", "-", input=base_configmap(1000))
    kubectl.apply(cell_manifest("cell-1", 1, firstCell=True), namespace)
    wait_ready(kubectl, "cell", "cell-1", namespace)
    published = kubectl.get("configmap", TOPOLOGY, namespace)["data"]

    kubectl("replace", "-n", namespace, "-f", "-", input=base_configmap(MIB))
    touch(kubectl, namespace, "cell-1", "1")
    obj = wait_reason(kubectl, "cell", "cell-1", namespace, "RecordsTooLarge")
    assert conditions(obj) == {"Ready": "False", "Reconciling": "False", "Stalled": "True"}
    message = ready_condition(obj)["message"]
    assert "over the ConfigMap limit of 1,048,576 bytes" in message and "previously registered" in message
    assert obj["status"]["registeredId"] == 1  # what is still published
    warned(kubectl, namespace, "cell-1", "RecordsTooLarge")
    assert kubectl.get("configmap", TOPOLOGY, namespace)["data"] == published

    touch(kubectl, namespace, "cell-1", "2")  # another pass: nothing new, said once
    eventually(
        lambda: kubectl.get("cell", "cell-1", namespace)["metadata"]["annotations"].get("test/touch") == "2",
        message="second touch seen",
    )
    kubectl.apply(cell_manifest("cell-2", 2), namespace)  # a new Cell is held back too
    obj2 = wait_reason(kubectl, "cell", "cell-2", namespace, "RecordsTooLarge")
    assert conditions(obj2)["Stalled"] == "True" and "not registered" in ready_condition(obj2)["message"]
    assert kubectl.get("configmap", TOPOLOGY, namespace)["data"] == published
    said = f"records of {namespace} not published"  # the warning (this operator watches every namespace)
    lines = [line for line in operator_with_base.log_text().splitlines() if said in line]
    assert len(lines) == 2 and all("RecordsTooLarge" in line for line in lines), lines  # cell-1's, cell-2's

    kubectl("replace", "-n", namespace, "-f", "-", input=base_configmap(1000))
    touch(kubectl, namespace, "cell-1", "3")
    wait_reason(kubectl, "cell", "cell-2", namespace, "Registered")
    assert kubectl.get("configmap", TOPOLOGY, namespace)["data"] != published


# ---------------------------------------------------------------- the router rules over the limit
def huge_rule(i: int, size: int) -> dict:
    """A session rule whose pattern is ``size`` characters (the CRD sets no maxLength on patterns)."""
    value = f"^(?<cell_name>cell-{i}{'x' * size})"
    return rule(f"huge-{i:02}", {**SESSION, "priority": 100 + i, "match": {**SESSION["match"], "regexValue": value}})


def test_a_ruleset_over_the_limit_is_stalled_and_its_last_valid_version_stays_published(kubectl, namespace, operator):
    """Ten rules of ~95 KB fit the router ConfigMap (with the catch-all); the eleventh would cross the
    operator's limit of 1,000,000 bytes: it is Stalled with RulesetTooLarge, and the published version is
    exactly the previous one (nothing truncated). Typical rules reach it at 2,286 (docs/benchmarks.md)."""
    kubectl.apply([cell_manifest("cell-1", 1, firstCell=True), rule("catch-all", CATCH_ALL)], namespace)
    fitting = [huge_rule(i, 95_000) for i in range(10)]
    kubectl.apply(fitting, namespace)
    for obj in fitting:
        wait_ready(kubectl, "routingrule", obj["metadata"]["name"], namespace, timeout=120)
    published = kubectl.get("configmap", ROUTER, namespace)["data"]
    assert 950_000 < sum(len(k) + len(v) for k, v in published.items()) <= 1_000_000

    kubectl.apply(huge_rule(10, 95_000), namespace)
    obj = wait_reason(kubectl, "routingrule", "huge-10", namespace, "RulesetTooLarge", timeout=120)
    assert conditions(obj)["Ready"] == "False" and conditions(obj)["Stalled"] == "True"
    message = ready_condition(obj)["message"]
    assert "router ConfigMap would be 1,0" in message and "over the ConfigMap limit of 1,000,000 bytes" in message
    assert "not published" in message
    warned(kubectl, namespace, "huge-10", "RulesetTooLarge")
    assert kubectl.get("configmap", ROUTER, namespace)["data"] == published  # the last valid version, whole
    for other in fitting:  # unchanged rules stay published and Ready
        assert ready_condition(kubectl.get("routingrule", other["metadata"]["name"], namespace))["status"] == "True"
    assert operator.log_text().count("rule(s) are Stalled (RulesetTooLarge)") == 1

    kubectl("delete", "routingrule", "huge-00", "-n", namespace)  # room again: the held rule goes out
    wait_ready(kubectl, "routingrule", "huge-10", namespace, timeout=120)
