"""Issue 13 on the real control plane: what the operator publishes is what GitLab's own Topology Service and
HTTP router accept (ADR 0010)."""

from __future__ import annotations

import json

import pytest

from tests.support.cells import cell_manifest, events_for, ready_condition, records, touch, wait_ready, wait_reason
from tests.support.kubectl import eventually
from tests.support.operator import operator_running
from tests.support.rules import rule_manifest as rule

SIZE = 100_000_000_000
TOP = 2**57 - 1


def config_toml_text(kubectl, namespace: str) -> str:
    return kubectl.get("configmap", "cells-topology", namespace)["data"]["config.toml"]


def test_skip_range_validation_is_rendered_where_the_real_service_reads_it(kubectl, namespace, operator):
    small = {"minval": 10**13, "maxval": 10**13 + 999}
    kubectl.apply(
        [
            cell_manifest("legacy", 1, firstCell=True),
            cell_manifest("review-app", 2, skipRangeValidation=True, sequenceRanges=[small]),
        ],
        namespace,
    )
    wait_ready(kubectl, "cell", "legacy", namespace)
    wait_ready(kubectl, "cell", "review-app", namespace)
    _, config = records(kubectl, namespace)
    by_id = {c["id"]: c for c in config["cells"]}
    assert by_id[2]["sequence_ranges"] == [{"minval": 10**13, "maxval": 10**13 + 999, "skip_range_validation": True}]
    assert set(by_id[1]["sequence_ranges"][0]) == {"minval", "maxval"}  # not set: not rendered
    assert "skip_range_validation" not in by_id[2]


def test_offline_cells_stay_in_the_authoritative_record(kubectl, namespace, operator):
    kubectl.apply(
        [cell_manifest("a", 1, firstCell=True), cell_manifest("b", 2), cell_manifest("c", 3, state="Draining")],
        namespace,
    )
    for name in "abc":
        wait_ready(kubectl, "cell", name, namespace)
    _, before = records(kubectl, namespace)
    kubectl.merge_patch("cell", "b", namespace, {"spec": {"state": "Offline"}})
    eventually(
        lambda: next(c for c in records(kubectl, namespace)[0]["cells"] if c["name"] == "b")["state"] == "Offline",
        message="Offline published",
    )
    obj = wait_ready(kubectl, "cell", "b", namespace)
    assert "Offline: kept in config.toml" in ready_condition(obj)["message"]
    _, config = records(kubectl, namespace)
    # every state: the same id, address, prefix and ranges as before, in config.toml
    assert config == before
    assert [c["id"] for c in config["cells"]] == [1, 2, 3]


def test_the_57_bit_edge_on_the_api_server(kubectl, namespace, operator):
    # The schema refuses a range far past 2^57-1 at the door (its bound is compared as a float64, so it
    # cannot be exact at the last ID: the planner's check is, below)...
    far = cell_manifest("far", 9, sequenceRanges=[{"minval": 1, "maxval": 2**58}])
    proc = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(far), check=False)
    assert proc.returncode != 0 and "maxval" in proc.stderr
    # ...a range ending exactly at 2^57-1 is the last one...
    last = [{"minval": TOP - SIZE + 1, "maxval": TOP}]
    kubectl.apply(cell_manifest("last", 1, firstCell=True, sequenceRanges=last), namespace)
    wait_ready(kubectl, "cell", "last", namespace)
    # ...one ID past it is InvalidRange...
    by_one = cell_manifest(
        "by-one", 3, skipRangeValidation=True, sequenceRanges=[{"minval": TOP + 1, "maxval": TOP + 1}]
    )
    kubectl.apply(by_one, namespace)
    obj = wait_reason(kubectl, "cell", "by-one", namespace, "InvalidRange")
    assert "2^57-1" in ready_condition(obj)["message"]
    # ...and an allocation beyond it is RangeExhausted; nothing is published for either.
    kubectl.apply(cell_manifest("one-more", 2), namespace)
    obj = wait_reason(kubectl, "cell", "one-more", namespace, "RangeExhausted")
    assert "57-bit" in ready_condition(obj)["message"]
    topology, config = records(kubectl, namespace)
    assert [c["name"] for c in topology["cells"]] == ["last"]
    assert config["cells"][0]["sequence_ranges"] == [{"minval": TOP - SIZE + 1, "maxval": TOP}]


