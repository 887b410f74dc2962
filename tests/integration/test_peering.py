"""Two operator replicas with kopf peering (the production overlay's mode): exactly one acts; when it dies,
the standby takes over; no lost update and no overlapping allocation."""

from __future__ import annotations

import itertools
from pathlib import Path

import yaml

from tests.support.cells import cell_manifest, ready_condition, records, wait_ready
from tests.support.kubectl import eventually
from tests.support.operator import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]


def test_one_replica_acts_and_the_standby_takes_over(kubectl, namespace, control_plane, tmp_path):
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "overlays" / "production" / "kopf-peering.yaml").read_text()))
    crd = next(d for d in docs if d["kind"] == "CustomResourceDefinition")
    kubectl.apply(crd)
    kubectl.wait_crds([crd["metadata"]["name"]])
    peering = next(d for d in docs if d["kind"] == "KopfPeering")
    peering["metadata"]["namespace"] = namespace
    kubectl.apply(peering)

    env = {"CELLS_PEERING_LIFETIME": "8"}
    args = ["-n", namespace, "--peering-name=cells-operator"]
    active = OperatorProcess(control_plane.kubeconfig, tmp_path / "active.log", [*args, "--priority=1000"], env)
    standby = OperatorProcess(control_plane.kubeconfig, tmp_path / "standby.log", [*args, "--priority=999"], env)
    active.start()
    eventually(lambda: "Keep-alive in 'cells-operator'" in active.log_text(), message="active peering")
    standby.start()
    try:
        eventually(
            lambda: (
                "Pausing operations in favour of" in standby.log_text()
                or "Pausing the watch-stream for cells.v1alpha1.cells.dev" in standby.log_text()
            ),
            message="standby paused in favour of the higher priority",
        )
        kubectl.apply([cell_manifest(f"c{i}", i, firstCell=i == 1) for i in range(1, 11)], namespace)
        for i in range(1, 11):
            wait_ready(kubectl, "cell", f"c{i}", namespace, timeout=90)
        assert "/cells/c1/status" in active.log_text()
        assert "/cells/c1/status" not in standby.log_text()  # exactly one acts

        active.kill()  # no goodbye: the standby must notice the silence (peering lifetime: 8 s)
        kubectl.apply([cell_manifest(f"c{i}", i) for i in range(11, 16)], namespace)
        for i in range(11, 16):
            wait_ready(kubectl, "cell", f"c{i}", namespace, timeout=120)
        assert "/cells/c11/status" in standby.log_text()
    finally:
        active.stop()
        standby.stop()

    topology, config = records(kubectl, namespace)
    assert len(topology["cells"]) == 15 and len(config["cells"]) == 15
    ranges = sorted((r["minval"], r["maxval"]) for c in topology["cells"] for r in c["sequence_ranges"])
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges)), "overlapping allocation"
    for obj in kubectl.get("cells", namespace=namespace)["items"]:
        assert ready_condition(obj)["status"] == "True"
