"""CEL validation rules of the CRDs, enforced by the real API server itself (ADR 0012).

No operator and no webhook run in these tests, and each one first proves that no admission webhook is
registered for ``cells.dev``: every refusal below comes from the CRD's ``x-kubernetes-validations``.
The status an operator would write is set through the real ``status`` subresource, because "registered"
is what was published there (``status.registeredId``, ``status.sequenceRanges``); one test lets the
real operator register the Cell instead, to show the same refusal end to end.

Skipped, with the reason, only on an API server older than 1.25, which has no CEL rules for CRDs.
"""

from __future__ import annotations

import json

import pytest

from tests.support.cells import cell_manifest, wait_ready
from tests.support.kubectl import Kubectl, merge_patch_args
from tests.support.rules import SAMPLE_SPECS

SIZE = 10**11


def server_minor(kubectl: Kubectl) -> tuple[int, int]:
    info = json.loads(kubectl("get", "--raw", "/version").stdout)
    return int(info["major"]), int("".join(ch for ch in info["minor"] if ch.isdigit()))


@pytest.fixture
def no_webhook(kubectl):
    """Fail loudly if a cells.dev admission webhook is registered: the refusal must be the server's own."""
    version = server_minor(kubectl)
    if version < (1, 25):
        pytest.skip(
            f"kube-apiserver {version[0]}.{version[1]} has no CEL validation rules for CRDs "
            "(x-kubernetes-validations needs >= 1.25); run with K8S_VERSION=1.37.2"
        )
    for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        for cfg in kubectl.get(kind)["items"]:
            groups = {g for w in cfg.get("webhooks") or [] for r in w.get("rules") or [] for g in r["apiGroups"]}
            assert "cells.dev" not in groups and "*" not in groups, f"{kind} {cfg['metadata']['name']} is registered"
    return version


def refused(kubectl: Kubectl, namespace: str, *args: str, input: str | None = None) -> str:
    """Run a kubectl write that must be refused by the API server's validation; return its message."""
    proc = kubectl(*args, "-n", namespace, input=input, check=False)
    assert proc.returncode != 0, f"kubectl {' '.join(args)} was accepted:\n{proc.stdout}"
    assert "is invalid" in proc.stderr, proc.stderr  # 422 Invalid from validation, not a webhook denial
    assert "admission webhook" not in proc.stderr, proc.stderr
    return proc.stderr


def apply_refused(kubectl: Kubectl, namespace: str, manifest: dict) -> str:
    return refused(kubectl, namespace, "apply", "-f", "-", input=json.dumps(manifest))


def set_status(kubectl: Kubectl, namespace: str, kind: str, name: str, status: dict) -> None:
    """Write status as the operator does: through the status subresource (spec is left untouched)."""
    kubectl.merge_patch(kind, name, namespace, {"status": status}, subresource="status")


def patch_spec(kubectl: Kubectl, namespace: str, name: str, spec: dict, check: bool = True):
    return kubectl.merge_patch("cell", name, namespace, {"spec": spec}, check=check)


# ---------------------------------------------------------------------------------------------- Cell
def test_id_may_change_until_registered_and_never_after(kubectl, namespace, no_webhook):
    kubectl.apply(cell_manifest("a", 1), namespace)
    # Not registered yet (a duplicate id the user is fixing, say): the id can still change.
    patch_spec(kubectl, namespace, "a", {"id": 2})
    assert kubectl.get("cell", "a", namespace)["spec"]["id"] == 2
    set_status(
        kubectl, namespace, "cell", "a", {"registeredId": None}
    )  # "not registered": the operator writes None (merge patch: removed)
    patch_spec(kubectl, namespace, "a", {"id": 3})

    set_status(kubectl, namespace, "cell", "a", {"registeredId": 3})
    error = refused(kubectl, namespace, *merge_patch_args("cell", "a", {"spec": {"id": 4}}))
    assert "spec.id" in error
    assert "Cell 'a' is refused (IdImmutable): id cannot change once registered" in error
    assert "set it back to status.registeredId" in error
    assert kubectl.get("cell", "a", namespace)["spec"]["id"] == 3
    # What may still change: everything else, and status writes (the rule looks at spec changes only).
    patch_spec(kubectl, namespace, "a", {"address": "moved.cells.svc:8080"})
    kubectl("label", "cell", "a", "-n", namespace, "touched=yes")
    set_status(kubectl, namespace, "cell", "a", {"registeredId": 3, "state": "Active"})


