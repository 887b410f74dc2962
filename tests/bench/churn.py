"""``make soak-churn``: nothing grows. Ten minutes of churn against one operator process on a fresh local
control plane -- Cells and RoutingRules created, edited and deleted without pause, the API server
restarted twice -- with the operator's resident memory and open file descriptors sampled from /proc.
At the end everything must have converged; the figures go to docs/benchmarks.md.

Growth is judged by comparing the medians of the last and the second quarter of the samples (the first
quarter is warm-up: imports, caches, connection pools), not by a wall-clock threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from tests.bench.controlplane import fresh_control_plane
from tests.bench.dataplane import machine, replace_section
from tests.support.cells import cell_manifest
from tests.support.kubectl import KubectlError, eventually
from tests.support.operator import OperatorProcess
from tests.support.rules import CATCH_ALL, SESSION

ROOT = Path(__file__).resolve().parents[2]
NS = "churn"


def cell(i: int, state: str = "Active") -> dict:
    return cell_manifest(f"c{i:03}", i, address=f"cell-{i}.internal:443", firstCell=i == 1, state=state)


def rule(i: int, priority: int) -> dict:
    return {
        "apiVersion": "cells.dev/v1alpha1",
        "kind": "RoutingRule",
        "metadata": {"name": f"r{i:03}"},
        "spec": {**SESSION, "priority": priority},
    }


def sample(pid: int) -> tuple[float, int]:
    """(RSS in MiB, open file descriptors) of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return rss_kib / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def quarter_medians(values: list[float]) -> tuple[float, float]:
    q = max(1, len(values) // 4)
    return statistics.median(values[q : 2 * q]), statistics.median(values[-q:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)

    cluster, kubectl, work = fresh_control_plane("churn", (NS,))
    operator = OperatorProcess(cluster.kubeconfig, work / "operator.log", ["-n", NS])
    operator.start()
    samples: list[tuple[float, float, int]] = []
    restarts = 0
    ops = 0
    try:
        kubectl.apply([cell(1), *[cell(i) for i in range(2, 11)], {**rule(999, 999), "spec": CATCH_ALL}], NS)
        started = time.monotonic()
        end = started + args.minutes * 60
        next_sample = started
        restart_at = [started + args.minutes * 60 * f for f in (0.3, 0.6)]
        i = 0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                rss, fds = sample(operator.pid)
                samples.append((now - started, rss, fds))
                next_sample += args.interval
            if restart_at and now >= restart_at[0]:
                restart_at.pop(0)
                cluster.restart_apiserver()
                restarts += 1
            i += 1
            n = 11 + i % 40  # cells 11..50 and rules 0..39 come and go
            try:
                kubectl.apply([cell(n), rule(i % 40, i % 7)], NS)  # create, or edit (priority changes)
                if i % 3 == 0:
                    kubectl.apply(cell(n, "Draining"), NS)  # edit
                if i % 5 == 0:
                    kubectl("delete", "routingrule", f"r{(i + 20) % 40:03}", "-n", NS, "--ignore-not-found")
                    kubectl(
                        "delete", "cell", f"c{11 + (i + 20) % 40:03}", "-n", NS, "--ignore-not-found", "--wait=false"
                    )
                ops += 1
            except KubectlError:
                pass  # the API server is restarting: the churn goes on when it is back

        def converged():
            cells = kubectl.get("cells", namespace=NS)["items"]
            rules = kubectl.get("routingrules", namespace=NS)["items"]
            return all(
                (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"]
                and not o["metadata"].get("deletionTimestamp")
                for o in cells + rules
            )

        eventually(converged, timeout=300, interval=2, message="converged after the churn")
        rss, fds = sample(operator.pid)
        samples.append((time.monotonic() - started, rss, fds))
        assert operator.running(), "the operator process ended"
    finally:
        operator.stop()
        cluster.stop()

    rss_q2, rss_q4 = quarter_medians([s[1] for s in samples])
    fd_q2, fd_q4 = quarter_medians([float(s[2]) for s in samples])
    rows = "\n".join(f"| {t:.0f} | {rss:.1f} | {fds} |" for t, rss, fds in samples[:: max(1, len(samples) // 12)])
    body = (
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}: {args.minutes:.0f} minutes of churn, {ops} apply rounds "
        f"(create/edit/delete of Cells and RoutingRules), the API server restarted {restarts} times, one operator "
        f"process throughout (PID {operator.pid}); converged at the end.\n\n"
        f"| | median, 2nd quarter | median, last quarter |\n|---|---|---|\n"
        f"| RSS (MiB) | {rss_q2:.1f} | {rss_q4:.1f} |\n| open fds | {fd_q2:.0f} | {fd_q4:.0f} |\n\n"
        f"Samples (every {max(1, len(samples) // 12)} of {len(samples)}):\n\n"
        f"| t (s) | RSS (MiB) | fds |\n|---|---|---|\n{rows}"
    )
    print(body)
    print(json.dumps({"rss": [rss_q2, rss_q4], "fds": [fd_q2, fd_q4]}))
    if not args.no_write:
        replace_section(ROOT / "docs" / "benchmarks.md", "churn", body)
    grew = rss_q4 > rss_q2 * 1.2 or fd_q4 > fd_q2 + 10
    print("growth: " + ("YES -- investigate" if grew else "none"))
    return 1 if grew else 0


if __name__ == "__main__":
    sys.exit(main())
