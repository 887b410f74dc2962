"""The shell's decisions as pure functions: which finalizer, status and Events a reconcile writes, and
whether a ConfigMap write is needed. No API at all; test_shell_reconcilers.py runs them in the shell."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from cells_operator import cell_reconciler, rule_reconciler
from cells_operator.actions import PostEvent, SetFinalizers, WriteStatus, execute
from cells_operator.base_config import BASE_CONFIG_NOT_FOUND
from cells_operator.cell import Problem
from cells_operator.conditions import Event
from cells_operator.config import FINALIZER, MANAGED_BY_LABEL
from cells_operator.kube import OUTPUT_LABELS, ConfigMapState
from cells_operator.publish import MAX_ANNOTATIONS_BYTES, MAX_DATA_BYTES, plan_write
from cells_operator.rulesets import LiveRule, RuleVerdict
from cells_operator.topology import CellObject, CellVerdict, Change
from tests.support.cells import cell_manifest, first_cell_record
from tests.support.fake_kube import FakeKube, api_error

RECORD = first_cell_record()
OTHER = "example.com/other"


def cell(finalizers: list[str] | None = None, status: dict | None = None) -> dict:
    """Cell ``cell-1`` as the API serves it."""
    meta: dict = {"namespace": "ns", "generation": 1, "resourceVersion": "7"}
    if finalizers is not None:
        meta["finalizers"] = finalizers
    return {**cell_manifest("cell-1", 1, metadata=meta), "status": status}


def kinds(actions) -> list[str]:
    return [type(a).__name__ for a in actions]


# ---------------------------------------------------------------- finalizers
@pytest.mark.parametrize(
    ("finalizers", "verdict", "expected"),
    [
        (None, CellVerdict("cell-1", RECORD), (FINALIZER,)),  # a new Cell gets ours
        ([OTHER], CellVerdict("cell-1", RECORD), (OTHER, FINALIZER)),  # after the others, none lost
        ([FINALIZER], CellVerdict("cell-1", RECORD), None),  # already there: no write
        ([OTHER, FINALIZER], CellVerdict("cell-1", None, deleting=True, release=True), (OTHER,)),  # released
        ([OTHER], CellVerdict("cell-1", None, deleting=True, release=True), None),  # ours already gone
        ([FINALIZER], CellVerdict("cell-1", RECORD, deleting=True), None),  # deleting, blocked: kept
        ([], CellVerdict("cell-1", None, deleting=True), None),  # never add one to an object being deleted
    ],
)
def test_finalizer_decisions(finalizers, verdict, expected):
    assert cell_reconciler.finalizers_after(cell(finalizers), verdict) == expected


def test_a_released_cell_only_loses_its_finalizer():
    """It is about to disappear: a status or Event written on it now would be lost or refused."""
    actions = cell_reconciler.plan_report(cell([FINALIZER]), CellVerdict("cell-1", None, deleting=True, release=True))
    assert actions == [SetFinalizers("cells", cell([FINALIZER]), ())]


def test_a_new_cell_gets_its_finalizer_then_its_status_and_no_event():
    actions = cell_reconciler.plan_report(cell(), CellVerdict("cell-1", RECORD))
    assert kinds(actions) == ["SetFinalizers", "WriteStatus"]
    status = actions[1].status
    assert status["registeredId"] == 1 and status["state"] == "Active"


def test_a_cell_reported_already_plans_nothing():
    first = cell_reconciler.plan_report(cell(), CellVerdict("cell-1", RECORD))[1].status
    assert cell_reconciler.plan_report(cell([FINALIZER], first), CellVerdict("cell-1", RECORD)) == []


def test_a_cell_problem_is_a_status_and_one_warning():
    problem = Problem("DuplicateId", "id 1 is already registered by cell 'a'")
    actions = cell_reconciler.plan_report(cell([FINALIZER]), CellVerdict("cell-1", None, problem))
    assert kinds(actions) == ["WriteStatus", "PostEvent"]
    assert actions[1].event == Event("DuplicateId", problem.message, warning=True)
    again = cell([FINALIZER], {k: v for k, v in actions[0].status.items() if v is not None})
    assert cell_reconciler.plan_report(again, CellVerdict("cell-1", None, problem)) == []


def test_change_events_go_to_cells_that_exist_only():
    changes = [Change("cell-1", "Registered", "registered cell 1"), Change("gone", "Deregistered", "retired")]
    actions = cell_reconciler.plan_change_events(changes, {"cell-1": cell()})
    assert actions == [PostEvent(cell(), Event("Registered", "registered cell 1"))]


# ---------------------------------------------------------------- nothing published
def ready_reason(status: dict) -> tuple[str, str]:
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    return ready["status"], ready["reason"]


def conditions(status: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_publish_failed_is_reconciling_without_an_event_and_keeps_what_is_published():
    registered = cell_reconciler.plan_report(cell(), CellVerdict("cell-1", RECORD))[1].status
    actions = cell_reconciler.plan_unpublished(cell([FINALIZER], registered), "PublishFailed", "gave up")
    assert kinds(actions) == ["WriteStatus"] and actions[0].announce is False
    status = actions[0].status
    assert conditions(status) == {"Ready": "False", "Reconciling": "True", "Stalled": "False"}
    assert status["registeredId"] == 1 and status["sequenceRanges"] == registered["sequenceRanges"]


def test_unreadable_records_stall_without_an_event():
    actions = cell_reconciler.plan_unpublished(cell(), cell_reconciler.RECORDS_UNREADABLE, "not JSON")
    assert kinds(actions) == ["WriteStatus"]
    assert conditions(actions[0].status)["Stalled"] == "True"


def test_a_base_config_problem_stalls_with_one_warning():
    actions = cell_reconciler.plan_unpublished(cell(), BASE_CONFIG_NOT_FOUND, "no ConfigMap 'base'")
    assert kinds(actions) == ["WriteStatus", "PostEvent"] and actions[1].event.warning
    assert ready_reason(actions[0].status) == ("False", BASE_CONFIG_NOT_FOUND)
    # a new message for the same reason: the status says it, no second Warning
    reworded = cell_reconciler.plan_unpublished(cell(status=actions[0].status), BASE_CONFIG_NOT_FOUND, "no")
    assert kinds(reworded) == ["WriteStatus"]
    same = cell_reconciler.plan_unpublished(
        cell(status=actions[0].status), BASE_CONFIG_NOT_FOUND, "no ConfigMap 'base'"
    )
    assert same == []


def test_namespace_terminating_needs_the_403_and_every_cell_deleting():
    going = api_error(403, "Forbidden", 'configmaps "x" is forbidden: ... because it is being terminated')
    deleting = CellObject("cell-1", "u", {}, deleting=True)
    assert cell_reconciler.namespace_terminating(going, [deleting])
    assert not cell_reconciler.namespace_terminating(going, [deleting, CellObject("cell-2", "u2", {})])
    assert not cell_reconciler.namespace_terminating(api_error(403, "Forbidden", "RBAC says no"), [deleting])
    assert not cell_reconciler.namespace_terminating(ApiException(status=500), [deleting])
    released = cell_reconciler.released([deleting])
    assert released.verdicts["cell-1"].release and released.records is not None and not released.records.cells


# ---------------------------------------------------------------- rules
def rule(status: dict | None = None) -> dict:
    return {"kind": "RoutingRule", "metadata": {"name": "r", "namespace": "ns", "generation": 1}, "status": status}


def rule_verdict(problem: Problem | None = None) -> RuleVerdict:
    live = LiveRule("r", "uid-r", 1, 10, "rs", {"action": "proxy"})
    return RuleVerdict("r", "rs", live, problem, 0, "sha256:a", True, False)


def test_a_rule_reported_once_then_nothing_then_a_warning_on_a_problem():
    first = rule_reconciler.plan_report(rule(), rule_verdict())
    assert kinds(first) == ["WriteStatus"]
    stored = {k: v for k, v in first[0].status.items() if v is not None}
    assert rule_reconciler.plan_report(rule(stored), rule_verdict()) == []
    bad = rule_reconciler.plan_report(rule(stored), rule_verdict(Problem("CellNotFound", "no cell 'x'")))
    assert kinds(bad) == ["WriteStatus", "PostEvent"] and bad[1].event.reason == "CellNotFound"


def test_rules_being_deleted_are_not_published():
    gone = {"metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    kept = {"metadata": {"name": "b"}}
    assert rule_reconciler.live_rules([gone, kept]) == [kept]


# ---------------------------------------------------------------- the ConfigMap write
def test_an_absent_configmap_is_created_even_empty():
    write = plan_write(ConfigMapState({}, {}, None), {}, {})
    assert write.needed and write.resource_version is None


def test_the_same_content_is_not_written_again():
    current = ConfigMapState({"a": "1"}, {"keep": "x", "h": "1"}, "5", labels=dict(OUTPUT_LABELS))
    assert not plan_write(current, {"a": "1"}, {"h": "1"}).needed


def test_others_metadata_is_carried_over_and_ours_is_set_over_it():
    """A replace sets the whole metadata: what Argo CD, Flux or a person added (a label, an annotation, a
    finalizer, an owner) must be sent back, or the operator's next publish would remove it."""
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "parent", "uid": "u-1"}
    current = ConfigMapState(
        {"a": "1"},
        {"argocd.argoproj.io/tracking-id": "app:x", "h": "0"},
        "5",
        labels={"team": "routing", MANAGED_BY_LABEL: "someone-else"},
        finalizers=["example.com/keep"],
        owner_references=[owner],
    )
    write = plan_write(current, {"a": "2"}, {"h": "1"})
    assert write.meta.annotations == {"argocd.argoproj.io/tracking-id": "app:x", "h": "1"}
    assert write.meta.labels == {"team": "routing", **OUTPUT_LABELS}  # ours win on our keys
    assert write.meta.finalizers == ("example.com/keep",) and write.meta.owner_references == (owner,)