def test_allocated_ranges_only_grow(kubectl, namespace, no_webhook):
    allocated = {"minval": 10 * SIZE, "maxval": 11 * SIZE - 1}
    kubectl.apply(cell_manifest("a", 1, sequenceRanges=[allocated]), namespace)
    # Before allocation the user may rewrite the ranges freely.
    patch_spec(kubectl, namespace, "a", {"sequenceRanges": [allocated, {"minval": 1, "maxval": SIZE}]})
    patch_spec(kubectl, namespace, "a", {"sequenceRanges": [allocated]})
    set_status(kubectl, namespace, "cell", "a", {"registeredId": 1, "sequenceRanges": [allocated]})

    moved = {"minval": 20 * SIZE, "maxval": 21 * SIZE - 1}
    for ranges in ([moved], [{"minval": 10 * SIZE, "maxval": 10 * SIZE + 5}], []):
        error = refused(kubectl, namespace, *merge_patch_args("cell", "a", {"spec": {"sequenceRanges": ranges}}))
        assert "spec.sequenceRanges" in error and "(RangeImmutable)" in error, error
    assert kubectl.get("cell", "a", namespace)["spec"]["sequenceRanges"] == [allocated]

    patch_spec(kubectl, namespace, "a", {"sequenceRanges": [moved, allocated]})  # grows: allowed, in any order
    assert kubectl.get("cell", "a", namespace)["spec"]["sequenceRanges"] == [moved, allocated]
    # Dropping spec.sequenceRanges altogether hands allocation back to the operator, which keeps the
    # published ranges (the planner's rule for an absent list), so the server allows it too.
    kubectl(
        "patch", "cell", "a", "-n", namespace, "--type=json", "-p", '[{"op": "remove", "path": "/spec/sequenceRanges"}]'
    )


def test_inverted_range_is_refused_at_create(kubectl, namespace, no_webhook):
    bad = cell_manifest("inverted", 9, skipRangeValidation=True, sequenceRanges=[{"minval": 9 * SIZE, "maxval": 5}])
    error = apply_refused(kubectl, namespace, bad)
    assert "spec.sequenceRanges[0]" in error
    assert "(InvalidRange) maxval is smaller than minval" in error
    assert kubectl.get_or_none("cell", "inverted", namespace) is None
    single = cell_manifest("single", 9, skipRangeValidation=True, sequenceRanges=[{"minval": 5, "maxval": 5}])
    kubectl.apply(single, namespace)  # minval == maxval is a range of one id


def test_registered_by_the_real_operator_then_refused_by_the_server(kubectl, namespace, no_webhook, operator):
    """End to end: the operator (no webhook) registers the Cell; the API server then refuses an id change."""
    kubectl.apply(cell_manifest("c1", 1), namespace)
    obj = wait_ready(kubectl, "cell", "c1", namespace)
    assert obj["status"]["registeredId"] == 1
    error = refused(kubectl, namespace, *merge_patch_args("cell", "c1", {"spec": {"id": 5}}))
    assert "Cell 'c1' is refused (IdImmutable)" in error
    grown = [*obj["status"]["sequenceRanges"], {"minval": 10**15, "maxval": 10**15 + SIZE}]
    error = refused(kubectl, namespace, *merge_patch_args("cell", "c1", {"spec": {"sequenceRanges": grown[1:]}}))
    assert "(RangeImmutable)" in error
    patch_spec(kubectl, namespace, "c1", {"sequenceRanges": grown})
    assert len(wait_ready(kubectl, "cell", "c1", namespace)["status"]["sequenceRanges"]) == 2


# --------------------------------------------------------------------------------------- RoutingRule
def rule(name: str, spec: dict) -> dict:
    return {"apiVersion": "cells.dev/v1alpha1", "kind": "RoutingRule", "metadata": {"name": name}, "spec": spec}


MATCH = {"type": "cookie", "regexName": "^_session$", "regexValue": "^(?<cell_name>cell-\\d+)-"}
CLASSIFY = {"action": "classify"}
PROXY = {"action": "proxy"}
FIRST_CELL = {"type": "FIRST_CELL"}
REFUSED_RULES = [
    ("classify-without-section", CLASSIFY, "spec.classify", "(MissingClassify)"),
    (
        "classify-with-proxy",
        {**CLASSIFY, "classify": FIRST_CELL, "proxy": {"address": "a:1"}},
        "spec.proxy",
        "(ConflictingAction)",
    ),
    (
        "prefix-without-value",
        {**CLASSIFY, "classify": {"type": "SESSION_PREFIX"}},
        "spec.classify.value",
        "(MissingValue)",
    ),
    (
        "id-empty-value",
        {**CLASSIFY, "classify": {"type": "CELL_ID", "value": ""}},
        "spec.classify.value",
        "(MissingValue)",
    ),
    (
        "first-with-value",
        {**CLASSIFY, "classify": {**FIRST_CELL, "value": "1"}},
        "spec.classify.value",
        "(ValueNotAllowed)",
    ),
    (
        "proxy-with-classify",
        {**PROXY, "proxy": {"address": "a:1"}, "classify": FIRST_CELL},
        "spec.classify",
        "(ConflictingAction)",
    ),
    ("proxy-both-targets", {**PROXY, "proxy": {"cellRef": "c", "address": "a:1"}}, "spec.proxy", "(InvalidProxy)"),
]


