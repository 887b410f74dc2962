"""Issue 7, admission: bad input refused at ``kubectl apply`` by the operator's webhooks on the real API server.

The operator runs as a subprocess with ``--webhook-self-signed --webhook-configuration``: it makes a CA and
a certificate for 127.0.0.1, serves the webhooks on loopback, and registers the Validating- and
MutatingWebhookConfiguration the API server uses to call it -- the local-control-plane path of ADR 0007.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cells_operator.config import FINALIZER
from tests.support.audit import audit_writes
from tests.support.cells import cell_manifest, ready_condition, records, wait_ready, wait_reason
from tests.support.kubectl import Kubectl, eventually
from tests.support.operator import metric_value, print_log_if_failed
from tests.support.rules import SESSION
from tests.support.rules import rule_manifest as rule
from tests.support.webhook import BAD_PATTERN, WebhookOperator, wait_webhook_serving


def apply_refused(kubectl: Kubectl, manifest: dict, namespace: str) -> str:
    """Apply ``manifest`` and return the API server's refusal (fails if it was accepted)."""
    proc = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False)
    assert proc.returncode != 0, f"accepted, but should have been refused: {proc.stdout}"
    assert "denied the request" in proc.stderr, proc.stderr
    return proc.stderr


@pytest.fixture
def webhook_operator(control_plane, kubectl, namespace, tmp_path, request):
    if not hasattr(control_plane, "logdir"):
        pytest.skip("an external cluster's API server cannot dial the test process on 127.0.0.1")
    proc = WebhookOperator(
        control_plane.kubeconfig,
        tmp_path / "operator.log",
        [namespace],
        tmp_path / "webhook-certs",
        f"cells-test-{namespace}"[:63],
    )
    proc.start()
    try:
        wait_webhook_serving(kubectl, namespace)
    except AssertionError:
        print(proc.log_tail(60))
        proc.stop()
        raise
    yield proc
    proc.stop()
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        kubectl("delete", kind, proc.configuration, "--ignore-not-found", check=False)
    print_log_if_failed(proc, request)


def test_cells_that_collide_are_refused_with_the_reason(kubectl, namespace, webhook_operator):
    kubectl.apply(cell_manifest("a", 1, firstCell=True, sessionPrefix="alpha"), namespace)
    wait_ready(kubectl, "cell", "a", namespace)
    explicit = cell_manifest("legacy", 2, sequenceRanges=[{"minval": 10**15, "maxval": 10**15 + 10**11}])
    kubectl.apply(explicit, namespace)
    wait_ready(kubectl, "cell", "legacy", namespace)

    cases = {
        "DuplicateId": (cell_manifest("b", 1), "id 1 is already registered by cell 'a'"),
        "DuplicateSessionPrefix": (cell_manifest("b", 3, sessionPrefix="alpha"), "sessionPrefix 'alpha'"),
        "DuplicateFirstCell": (cell_manifest("b", 3, firstCell=True), "cell 'a' is already the first cell"),
        "RangeOverlap": (
            cell_manifest("b", 3, sequenceRanges=[{"minval": 10**15 + 5, "maxval": 10**15 + 2 * 10**11}]),
            "of cell 'legacy'",
        ),
        "InvalidAddress": (cell_manifest("b", 3, address="b.cells.svc:99999"), "invalid port"),
    }
    for reason, (manifest, detail) in cases.items():
        error = apply_refused(kubectl, manifest, namespace)
        assert f"Cell 'b' is refused ({reason})" in error and detail in error, error
    assert kubectl.get_or_none("cell", "b", namespace) is None
    # Nothing refused reached the records; what was published stays published.
    topology, _ = records(kubectl, namespace)
    assert sorted(c["name"] for c in topology["cells"]) == ["a", "legacy"]


def test_a_second_cell_applied_in_the_same_sync_is_refused_before_the_first_registers(
    kubectl, namespace, webhook_operator
):
    """The webhook reads the Cells as stored, not only the records: one ``kubectl apply`` of both."""
    proc = kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [cell_manifest("x", 7), cell_manifest("y", 7)]}),
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "Cell 'y' is refused (DuplicateId): id 7 is already registered by cell 'x'" in proc.stderr
    assert wait_ready(kubectl, "cell", "x", namespace)
    assert kubectl.get_or_none("cell", "y", namespace) is None