def test_a_missing_label_of_ours_is_written_again():
    """The watch selects our ConfigMaps by the managed-by label: one that lost it is labelled again."""
    current = ConfigMapState({"a": "1"}, {}, "5", labels={"team": "routing"})
    write = plan_write(current, {"a": "1"}, {})
    assert write.needed and write.meta.labels == {"team": "routing", **OUTPUT_LABELS}


def test_exactly_one_mib_of_values_fits_and_keys_are_not_counted():
    """ValidateConfigMap counts the values only (exactly 1 MiB probed and accepted on kube-apiserver 1.37)."""
    write = plan_write(ConfigMapState({}, {}, None), {"long-key": "x" * MAX_DATA_BYTES}, {})
    assert write.needed and write.too_large is None


def test_one_byte_over_one_mib_is_not_sent_and_says_the_size_and_the_limit():
    write = plan_write(ConfigMapState({}, {}, None), {"a": "x" * MAX_DATA_BYTES, "b": "é"}, {})
    assert write.too_large == "its data would be 1,048,578 bytes, over the ConfigMap limit of 1,048,576 bytes (1 MiB)"


def test_annotations_over_256_kib_are_not_sent():
    """Others' annotations count too: ours on top of theirs may cross the limit."""
    current = ConfigMapState({}, {"theirs": "x" * (MAX_ANNOTATIONS_BYTES - len("theirs"))}, "5")
    write = plan_write(current, {}, {"h": "1"})
    assert write.too_large is not None and "256 KiB" in write.too_large