@pytest.mark.parametrize(("name", "spec", "field", "reason"), REFUSED_RULES, ids=[r[0] for r in REFUSED_RULES])
def test_rule_that_cannot_say_what_to_do_is_refused(kubectl, namespace, no_webhook, name, spec, field, reason):
    error = apply_refused(kubectl, namespace, rule(name, {"ruleset": "s", "match": MATCH, **spec}))
    assert field in error and reason in error, error
    assert kubectl.get_or_none("routingrule", name, namespace) is None


ACCEPTED_RULES = [
    ("session", {"action": "classify", "classify": {"type": "SESSION_PREFIX", "value": "${cell_name}"}}),
    ("first-cell", {"action": "classify", "classify": {"type": "FIRST_CELL"}}),
    ("first-cell-empty-value", {"action": "classify", "classify": {"type": "FIRST_CELL", "value": ""}}),
    ("to-cell", {"action": "proxy", "proxy": {"cellRef": "cell-1"}}),
    ("to-address", {"action": "proxy", "proxy": {"address": "10.0.0.1:8080"}}),
    # No target is valid since issue 13: published as {"action": "proxy"}, the router's default upstream.
    ("to-default", {"action": "proxy"}),
    ("to-default-empty", {"action": "proxy", "proxy": {}}),
    ("to-default-empty-ref", {"action": "proxy", "proxy": {"cellRef": "", "address": "a:1"}}),
]


def test_rules_that_say_what_to_do_are_accepted_and_fixable(kubectl, namespace, no_webhook):
    """The rules refuse exactly the broken shapes: each valid action is stored, and a refused edit is fixable."""
    kubectl.apply([rule(name, {"ruleset": "s", "match": MATCH, **spec}) for name, spec in ACCEPTED_RULES], namespace)
    stored = {r["metadata"]["name"]: r["spec"] for r in kubectl.get("routingrules", namespace=namespace)["items"]}
    assert sorted(stored) == sorted(name for name, _ in ACCEPTED_RULES)
    # Turning a proxy rule into a classify rule must drop the proxy section in the same write.
    to_classify = {"action": "classify", "classify": {"type": "FIRST_CELL"}}
    error = refused(kubectl, namespace, *merge_patch_args("routingrule", "to-cell", {"spec": to_classify}))
    assert "(ConflictingAction)" in error
    kubectl.merge_patch("routingrule", "to-cell", namespace, {"spec": {**to_classify, "proxy": None}})
    assert kubectl.get("routingrule", "to-cell", namespace)["spec"]["action"] == "classify"


TOKEN_STEP = {"type": "routable-token-payload", "input": ["${payload}", "${payload_length}"], "output": "decoded"}
TOKEN_RULE = {
    "ruleset": "s",
    "id": "session_token_header_private_token",
    "match": {
        "type": "header",
        "name": "private-token",
        "regexValue": SAMPLE_SPECS["token-private-token"]["match"]["regexValue"],
    },
    "transform": [TOKEN_STEP],
    "validate": {"exist": ["${decoded.c}"]},
    "action": "classify",
    "classify": {"type": "CELL_ID", "value": "${decoded.c}"},
}
REFUSED_TOKEN_RULES = [
    ("name-and-pattern", {"match": {**TOKEN_RULE["match"], "regexName": "^x$"}}, "(ConflictingName)"),
    ("five-steps", {"transform": [TOKEN_STEP] * 5}, "spec.transform"),
    ("bad-output", {"transform": [{**TOKEN_STEP, "output": "a.b"}]}, "spec.transform[0].output"),
    ("three-inputs", {"transform": [{**TOKEN_STEP, "input": ["a", "b", "c"]}]}, "spec.transform[0].input"),
    ("empty-exist", {"validate": {"exist": []}}, "spec.validate.exist"),
    ("bad-id", {"id": "-x"}, "spec.id"),
    ("bad-name", {"match": {**TOKEN_RULE["match"], "name": "private token"}}, "spec.match.name"),
]


def test_token_rule_fields_are_stored_and_broken_shapes_refused(kubectl, namespace, no_webhook):
    """Issue 18's fields pass the structural schema unpruned; what the schema can say about them it refuses."""
    kubectl.apply([rule("token", TOKEN_RULE)], namespace)
    stored = kubectl.get("routingrule", "token", namespace)["spec"]
    assert {k: stored[k] for k in TOKEN_RULE} == TOKEN_RULE
    for name, change, expected in REFUSED_TOKEN_RULES:
        error = apply_refused(kubectl, namespace, rule(name, {**TOKEN_RULE, **change}))
        assert expected in error, (name, error)
