"""Issue 11: high availability the Kubernetes way -- two replicas elect one leader on a coordination.k8s.io
Lease (no extra CRD). The leader is SIGKILLed in the middle of a burst; the standby takes over; nothing is
lost, no range overlaps, and the audit log proves that the two never wrote at the same time."""

from __future__ import annotations

import itertools
from datetime import datetime

from tests.support.audit import audit_writes
from tests.support.cells import cell_manifest, ready_condition, records, wait_ready
from tests.support.kubectl import eventually
from tests.support.operator import OperatorProcess, metric_value


def elected(kubectl, namespace, *, args=(), tmp_path, names=("a", "b")):
    common = ["-n", namespace, "--leader-elect", f"--leader-elect-namespace={namespace}", *args]
    return [OperatorProcess(kubectl.kubeconfig, tmp_path / f"{n}.log", common) for n in names]


def leads(replica) -> bool:
    try:
        return replica.running() and metric_value(replica.scrape(), "cells_operator_leader") == 1
    except OSError:  # not serving its metrics yet
        return False


def leader_of(replicas):
    leading = [r for r in replicas if leads(r)]
    return leading[0] if len(leading) == 1 else None


def test_leader_killed_mid_burst_the_standby_takes_over_nothing_lost(kubectl, namespace, control_plane, tmp_path):
    a, b = elected(kubectl, namespace, tmp_path=tmp_path)
    a.start()
    eventually(lambda: leader_of([a]), message="the first replica leads")
    b.start()
    try:
        eventually(lambda: b.readyz() == (200, "ok: standby: waiting for the Lease\n"), message="b is a ready standby")
        lease = kubectl.get("lease", "cells-operator", namespace)
        assert lease["spec"]["holderIdentity"] and lease["spec"]["leaseDurationSeconds"] == 15

        cells = [cell_manifest(f"c{i:02}", i, firstCell=i == 1) for i in range(1, 31)]
        kubectl.apply(cells[:15], namespace)
        eventually(lambda: len(records(kubectl, namespace)[0]["cells"]) >= 1, message="the leader works")
        assert metric_value(b.scrape(), "cells_operator_leader") == 0
        a.kill()  # no goodbye: b must wait out the lease duration, then take over
        kubectl.apply(cells[15:], namespace)
        for i in range(1, 31):
            wait_ready(kubectl, "cell", f"c{i:02}", namespace, timeout=120)
        assert leader_of([b]) is b
        assert kubectl.get("lease", "cells-operator", namespace)["spec"]["leaseTransitions"] >= 1
    finally:
        a.stop()
        b.stop()

    topology, config = records(kubectl, namespace)
    assert len(topology["cells"]) == 30 and len(config["cells"]) == 30
    ranges = sorted((r["minval"], r["maxval"]) for c in topology["cells"] for r in c["sequence_ranges"])
    assert all(x[1] < y[0] for x, y in itertools.pairwise(ranges)), "overlapping allocation"
    for obj in kubectl.get("cells", namespace=namespace)["items"]:
        assert ready_condition(obj)["status"] == "True"

    # Never two writers: every write of the first leader precedes every write of the second (the Lease
    # itself excepted: candidates write it by design).
    writes = [w for w in audit_writes(control_plane.logdir, namespace) if w["objectRef"]["resource"] != "leases"]
    by_agent: dict[str, list[datetime]] = {}
    for w in writes:
        agent = w.get("userAgent", "")
        if agent.startswith("cells-operator/"):
            by_agent.setdefault(agent, []).append(datetime.fromisoformat(w["stageTimestamp"].replace("Z", "+00:00")))
    assert len(by_agent) == 2, f"two replicas wrote over the test: {sorted(by_agent)}"
    first, second = sorted(by_agent.values(), key=min)
    assert max(first) < min(second), "the two replicas wrote at the same time"


def test_sigterm_releases_the_lease_so_the_standby_takes_over_at_once(kubectl, namespace, tmp_path):
    a, b = elected(kubectl, namespace, tmp_path=tmp_path)
    a.start()
    eventually(lambda: leader_of([a]), message="the first replica leads")
    b.start()
    try:
        eventually(lambda: b.readyz()[0] == 200, message="b ready")
        holder = kubectl.get("lease", "cells-operator", namespace)["spec"]["holderIdentity"]
        a.stop()  # SIGTERM, as a rolling update does
        assert a.proc.returncode == 0
        # Released, not left to expire: right after a exits the Lease names nobody, or already b.
        after = kubectl.get("lease", "cells-operator", namespace)["spec"]
        assert after.get("holderIdentity", "") != holder
        assert "released the Lease" in a.log_text()
        eventually(lambda: leader_of([b]), message="b leads")
        kubectl.apply(cell_manifest("c1", 1, firstCell=True), namespace)
        wait_ready(kubectl, "cell", "c1", namespace)
    finally:
        a.stop()
        b.stop()