def test_a_published_configmap_is_never_judged_too_large():
    """Only a change is judged: what is published was accepted, so an unchanged one is simply not written."""
    current = ConfigMapState({"a": "1"}, {}, "5", labels=dict(OUTPUT_LABELS))
    assert plan_write(current, {"a": "1"}, {}).too_large is None


def test_annotations_merge_over_the_current_ones_and_none_removes():
    current = ConfigMapState({"a": "1"}, {"keep": "x", "old": "1"}, "5")
    write = plan_write(current, {"a": "1"}, {"old": None, "new": "2"})
    assert write.needed and write.annotations == {"keep": "x", "new": "2"} and write.resource_version == "5"


def test_size_counts_utf8_bytes_of_keys_and_values():
    assert plan_write(ConfigMapState({}, {}, None), {"k": "é"}, {}).size == 1 + 2


# ---------------------------------------------------------------- the executor
def test_the_executor_performs_the_plan_in_order_and_decides_nothing():
    kube = FakeKube()
    obj = kube.add("cells", cell())
    execute(
        kube,
        [
            SetFinalizers("cells", obj, (FINALIZER,)),
            WriteStatus("cells", obj, {"state": "Active"}, announce=False),
            PostEvent(obj, Event("Registered", "hello")),
        ],
    )
    assert [verb for verb, _ in kube.requests] == ["set_finalizers", "patch_status", "post_event"]
    stored = kube.get("cells", "ns", "cell-1")
    assert stored["metadata"]["finalizers"] == [FINALIZER] and stored["status"] == {"state": "Active"}
    assert kube.events_for("cell-1") == [("Normal", "Registered")]
