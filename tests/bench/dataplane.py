"""``make bench`` (data plane): the router's cost, measured against a baseline in the same run.

Everything runs as real processes on loopback: an echo cell, the Topology Service, the router (once per
event loop) fed a ruleset rendered by the operator's own code, nginx as a plain reverse proxy with
keepalive (Debian's, tests/bench/nginx.py) and two reference proxies that route nothing
(tests/bench/floor.py). Reported (ADR 0018):
- latency (p50/p99) of sequential requests and throughput with concurrent clients, directly to the cell,
  through nginx, through the router with a warm classification cache and through the reference proxies;
  the ratios to nginx and to direct, and issue 15's goals for them, each met or missed and by how much;
- the Topology Service's classify latency and throughput (16 clients);
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
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from cells_dataplane.routing import RequestView, load_ruleset
from cells_devtools.devcluster.cluster import free_port
from cells_formats.records import Topology, render_topology_json
from cells_operator.rule import RoutingRuleSpec, render_rule
from cells_operator.topology import CellObject, plan_topology
from tests.bench.floor import floor_argv
from tests.bench.nginx import find_nginx, nginx_argv, nginx_version
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


@dataclass(frozen=True)
class Target:
    """One row of the latency table: what to request (the same request each time) and its label."""

    label: str
    method: str
    url: str
    headers: dict[str, str]
    body: dict | None = None


class _Client:
    """One keep-alive client session to one target, timing whole requests (send to last body byte)."""

    def __init__(self, target: Target, clients: int):
        self.target = target
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients))
        self.latencies: list[float] = []
        self.busy = 0.0  # seconds spent in the throughput phases
        self.done = 0  # requests done in the throughput phases

    async def one(self) -> float:
        t = self.target
        started = time.perf_counter()
        async with self.session.request(t.method, t.url, headers=t.headers, json=t.body) as resp:
            await resp.read()
            assert resp.status == 200, (t.label, resp.status)
        return time.perf_counter() - started

    async def sequential(self, n: int) -> None:
        for _ in range(n):
            self.latencies.append(await self.one())

    async def concurrent(self, n: int, clients: int) -> None:
        queue = iter(range(n))

        async def worker() -> None:
            for _ in queue:
                await self.one()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        self.busy += time.perf_counter() - started
        self.done += n

    def result(self) -> dict:
        return {**percentiles(self.latencies), "rps": self.done / self.busy}


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds of latencies in seconds: the one definition every latency table uses."""
    ordered = sorted(latencies)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
    }


