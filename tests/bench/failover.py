"""``make bench`` (failover): how long the operator is without a leader when the leader goes away.

Two replicas with ``--leader-elect`` (client-go's defaults: lease 15 s, renew deadline 10 s, retry 2 s) on a
fresh local control plane. Each round stops the current leader -- by SIGKILL (a crashed pod: the standby
must wait out the lease) or by SIGTERM (a rolling update: the leader releases the Lease) -- creates a new
Cell at once, and measures the time from the stop until the standby reports itself leader and until that
Cell is Ready. Reported as the median and the worst of the rounds, next to the lease duration they are
bounded by.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from tests.bench.controlplane import fresh_control_plane
from tests.bench.dataplane import machine, replace_section
from tests.support.cells import cell_manifest, ready_condition
from tests.support.kubectl import eventually
from tests.support.operator import OperatorProcess, metric_value

ROOT = Path(__file__).resolve().parents[2]
NS = "failover"


def leads(replica: OperatorProcess) -> bool:
    try:
        return replica.running() and metric_value(replica.scrape(), "cells_operator_leader") == 1
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    cluster, kubectl, work = fresh_control_plane("failover", (NS,))
    common = ["-n", NS, "--leader-elect", f"--leader-elect-namespace={NS}"]
    replicas: list[OperatorProcess] = []
    results: dict[str, list[tuple[float, float]]] = {"SIGKILL": [], "SIGTERM": []}
    serial = 0

    def start() -> OperatorProcess:
        nonlocal serial
        serial += 1
        replica = OperatorProcess(cluster.kubeconfig, work / f"replica-{serial}.log", common)
        replica.start()
        replicas.append(replica)
        return replica

    try:
        first = start()
        eventually(lambda: leads(first), timeout=120, message="a leader")
        kubectl.apply(cell_manifest("c1", 1, firstCell=True), NS)
        next_id = 2
        for how in ["SIGKILL", "SIGTERM"] * args.rounds:
            standby = start()
            eventually(lambda s=standby: s.readyz()[0] == 200, timeout=120, message="standby ready")
            leader = next(r for r in replicas if leads(r))
            stopped = time.monotonic()
            leader.kill() if how == "SIGKILL" else leader.stop()
            name = f"c{next_id}"
            kubectl.apply(cell_manifest(name, next_id), NS)
            next_id += 1
            eventually(lambda s=standby: leads(s), timeout=120, interval=0.1, message="takeover")
            led = time.monotonic() - stopped
            eventually(
                lambda n=name: ready_condition(kubectl.get("cell", n, NS)).get("status") == "True",
                timeout=120,
                interval=0.1,
                message="the new Cell Ready",
            )
            results[how].append((led, time.monotonic() - stopped))
            replicas.remove(leader)
    finally:
        for replica in replicas:
            replica.stop()
        cluster.stop()

    lines = []
    for how, rounds in results.items():
        leaders, readies = [r[0] for r in rounds], [r[1] for r in rounds]
        lines.append(
            f"| {how} | {len(rounds)} | {statistics.median(leaders):.1f} s (max {max(leaders):.1f}) | "
            f"{statistics.median(readies):.1f} s (max {max(readies):.1f}) |"
        )
    body = (
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}; lease 15 s, renew deadline 10 s, retry 2 s.\n\n"
        "| leader stopped by | rounds | until the standby leads | until a Cell created at the stop is Ready |\n"
        "|---|---|---|---|\n" + "\n".join(lines)
    )
    print(body)
    if not args.no_write:
        replace_section(ROOT / "docs" / "benchmarks.md", "failover", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
