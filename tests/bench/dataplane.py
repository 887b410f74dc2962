"""``make bench`` (data plane): the router's cost, measured against a baseline in the same run.

Everything runs as real processes on loopback: an echo cell, the Topology Service and the router, fed
a ruleset rendered by the operator's own code. Reported:
- latency (p50/p99) of sequential requests and throughput with concurrent clients, directly to the cell
  and through the router with a warm classification cache, and the router/direct ratios;
- rule evaluation time per request with 10, 100 and 1,000 rules (worst case: only the last rule matches);
- under attack (issue 17): a normal client's p50/p99 and errors while another process sends hostile
  requests (inputs for a catastrophic pattern, oversized cookies, headers dribbled byte by byte), next to
  the same without attack, for a ruleset on RE2 and for one evaluated in worker processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from cells_dataplane.routing import RequestView, load_ruleset
from cells_devtools.devcluster.cluster import free_port
from cells_formats.records import Topology, render_topology_json
from cells_operator.rule import RoutingRuleSpec, render_rule
from cells_operator.topology import CellObject, plan_topology
from tests.support.dataplane import echo_argv, router_argv, topology_service_argv
from tests.support.process import spawn_logged

ROOT = Path(__file__).resolve().parents[2]


def wait(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} not ready")


def session_rules(n: int) -> list[dict]:
    """n rules: n-1 session-cookie rules for other cookie names, then the real one last-but-catch-all."""
    specs = []
    for i in range(n - 2):
        specs.append(
            {
                "ruleset": "bench",
                "priority": i,
                "action": "classify",
                "match": {
                    "type": "cookie",
                    "regexName": f"^other_cookie_{i}$",
                    "regexValue": r"^(?<cell_name>cell-\d+)-.*",
                },
                "classify": {"type": "SESSION_PREFIX", "value": "${cell_name}"},
            }
        )
    specs.append(
        {
            "ruleset": "bench",
            "priority": n,
            "action": "classify",
            "match": {
                "type": "cookie",
                "regexName": "^_gitlab_session(_[0-9a-f]+)?$",
                "regexValue": r"^(?<cell_name>cell-\d+)-.*",
            },
            "classify": {"type": "SESSION_PREFIX", "value": "${cell_name}"},
        }
    )
    specs.append({"ruleset": "bench", "priority": n + 1, "action": "classify", "classify": {"type": "FIRST_CELL"}})
    topology = Topology()
    return [render_rule(RoutingRuleSpec.model_validate(s), topology)[0] for s in specs]


def rule_evaluation(sizes: tuple[int, ...], seconds: float = 1.0) -> dict[int, float]:
    """Microseconds per decide() when only the catch-all matches (every rule is tried)."""
    out = {}
    request = RequestView.build("/some/page", [("Cookie", "theme=dark; _other=1"), ("Accept", "text/html")])
    for n in sizes:
        ruleset = load_ruleset(json.dumps(session_rules(n)))
        assert ruleset.decide(request).classify_type == "FIRST_CELL"
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for _ in range(20):
                ruleset.decide(request)
            count += 20
        out[n] = (time.perf_counter() - started) / count * 1e6
    return out


async def measure(url: str, headers: dict[str, str], sequential: int, concurrent: int, clients: int) -> dict:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def one() -> float:
            started = time.perf_counter()
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            return time.perf_counter() - started

        for _ in range(50):  # warm up connections and the classification cache
            await one()
        latencies = sorted([await one() for _ in range(sequential)])
        queue = iter(range(concurrent))

        async def worker() -> None:
            for _ in queue:
                await one()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "rps": concurrent / elapsed,
    }


def replace_section(path: Path, name: str, body: str) -> None:
    """Rewrite one generated section of docs/benchmarks.md, keeping the hand-written text around it."""
    begin, end = f"<!-- {name}:begin (generated by make bench) -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--concurrent", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--attack-requests", type=int, default=1000, help="normal requests per attack scenario")
    parser.add_argument("--only-attack", action="store_true", help="run only the under-attack scenario")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="cells-bench-"))
    echo_port, ts_port, router_port, admin_port = (free_port() for _ in range(4))
    cells = [CellObject("cell-2", "u2", {"id": 2, "address": f"127.0.0.1:{echo_port}", "firstCell": True})]
    (tmp / "topology.json").write_text(render_topology_json(plan_topology(Topology(), cells).records))
    (tmp / "rules.json").write_text(json.dumps(session_rules(10)))
    procs = [
        spawn_logged(echo_argv("cell-2", echo_port), tmp / "echo.log"),
        spawn_logged(topology_service_argv(tmp / "topology.json", ts_port, max_age=3600), tmp / "topology.log"),
        spawn_logged(
            router_argv(tmp / "rules.json", f"http://127.0.0.1:{ts_port}", router_port, admin_port, cache_ttl=3600),
            tmp / "router.log",
        ),
    ]
    try:
        wait(f"http://127.0.0.1:{echo_port}/")
        wait(f"http://127.0.0.1:{ts_port}/readyz")
        wait(f"http://127.0.0.1:{admin_port}/readyz")
        from tests.bench.attack import under_attack, write_attack  # its own module (issue 17)

        write_attack(args.output, under_attack(echo_port, ts_port, tmp, args.attack_requests))
        if args.only_attack:
            return 0
        headers = {"Cookie": "_gitlab_session=cell-2-abcdef"}
        direct = asyncio.run(
            measure(f"http://127.0.0.1:{echo_port}/bench", headers, args.sequential, args.concurrent, args.clients)
        )
        routed = asyncio.run(
            measure(f"http://127.0.0.1:{router_port}/bench", headers, args.sequential, args.concurrent, args.clients)
        )
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
    evaluation = rule_evaluation((10, 100, 1000))

    ratio_p50 = routed["p50_ms"] / direct["p50_ms"]
    lines = [
        "| path | p50 (ms) | p99 (ms) | requests/s |",
        "|---|---:|---:|---:|",
        f"| direct to the cell | {direct['p50_ms']:.2f} | {direct['p99_ms']:.2f} | {direct['rps']:.0f} |",
        f"| through the router (warm cache) | {routed['p50_ms']:.2f} | {routed['p99_ms']:.2f} | {routed['rps']:.0f} |",
        f"| **router / direct** | **{ratio_p50:.2f}x** | **{routed['p99_ms'] / direct['p99_ms']:.2f}x** "
        f"| **{routed['rps'] / direct['rps']:.2f}x** |",
        "",
        "| rules in the ruleset | evaluation per request (µs, worst case) |",
        "|---:|---:|",
        *[f"| {n} | {us:.1f} |" for n, us in evaluation.items()],
    ]
    table = "\n".join(lines)
    verdict = "met" if ratio_p50 <= 2.0 else f"MISSED by {ratio_p50 - 2.0:.2f}x"
    print(table)
    print(f"\ngoal: router p50 at most 2x direct p50 -> {verdict}")
    doc = [
        "## Data plane: router vs direct (latest run of `make bench`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}. Echo cell, Topology Service, router and the load",
        f"generator (Python aiohttp client) all share this machine's cores over loopback. Latency: "
        f"{args.sequential} sequential requests; throughput: {args.concurrent} requests from {args.clients} "
        "concurrent clients; both after a warm-up that fills the classification cache (session-cookie rule, "
        "10-rule ruleset).",
        "",
        table,
        "",
        f"Goal: router p50 at most 2x the direct p50 on loopback with a warm cache: **{verdict}**.",
        "",
        "Rule evaluation is in-process (`Ruleset.decide`) with a request that only the final catch-all "
        "matches, so every rule's patterns run.",
    ]
    replace_section(args.output, "dataplane", "\n".join(doc))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