async def measure(targets: list[Target], sequential: int, concurrent: int, clients: int, rounds: int) -> dict:
    """p50/p99 of ``sequential`` requests and the rate of ``concurrent`` ones from ``clients`` clients, per target.

    The targets take turns, in ``rounds`` slices of each phase, so that a change in the machine's load
    (it is shared) during the run falls on every target alike rather than on whichever ran at the time.
    """
    sessions = [_Client(t, clients) for t in targets]
    try:
        for client in sessions:
            for _ in range(50):  # warm up connections and the classification cache
                await client.one()
        for _ in range(rounds):
            for client in sessions:
                await client.sequential(sequential // rounds)
            for client in sessions:
                await client.concurrent(concurrent // rounds, clients)
        return {c.target.label: c.result() for c in sessions}
    finally:
        for client in sessions:
            await client.session.close()


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


GOALS = (("nginx", 1.5), ("direct", 2.0))
"""The router's p50 and p99 at most 1.5x nginx's and at most 2x a direct call's (issue 15)."""


def goal_verdicts(results: dict[str, dict], router: str) -> list[str]:
    """Each goal (p50 and p99 against each baseline) as met or MISSED, with the ratio and the margin."""
    verdicts = []
    for baseline, bound in GOALS:
        for q in ("p50", "p99"):
            ratio = results[router][f"{q}_ms"] / results[baseline][f"{q}_ms"]
            verdict = "met" if ratio <= bound else f"MISSED by {ratio - bound:.2f}x"
            verdicts.append(f"router {q} at most {bound:g}x {baseline}'s: {ratio:.2f}x, **{verdict}**")
    return verdicts


FLOORS = {"aiohttp": "aiohttp proxy", "raw": "raw forwarder"}
"""The reference proxies of tests/bench/floor.py (no routing): how fast a Python proxy can be here."""


def targets(ports: dict[str, int], loops: tuple[str, ...]) -> list[Target]:
    headers = {"Cookie": "_gitlab_session=cell-2-abcdef"}
    rows = [
        Target("direct", "GET", f"http://127.0.0.1:{ports['echo']}/bench", headers),
        Target("nginx", "GET", f"http://127.0.0.1:{ports['nginx']}/bench", headers),
        *(Target(f"router ({loop})", "GET", f"http://127.0.0.1:{ports[loop]}/bench", headers) for loop in loops),
        *(Target(f"floor: {FLOORS[k]}", "GET", f"http://127.0.0.1:{ports[k]}/bench", headers) for k in FLOORS),
    ]
    classify = {"type": "SESSION_PREFIX", "value": "cell-2"}
    rows.append(Target("topology service", "POST", f"http://127.0.0.1:{ports['ts']}/v1/classify", {}, classify))
    return rows


def start_dataplane(tmp: Path, loops: tuple[str, ...]) -> tuple[dict[str, int], list]:
    """Echo cell, Topology Service, nginx and one router per event loop, on free ports; ready when returned."""
    names = ("echo", "ts", "nginx", *FLOORS, *loops, *(f"{loop}-admin" for loop in loops))
    ports = {name: free_port() for name in names}
    ports["router"], ports["admin"] = ports[loops[0]], ports[f"{loops[0]}-admin"]  # the attack scenario's
    cells = [CellObject("cell-2", "u2", {"id": 2, "address": f"127.0.0.1:{ports['echo']}", "firstCell": True})]
    (tmp / "topology.json").write_text(render_topology_json(plan_topology(Topology(), cells).records))
    (tmp / "rules.json").write_text(json.dumps(session_rules(10)))
    nginx, nginx_env = nginx_argv(find_nginx(), tmp / "nginx", ports["nginx"], f"127.0.0.1:{ports['echo']}")
    ts = f"http://127.0.0.1:{ports['ts']}"
    procs = [
        spawn_logged(echo_argv("cell-2", ports["echo"]), tmp / "echo.log"),
        spawn_logged(topology_service_argv(tmp / "topology.json", ports["ts"], max_age=3600), tmp / "topology.log"),
        spawn_logged(nginx, tmp / "nginx.log", env=nginx_env),
        *(spawn_logged(floor_argv(k, ports[k], f"127.0.0.1:{ports['echo']}"), tmp / f"{k}.log") for k in FLOORS),
        *(
            spawn_logged(
                router_argv(tmp / "rules.json", ts, ports[loop], ports[f"{loop}-admin"], cache_ttl=3600, loop=loop),
                tmp / f"router-{loop}.log",
            )
            for loop in loops
        ),
    ]
    try:
        wait(f"http://127.0.0.1:{ports['echo']}/")
        wait(f"http://127.0.0.1:{ports['ts']}/readyz")
        for name in ("nginx", *FLOORS):
            wait(f"http://127.0.0.1:{ports[name]}/")
        for loop in loops:
            wait(f"http://127.0.0.1:{ports[f'{loop}-admin']}/readyz")
    except BaseException:
        stop(procs)
        raise
    return ports, procs


def stop(procs: list) -> None:
    for p in procs:
        p.terminate()
        p.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--concurrent", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="turns the targets take in each phase")
    parser.add_argument(
        "--loops",
        default="uvloop,asyncio",
        help="the routers to measure, one per event loop (the first is the one the goals are about)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--attack-requests", type=int, default=1000, help="normal requests per attack scenario")
    parser.add_argument("--only-attack", action="store_true", help="run only the under-attack scenario")
    parser.add_argument("--skip-attack", action="store_true", help="skip the under-attack scenario")
    args = parser.parse_args(argv)
    loops = tuple(loop.strip() for loop in args.loops.split(",") if loop.strip())

    tmp = Path(tempfile.mkdtemp(prefix="cells-bench-"))
    ports, procs = start_dataplane(tmp, loops)
    try:
        if not args.skip_attack:
            from tests.bench.attack import under_attack, write_attack  # its own module (issue 17)

            write_attack(args.output, under_attack(ports["echo"], ports["ts"], tmp, args.attack_requests))
        if args.only_attack:
            return 0
        results = asyncio.run(
            measure(targets(ports, loops), args.sequential, args.concurrent, args.clients, args.rounds)
        )
    finally:
        stop(procs)
    evaluation = rule_evaluation((10, 100, 1000))
    write_dataplane(args, results, evaluation, f"router ({loops[0]})")
    return 0


def write_dataplane(args: argparse.Namespace, results: dict[str, dict], evaluation: dict[int, float], router: str):
    direct, nginx = results["direct"], results["nginx"]
    lines = [
        "| path | p50 (ms) | p99 (ms) | requests/s | p50 / nginx | p99 / nginx | p50 / direct | p99 / direct |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in results.items():
        ratios = (
            ""
            if label == "topology service"
            else f"{r['p50_ms'] / nginx['p50_ms']:.2f}x | {r['p99_ms'] / nginx['p99_ms']:.2f}x "
            f"| {r['p50_ms'] / direct['p50_ms']:.2f}x | {r['p99_ms'] / direct['p99_ms']:.2f}x"
        )
        name = f"**{label}**" if label == router else label
        ratios = ratios or " |  |  | "
        lines.append(f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['rps']:.0f} | {ratios} |")
    lines += [
        "",
        "| rules in the ruleset | evaluation per request (µs, worst case) |",
        "|---:|---:|",
        *[f"| {n} | {us:.1f} |" for n, us in evaluation.items()],
    ]
    table = "\n".join(lines)
    verdicts = goal_verdicts(results, router)
    print(table)
    print("\n".join(["", "goals:", *verdicts]))
    doc = [
        "## Data plane: router vs nginx vs direct (latest run of `make bench`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}. Echo cell (aiohttp), Topology Service, "
        f"nginx ({nginx_version(find_nginx())}, Debian's package, one process, upstream keepalive), the routers, "
        "the reference proxies and the load generator (Python aiohttp client) all share this machine's cores "
        f"over loopback. Per row: {args.sequential} sequential requests (p50, p99) and {args.concurrent} "
        f"requests from {args.clients} concurrent clients (requests/s), on keep-alive connections, after a "
        "warm-up that fills the router's classification cache (session-cookie rule, 10-rule ruleset). The rows "
        f"take turns in {args.rounds} slices of each phase, so load from elsewhere on the machine falls on all "
        "of them alike. `router (uvloop)` is the router as shipped; `router (asyncio)` is the same with "
        "`--loop asyncio`. The `floor:` rows route nothing (tests/bench/floor.py): aiohttp's server and client "
        "forwarding as the router does, and a raw asyncio forwarder that parses nothing -- what a Python proxy "
        "costs at all, here. The Topology Service row is a direct `POST /v1/classify` of a `SESSION_PREFIX` "
        "for a known cell.",
        "",
        table,
        "",
        "Goals (issue 15), for the router as shipped:",
        "",
        *[f"- {v}" for v in verdicts],
        "",
        "Rule evaluation is in-process (`Ruleset.decide`) with a request that only the final catch-all matches.",
    ]
    replace_section(args.output, "dataplane", "\n".join(doc))
    print(f"written to {args.output}")


if __name__ == "__main__":
    sys.exit(main())
