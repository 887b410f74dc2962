"""Published ConfigMaps edited or deleted by hand are restored, and lost records never cause a
re-allocation: cells re-claim the ranges their status reports."""

from __future__ import annotations

from tests.support.cells import cell_manifest, records, wait_ready
from tests.support.kubectl import eventually
from tests.support.rules import CATCH_ALL, SESSION
from tests.support.rules import rule_manifest as rule


def test_hand_edits_and_deletions_are_restored(kubectl, namespace, operator):
    kubectl.apply([cell_manifest(f"c{i}", i, firstCell=i == 1) for i in range(1, 6)], namespace)
    kubectl.apply([rule("session", SESSION), rule("catch-all", CATCH_ALL)], namespace)
    wait_ready(kubectl, "routingrule", "catch-all", namespace)
    for i in range(1, 6):
        wait_ready(kubectl, "cell", f"c{i}", namespace)
    router_before = kubectl.get("configmap", "cells-router-rules", namespace)["data"]
    topology_before, config_before = records(kubectl, namespace)

    # a hand edit of the router rules, even one that makes them unreadable, is reverted
    kubectl.merge_patch("configmap", "cells-router-rules", namespace, {"data": {"session_token.json": "[]"}})
    eventually(
        lambda: kubectl.get("configmap", "cells-router-rules", namespace)["data"] == router_before,
        message="router rules restored",
    )

    # a hand edit of config.toml is reverted from the records
    kubectl.merge_patch("configmap", "cells-topology", namespace, {"data": {"config.toml": "# emptied by hand\n"}})
    eventually(lambda: records(kubectl, namespace)[1] == config_before, message="config.toml restored")

    # the records deleted: rebuilt, every cell re-claims exactly its ranges (nothing re-allocated)
    kubectl("delete", "configmap", "cells-topology", "-n", namespace)

    def rebuilt():
        topology, _ = records(kubectl, namespace)
        return topology if len(topology["cells"]) == 5 else None

    topology = eventually(rebuilt, message="records rebuilt")
    ranges = {c["name"]: c["sequence_ranges"] for c in topology["cells"]}
    assert ranges == {c["name"]: c["sequence_ranges"] for c in topology_before["cells"]}
    kubectl.apply(cell_manifest("c6", 6), namespace)
    new = wait_ready(kubectl, "cell", "c6", namespace)["status"]["sequenceRanges"][0]
    assert new["minval"] > max(r["maxval"] for rs in ranges.values() for r in rs)
