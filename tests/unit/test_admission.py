"""Admission review without a cluster: what is refused, what is let through, and the rendered configurations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kopf
import pytest
import yaml

from cells_formats.records import Topology
from cells_operator.admission import (
    FAILURE_POLICY,
    NEW_UID,
    cell_finalizers_at_creation,
    review_cell,
    review_rule,
    webhook_configurations,
)
from cells_operator.certs import ensure_self_signed, subject_alt_names
from cells_operator.config import FINALIZER, OperatorConfig
from cells_operator.ranges import DEFAULT_SEQUENCE_SIZE as SIZE
from cells_operator.topology import CellObject, plan_topology
from cells_operator.webhook import advertised_hosts, serving_cert
from tests.support.cells import cell_manifest

ROOT = Path(__file__).resolve().parents[2]


def cell(name: str, id_: int, *, uid: str | None = None, created: str = "2026-01-01T00:00:00Z", **spec) -> dict:
    metadata = {"uid": uid or f"uid-{name}", "creationTimestamp": created, "generation": 1}
    return cell_manifest(name, id_, metadata=metadata, **spec)


def published(*cells: dict) -> Topology:
    """The records the operator would have published for ``cells``."""
    return plan_topology(Topology(), [CellObject.from_api(c) for c in cells]).records


def refused(review) -> str | None:
    return review.problem.reason if review.problem else None


# ---------------------------------------------------------------------------------------------- cells
def test_a_valid_new_cell_is_allowed():
    a = cell("a", 1, firstCell=True)
    assert refused(review_cell(cell("b", 2), None, [a], published(a))) is None


@pytest.mark.parametrize(
    ("new", "reason"),
    [
        (cell("b", 1), "DuplicateId"),
        (cell("b", 2, sessionPrefix="cell-1"), "DuplicateSessionPrefix"),
        (cell("b", 2, firstCell=True), "DuplicateFirstCell"),
        (cell("b", 2, sequenceRanges=[{"minval": 5, "maxval": SIZE + 5}]), "RangeOverlap"),
        (
            cell(
                "b",
                2,
                sequenceRanges=[{"minval": 2 * SIZE, "maxval": 3 * SIZE}, {"minval": 3 * SIZE, "maxval": 4 * SIZE}],
            ),
            "RangeOverlap",
        ),
        (cell("b", 2, address="::1:8080"), "InvalidAddress"),  # IPv6 without brackets
        (cell("b", 2, state="Draining", firstCell=True), "FirstCellNotActive"),
    ],
)
def test_a_new_cell_that_collides_or_is_invalid_is_refused(new, reason):
    a = cell("a", 1, firstCell=True)
    assert refused(review_cell(new, None, [a], published(a))) == reason


def test_a_collision_with_a_cell_not_yet_registered_refuses_the_newer_one():
    """Two Cells applied in one sync: the second is refused even before the operator published the first."""
    a = cell("a", 7)
    review = review_cell(cell("b", 7), None, [a], Topology())
    assert refused(review) == "DuplicateId"
    assert "'a'" in review.problem.message


def test_ranges_of_deleted_cells_are_never_handed_out_again():
    gone = cell("gone", 9)
    records = published(gone)
    after_delete = plan_topology(
        records, [CellObject.from_api({**gone, "metadata": {**gone["metadata"], "deletionTimestamp": "x"}})]
    ).records
    assert after_delete.retired_ranges
    new = cell("b", 2, sequenceRanges=[{"minval": 1, "maxval": SIZE}])
    assert refused(review_cell(new, None, [], after_delete)) == "RangeOverlap"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": 5}, "IdImmutable"),
        ({"sequenceRanges": [{"minval": 1, "maxval": 2}]}, "RangeImmutable"),
    ],
)
def test_changing_an_immutable_field_is_refused(change, reason):
    a = cell("a", 1)
    new = {**a, "spec": {**a["spec"], **change}}
    review = review_cell(new, a, [a], published(a))
    assert refused(review) == reason
    assert "Cell 'a' is refused" in review.message("Cell", "a")


def test_growing_the_ranges_and_changing_the_address_are_allowed():
    a = cell("a", 1)
    new = {
        **a,
        "spec": {
            **a["spec"],
            "address": "elsewhere:1",
            "sequenceRanges": [{"minval": 1, "maxval": SIZE}, {"minval": 10 * SIZE, "maxval": 11 * SIZE}],
        },
    }
    assert refused(review_cell(new, a, [a], published(a))) is None


def test_updates_that_leave_the_spec_alone_are_never_refused():
    """An invalid Cell must stay labelable and deletable: finalizer and label updates pass."""
    a, b = cell("a", 1), cell("b", 1)
    labelled = {**b, "metadata": {**b["metadata"], "labels": {"x": "y"}, "finalizers": []}}
    assert refused(review_cell(labelled, b, [a, b], published(a))) is None
    deleting = {
        **b,
        "metadata": {**b["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {**b["spec"], "id": 3},
    }
    assert refused(review_cell(deleting, b, [a, b], published(a))) is None


def test_a_new_cell_reusing_the_name_of_a_vanished_one_is_judged_as_new():
    """A record whose Cell was deleted without its finalizer belongs to another object (another uid)."""
    old = cell("a", 1)
    records = published(old)
    assert refused(review_cell(cell("a", 2), None, [], records)) is None
    assert records.record("a").uid != NEW_UID


def test_the_finalizer_is_added_at_creation_once():
    assert cell_finalizers_at_creation(cell("a", 1)) == [FINALIZER]
    other = cell("a", 1)
    other["metadata"]["finalizers"] = ["example.com/keep"]
    assert cell_finalizers_at_creation(other) == ["example.com/keep", FINALIZER]
    other["metadata"]["finalizers"].append(FINALIZER)
    assert cell_finalizers_at_creation(other) is None


# ---------------------------------------------------------------------------------------------- rules
def rule(**spec) -> dict:
    return {"metadata": {"name": "r"}, "spec": {"ruleset": "main", **spec}}


def classify(pattern: str, value: str) -> dict:
    return rule(
        action="classify",
        match={"type": "path", "regexValue": pattern},
        classify={"type": "SESSION_PREFIX", "value": value},
    )


@pytest.mark.parametrize(
    ("new", "reason"),
    [
        (classify("^/(?<x>[a-z]+", "${x}"), "InvalidPattern"),
        (classify("^/(?<x>[a-z]+)", "${y}"), "UnknownInterpolation"),
        (classify("(?<=a)b", "b"), None),
        (classify("^/(?<x>[a-z]+)", "${x}"), None),
        (rule(action="proxy", proxy={"cellRef": "a", "address": "h:1"}), "InvalidProxy"),
        (rule(ruleset="Bad Name", action="classify", classify={"type": "FIRST_CELL"}), "InvalidRuleset"),
        (rule(action="bounce"), "InvalidSpec"),
    ],
)
def test_rules_that_can_never_be_published_are_refused(new, reason):
    assert refused(review_rule(new, None, Topology())) == reason


def test_a_proxy_to_a_cell_not_registered_yet_is_allowed_with_a_warning():
    """GitOps applies Cells and rules together: the Cell registers a moment after the rule is admitted."""
    new = rule(action="proxy", proxy={"cellRef": "a"})
    review = review_rule(new, None, Topology())
    assert review.allowed
    assert "CellNotFound" in review.warnings[0]
    assert review_rule(new, None, published(cell("a", 1))).warnings == ()


def test_rule_updates_that_leave_the_spec_alone_are_never_refused():
    bad = classify("(", "x")
    relabelled = {**bad, "metadata": {"name": "r", "labels": {"a": "b"}}}
    assert review_rule(relabelled, bad, Topology()).allowed


# ---------------------------------------------------------------------------------------------- wiring
def test_deploy_webhook_configurations_are_what_the_code_renders():
    """deploy/webhook/webhooks.yaml is generated from the code: regenerate it, never edit it by hand."""
    shipped = (ROOT / "deploy" / "webhook" / "webhooks.yaml").read_text()
    generated = subprocess.run(
        [sys.executable, "-m", "cells_operator.cli", "manifests", "webhooks"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shipped == generated, "run: cells-operator manifests webhooks > deploy/webhook/webhooks.yaml"
    docs = list(yaml.safe_load_all(shipped))
    assert [d["kind"] for d in docs] == ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"]
    assert {h["failurePolicy"] for d in docs for h in d["webhooks"]} == {FAILURE_POLICY}
    assert all(h["clientConfig"]["service"]["name"] == "cells-operator-webhook" for d in docs for h in d["webhooks"])


def test_url_configurations_carry_the_ca_and_the_handler_path():
    validating, mutating = webhook_configurations("x", url="https://127.0.0.1:9443/", ca_bundle=b"PEM")
    assert [h["clientConfig"]["url"] for h in validating["webhooks"]] == [
        "https://127.0.0.1:9443/validate-cell",
        "https://127.0.0.1:9443/validate-routingrule",
    ]
    assert mutating["webhooks"][0]["clientConfig"] == {"url": "https://127.0.0.1:9443/default-cell", "caBundle": "UEVN"}
    assert mutating["webhooks"][0]["rules"][0]["operations"] == ["CREATE"]
    with pytest.raises(ValueError):
        webhook_configurations("x")


def test_namespace_patterns_follow_kopf():
    config = OperatorConfig(namespaces=("cells", "team-*"))
    assert config.manages("cells") and config.manages("team-a")
    assert not config.manages("other")
    assert OperatorConfig().manages("anything")


def test_self_signed_certificate_chains_to_its_ca_and_names_the_hosts(tmp_path):
    cert = ensure_self_signed(tmp_path, ["127.0.0.1", "localhost"])
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(cert.cafile), str(cert.certfile)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stderr
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(cert.certfile)], capture_output=True, text=True
    ).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    first = cert.certfile.read_bytes()
    assert ensure_self_signed(tmp_path, ["127.0.0.1", "localhost"]).certfile.read_bytes() == first  # reused
    assert ensure_self_signed(tmp_path, ["::1"]).certfile.read_bytes() != first  # other hosts: a new one
    assert subject_alt_names(["::1", "a.svc"]) == "IP:::1,DNS:a.svc"


def test_the_address_the_api_server_dials():
    assert advertised_hosts(OperatorConfig(webhook_listen="0.0.0.0:9443")) == ["127.0.0.1", "localhost"]
    assert advertised_hosts(OperatorConfig(webhook_listen="127.0.0.1:9443")) == ["127.0.0.1"]
    assert advertised_hosts(OperatorConfig(webhook_listen="[::1]:9443")) == ["::1"]
    assert advertised_hosts(OperatorConfig(webhook_listen="0.0.0.0:9443", webhook_host="op.example")) == ["op.example"]
    with pytest.raises(ValueError, match="host:port"):
        _ = OperatorConfig(webhook_listen="9443").webhook_address


def test_a_missing_certificate_is_a_clear_startup_error(tmp_path):
    with pytest.raises(kopf.PermanentError, match="mount cert-manager's Secret there"):
        serving_cert(OperatorConfig(webhook_listen="0.0.0.0:9443", webhook_cert_dir=str(tmp_path)))
    made = serving_cert(
        OperatorConfig(webhook_listen="127.0.0.1:9443", webhook_cert_dir=str(tmp_path), webhook_self_signed=True)
    )
    assert made.present() and made.cafile.name == "ca.crt"
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(kopf.PermanentError, match="cannot make the webhook certificate"):
        serving_cert(
            OperatorConfig(webhook_listen="127.0.0.1:1", webhook_cert_dir=str(blocked / "x"), webhook_self_signed=True)
        )