def test_addresses_as_upstream_writes_them(kubectl, namespace, operator):
    addresses = {
        "bare": "cell-2.gitlab.example",
        "ipv4": "10.1.2.3",
        "ipv6": "[2001:db8::7]",
        "ipv6-port": "[2001:db8::8]:8443",
    }
    kubectl.apply(
        [cell_manifest("first", 1, firstCell=True)]
        + [cell_manifest(name, i, address=a) for i, (name, a) in enumerate(addresses.items(), start=2)],
        namespace,
    )
    for name in addresses:
        wait_ready(kubectl, "cell", name, namespace)
    _, config = records(kubectl, namespace)
    assert {c["address"] for c in config["cells"]} >= set(addresses.values())
    bad = cell_manifest("unbracketed", 9, address="2001:db8::9")
    proc = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
    assert proc.returncode != 0 and "spec.address" in proc.stderr


def test_proxy_without_address_is_published_without_proxy(kubectl, namespace, operator):
    kubectl.apply(
        [
            cell_manifest("cell-1", 1, firstCell=True),
            rule(
                "health",
                {
                    "ruleset": "edge",
                    "priority": 10,
                    "match": {"type": "path", "regexValue": "^/-/health"},
                    "action": "proxy",
                },
            ),
            rule("empty-proxy", {"ruleset": "edge", "priority": 20, "action": "proxy", "proxy": {}}),
        ],
        namespace,
    )
    wait_ready(kubectl, "routingrule", "health", namespace)
    wait_ready(kubectl, "routingrule", "empty-proxy", namespace)
    cm = kubectl.get("configmap", "cells-router-rules", namespace)
    assert json.loads(cm["data"]["edge.json"]) == [
        {"id": "health", "match": {"type": "path", "regexValue": "^/-/health"}, "action": "proxy"},
        {"id": "empty-proxy", "action": "proxy"},
    ]


BASE = """# the platform team's Topology Service settings
env = "production"

[[serve]]
address = ":9095"
"""


def base_configmap(text: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ts-base"}, "data": {"config.toml": text}}


@pytest.fixture
def operator_with_base(control_plane, tmp_path, request):
    args = ["--standalone", "--base-config-configmap", "ts-base"]
    yield from operator_running(control_plane.kubeconfig, tmp_path / "operator.log", args, request)


def test_a_base_config_is_merged_and_a_bad_one_holds_the_last_published_file(kubectl, namespace, operator_with_base):
    kubectl.apply(base_configmap(BASE), namespace)
    kubectl.apply([cell_manifest("a", 1, firstCell=True), cell_manifest("b", 2)], namespace)
    wait_ready(kubectl, "cell", "a", namespace)
    wait_ready(kubectl, "cell", "b", namespace)
    text = config_toml_text(kubectl, namespace)
    assert text.startswith(BASE)  # their keys verbatim...
    _, config = records(kubectl, namespace)
    assert (config["env"], config["serve"]) == ("production", [{"address": ":9095"}])
    assert [c["id"] for c in config["cells"]] == [1, 2]  # ...and the operator's [[cells]]

    # A base that defines [[cells]] itself: Stalled with a reason and an Event, nothing published.
    kubectl.apply(base_configmap(BASE + "\n[[cells]]\nid = 99\n"), namespace)
    kubectl.apply(cell_manifest("c", 3), namespace)
    obj = wait_reason(kubectl, "cell", "c", namespace, "BaseConfigDefinesCells")
    assert ready_condition(obj)["status"] == "False"
    assert "the last published config.toml stays" in ready_condition(obj)["message"]
    eventually(
        lambda: [
            e
            for e in events_for(kubectl, namespace, "a")
            if e["reason"] == "BaseConfigDefinesCells" and e["type"] == "Warning"
        ],
        message="Warning Event",
    )
    assert config_toml_text(kubectl, namespace) == text  # the last published file stays

    # A base that does not parse: the same, with its own reason.
    kubectl.apply(base_configmap('env = "production'), namespace)
    touch(kubectl, namespace, "a", "1")
    wait_reason(kubectl, "cell", "a", namespace, "InvalidBaseConfig")
    assert config_toml_text(kubectl, namespace) == text

    # Fixed: the merge is published, with the new cell.
    kubectl.apply(base_configmap(BASE.replace("production", "staging")), namespace)
    touch(kubectl, namespace, "a", "2")
    wait_ready(kubectl, "cell", "c", namespace)
    wait_ready(kubectl, "cell", "a", namespace)
    _, config = records(kubectl, namespace)
    assert config["env"] == "staging"
    assert [c["id"] for c in config["cells"]] == [1, 2, 3]