def test_immutable_fields_cannot_be_changed(kubectl, namespace, webhook_operator):
    kubectl.apply(cell_manifest("a", 1), namespace)
    ranges = wait_ready(kubectl, "cell", "a", namespace)["status"]["sequenceRanges"]
    # Since the CRDs carry CEL rules (ADR 0012) the API server refuses these before the webhook is
    # asked (schema validation runs before validating admission); the reason is the same.
    for manifest, reason in (
        (cell_manifest("a", 2), "(IdImmutable)"),
        (cell_manifest("a", 1, sequenceRanges=[{"minval": 1, "maxval": 5}]), "(RangeImmutable)"),
    ):
        proc = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False)
        assert proc.returncode != 0 and reason in proc.stderr, proc.stderr
        assert "is invalid" in proc.stderr and "denied the request" not in proc.stderr, proc.stderr
    # Allowed: keep the allocated range and add one; change the address.
    grown = [*ranges, {"minval": 10**15, "maxval": 10**15 + 10**11}]
    kubectl.apply(cell_manifest("a", 1, address="moved.cells.svc:8080", sequenceRanges=grown), namespace)
    eventually(
        lambda: len((kubectl.get("cell", "a", namespace).get("status") or {}).get("sequenceRanges") or []) == 2,
        message="the grown ranges published",
    )


def test_rules_that_can_never_be_published_are_refused(kubectl, namespace, webhook_operator):
    bad = {
        "InvalidPattern": (BAD_PATTERN, "Unterminated group"),
        "UnknownInterpolation": ({**BAD_PATTERN, "match": {"type": "path", "regexValue": "^/(?<x>[a-z]+)"},
                                  "classify": {"type": "SESSION_PREFIX", "value": "${y}"}}, "${y}"),
        "UnsupportedPattern": ({**BAD_PATTERN, "match": {"type": "path", "regexValue": "^/(?<x>[a-z]+)(?<=a+)"},
                                "classify": {"type": "SESSION_PREFIX", "value": "${x}"}}, "variable length"),
    }  # fmt: skip
    for reason, (spec, detail) in bad.items():
        error = apply_refused(kubectl, rule("bad", spec), namespace)
        assert f"RoutingRule 'bad' is refused ({reason})" in error and detail in error, error
    assert kubectl.get_or_none("routingrule", "bad", namespace) is None

    # A proxy to a Cell that is not registered yet is a moment in a GitOps sync, not bad input.
    proc = kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=json.dumps(rule("to-later", {"ruleset": "main", "action": "proxy", "proxy": {"cellRef": "later"}})),
    )  # fmt: skip
    assert "CellNotFound" in proc.stderr and "accepted" in proc.stderr  # kubectl prints the warning
    kubectl.apply(cell_manifest("later", 5), namespace)
    wait_ready(kubectl, "routingrule", "to-later", namespace)
    kubectl.apply(rule("session", SESSION), namespace)
    wait_ready(kubectl, "routingrule", "session", namespace)


def test_cells_are_created_with_the_finalizer(kubectl, namespace, webhook_operator, control_plane):
    """The mutating webhook adds the finalizer in the create itself: the operator writes no finalizer patch."""
    created = json.loads(
        kubectl("create", "-n", namespace, "-o", "json", "-f", "-", input=json.dumps(cell_manifest("a", 1))).stdout
    )
    assert created["metadata"]["finalizers"] == [FINALIZER]
    wait_ready(kubectl, "cell", "a", namespace)
    writes = audit_writes(control_plane.logdir, namespace, resource="cells", name="a", subresource=None)
    assert [w["verb"] for w in writes] == ["create"]
    kubectl("delete", "cell", "a", "-n", namespace, "--wait=true", "--timeout=60s")


def test_what_slips_past_a_webhook_that_is_down_is_caught_by_the_status_path(
    kubectl, namespace, webhook_operator, control_plane, tmp_path
):
    """Fail open (ADR 0007): with the operator killed, its webhook registration is left pointing at nothing
    and the API server admits; the restarted operator then reports the problem and publishes nothing bad.
    Objects that are already invalid stay labelable and deletable with the webhook back."""
    kubectl.apply(cell_manifest("a", 1), namespace)
    wait_ready(kubectl, "cell", "a", namespace)
    webhook_operator.kill()
    kubectl.apply([cell_manifest("dup", 1), rule("bad", BAD_PATTERN)], namespace)  # admitted: fail open
    webhook_operator.start()
    wait_webhook_serving(kubectl, namespace)
    dup = wait_reason(kubectl, "cell", "dup", namespace, "DuplicateId")
    assert ready_condition(dup)["status"] == "False"
    wait_reason(kubectl, "routingrule", "bad", namespace, "InvalidPattern")
    topology, _ = records(kubectl, namespace)
    assert [c["name"] for c in topology["cells"]] == ["a"]
    # The spec is unchanged, so the webhook lets metadata changes and deletion through.
    kubectl("label", "cell", "dup", "-n", namespace, "team=x")
    kubectl("label", "routingrule", "bad", "-n", namespace, "team=x")
    kubectl("delete", "cell", "dup", "-n", namespace, "--wait=true", "--timeout=60s")
    kubectl("delete", "routingrule", "bad", "-n", namespace, "--wait=true", "--timeout=60s")


def test_objects_outside_the_managed_namespaces_are_not_judged(kubectl, namespace, webhook_operator):
    other = f"{namespace}-other"[:63]
    kubectl("create", "namespace", other)
    try:
        kubectl.apply(rule("bad", BAD_PATTERN), other)  # not ours: admitted, no finalizer added either
        created = kubectl("create", "-n", other, "-o", "json", "-f", "-", input=json.dumps(cell_manifest("c", 1)))
        assert not json.loads(created.stdout)["metadata"].get("finalizers")
    finally:
        kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_reviews_are_counted_and_a_stopped_operator_unregisters_its_webhooks(kubectl, namespace, webhook_operator):
    apply_refused(kubectl, rule("bad", BAD_PATTERN), namespace)
    text = webhook_operator.scrape()
    assert (
        metric_value(text, "cells_operator_admission_reviews_total", webhook="validate-routingrule", result="refused")
        >= 1
    )
    assert metric_value(text, "cells_operator_admission_review_seconds_count", webhook="validate-routingrule") >= 1
    webhook_operator.stop()
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        proc = kubectl("get", kind, webhook_operator.configuration, check=False)
        assert proc.returncode != 0 and "NotFound" in proc.stderr, proc.stdout


def test_unreadable_records_stall_the_cells_and_admission_lets_changes_through_unchecked(
    kubectl, namespace, webhook_operator
):
    """Records the operator cannot read are never overwritten blindly: every Cell says RecordsUnreadable
    (Stalled), and the webhook, unable to judge, admits with a warning instead of guessing."""
    kubectl.apply(cell_manifest("a", 1), namespace)
    wait_ready(kubectl, "cell", "a", namespace)
    torn = '{"cells": [{"name": "a", "id'
    kubectl.merge_patch("configmap", "cells-topology", namespace, {"data": {"topology.json": torn}})
    stalled = wait_reason(kubectl, "cell", "a", namespace, "RecordsUnreadable")
    assert "topology.json is not valid cells-operator records" in ready_condition(stalled)["message"]
    proc = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(cell_manifest("b", 2)))
    assert "could not check this Cell at admission" in proc.stderr
    wait_reason(kubectl, "cell", "b", namespace, "RecordsUnreadable")
    assert kubectl.get("configmap", "cells-topology", namespace)["data"]["topology.json"] == torn
    text = webhook_operator.scrape()
    assert (
        metric_value(text, "cells_operator_admission_reviews_total", webhook="validate-cell", result="unchecked") >= 1
    )


def test_the_shipped_samples_are_admitted_in_one_apply(kubectl, namespace, webhook_operator):
    """What deploy/samples ships (and a GitOps sync applies at once) passes the webhooks as it is."""
    samples = Path(__file__).resolve().parents[2] / "deploy" / "samples"
    proc = kubectl(
        "apply", "-n", namespace, "-f", str(samples / "cells.yaml"), "-f", str(samples / "routingrules.yaml")
    )
    assert "denied" not in proc.stderr
    kubectl("wait", "--for=condition=Ready", "cells,routingrules", "--all", "-n", namespace, "--timeout=120s")
    cells = kubectl.get("cells", namespace=namespace)["items"]
    assert all(c["metadata"]["finalizers"] == [FINALIZER] for c in cells)
