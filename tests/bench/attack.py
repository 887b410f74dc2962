"""``make bench`` (data plane under attack, issue 17 item 5): a normal client's latency while another attacks.

Run by ``tests.bench.dataplane`` (which starts the echo cell and the Topology Service); also on its own:
``python -m tests.bench.attack`` (same as ``python -m tests.bench.dataplane --only-attack``).

For each ruleset (RE2; off RE2 with normal requests decided on the event loop; off RE2 with normal
requests needing an evaluation worker) and each router setting (no per-client bound; the attacker's
address bounded by ``--max-in-flight-per-client``), one router process is measured in three phases, one
after the other: the normal client alone (calm), the normal client beside a **benign load** of the same
shape as the attack (the same connections from the same address, unpaced, sending the normal client's
own request), and the normal client **under attack**. The benign load is the control: if the normal
client suffers as much from it as from the attack, the cost is load, not hostility.
"""

from __future__ import annotations

import asyncio
import collections
import json
import multiprocessing
import sys
import time
from pathlib import Path

import aiohttp

from cells_devtools.devcluster.cluster import free_port
from tests.bench.dataplane import machine, percentiles, replace_section, session_rules, wait
from tests.support.dataplane import router_argv
from tests.support.process import spawn_logged

HOSTILE_COOKIE = "hostile=" + "a" * 64 + "!"
ATTACKER = "127.0.0.2"  # the attacker's source address: a different client from the normal one (127.0.0.1)
PHASE_SECONDS = 15.0  # each loaded phase: past --header-timeout, so slowloris connections are being cut too
FAIR_BOUND = 1  # --max-in-flight-per-client in the fairness rows
SCENARIOS = (
    (False, "_gitlab_session=cell-2-abcdef", "RE2 (catastrophic pattern)"),
    (True, "_gitlab_session=cell-2-abcdef", "off RE2, normal requests decided on the event loop"),
    (True, "hostile=aaaa", "off RE2, normal requests need an evaluation worker"),
)


def attack_rules(cell: str, fallback: bool) -> list[dict]:
    """A hand-written ruleset (as an old operator could have published): a catastrophic cookie rule first."""
    pattern = r"^(a|a)*\1$" if fallback else r"^(a+)+$"  # the backreference keeps it off RE2
    return [
        {
            "match": {"type": "cookie", "regex_name": "^hostile$", "regex_value": pattern},
            "action": "proxy",
            "proxy": {"address": cell},
        },
        *session_rules(3),
    ]


def attacker(host: str, port: int, stop, sent, benign_cookie: str | None = None) -> None:
    """Load from ``ATTACKER`` until ``stop`` is set; ``sent`` counts the looping connections' answered requests.

    Hostile (``benign_cookie`` None): 4 connections looping on the catastrophic input, 1 on a 9 KiB cookie
    (431), 20 slowloris connections. Benign, the same shape: 5 connections looping on ``benign_cookie``,
    20 connections sending one such request every 5 s (well-behaved, mostly idle keep-alive clients).
    """

    async def run() -> None:
        connector = aiohttp.TCPConnector(limit=0, local_addr=(ATTACKER, 0))
        async with aiohttp.ClientSession(connector=connector) as session:

            async def hammer(headers: dict[str, str]) -> None:
                while not stop.is_set():
                    try:
                        async with session.get(f"http://{host}:{port}/bench", headers=headers) as resp:
                            await resp.read()
                        with sent.get_lock():
                            sent.value += 1
                    except aiohttp.ClientError:
                        pass

            async def slowloris() -> None:
                while not stop.is_set():
                    try:
                        _, writer = await asyncio.open_connection(host, port, local_addr=(ATTACKER, 0))
                        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
                        for _ in range(100):
                            if stop.is_set():
                                break
                            writer.write(b"X")
                            await writer.drain()
                            await asyncio.sleep(0.5)
                        writer.close()
                    except OSError:
                        await asyncio.sleep(0.1)

            async def polite(headers: dict[str, str]) -> None:
                while not stop.is_set():
                    try:
                        async with session.get(f"http://{host}:{port}/bench", headers=headers) as resp:
                            await resp.read()
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(5.0)

            if benign_cookie is None:
                await asyncio.gather(
                    *(hammer({"Cookie": HOSTILE_COOKIE}) for _ in range(4)),
                    hammer({"Cookie": "big=" + "b" * 9 * 1024}),
                    *(slowloris() for _ in range(20)),
                )
            else:
                await asyncio.gather(
                    *(hammer({"Cookie": benign_cookie}) for _ in range(5)),
                    *(polite({"Cookie": benign_cookie}) for _ in range(20)),
                )

    asyncio.run(run())


async def normal_client(
    url: str, headers: dict[str, str], requests: int, min_seconds: float = 0.0, warmup: int = 50
) -> dict:
    """Sequential requests: ``requests`` of them, and more until ``min_seconds`` have passed."""
    latencies, errors, kinds = [], 0, collections.Counter()
    async with aiohttp.ClientSession() as session:
        for _ in range(warmup):
            async with session.get(url, headers=headers) as resp:
                await resp.read()
        began = time.perf_counter()
        while len(latencies) < requests or time.perf_counter() - began < min_seconds:
            started = time.perf_counter()
            try:
                async with session.get(url, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                        kinds[f"{resp.status} {resp.headers.get('X-Cells-Router-Error', '')}".strip()] += 1
            except aiohttp.ClientError as exc:
                errors += 1  # e.g. the connection dropped: an error for the normal client all the same
                kinds[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - started)
    return {
        **percentiles(latencies),
        "errors": errors,
        "error_kinds": dict(kinds),
        "requests": len(latencies),
        "seconds": time.perf_counter() - began,
    }


def loaded(port: int, url: str, headers: dict[str, str], count: int, benign_cookie: str | None) -> dict:
    """The normal client while an attacker process (hostile, or benign with ``benign_cookie``) runs."""
    stop, sent = multiprocessing.Event(), multiprocessing.Value("l", 0)
    load = multiprocessing.Process(target=attacker, args=("127.0.0.1", port, stop, sent, benign_cookie))
    load.start()
    try:
        time.sleep(1.0)  # let the load reach full strength
        before = sent.value
        result = asyncio.run(normal_client(url, headers, count, min_seconds=PHASE_SECONDS, warmup=5))
        result["load_rps"] = (sent.value - before) / result["seconds"]
    finally:
        stop.set()
        load.join(30)
        if load.is_alive():
            load.kill()
    return result


def under_attack(echo_port: int, ts_port: int, tmp: Path, requests: int) -> list[tuple[str, int, dict]]:
    """Rows of (ruleset label, per-client bound, {"calm", "benign", "attack"} results)."""
    rows: list[tuple[str, int, dict]] = []
    for fallback, cookie, label in SCENARIOS:
        for bound in (0, FAIR_BOUND):
            router_port, admin_port = free_port(), free_port()
            rules = tmp / f"attack-{len(rows)}.json"
            rules.write_text(json.dumps(attack_rules(f"127.0.0.1:{echo_port}", fallback)))
            options = {"cache_ttl": 3600, "max_in_flight_per_client": bound}
            router = spawn_logged(
                router_argv(rules, f"http://127.0.0.1:{ts_port}", router_port, admin_port, **options),
                tmp / f"router-attack-{len(rows)}.log",
            )
            try:
                wait(f"http://127.0.0.1:{admin_port}/readyz")
                url, headers = f"http://127.0.0.1:{router_port}/bench", {"Cookie": cookie}
                # Normal requests that queue for a worker behind hostile ones are slow: fewer of them.
                count = requests if cookie.startswith("_gitlab") else max(50, requests // 10)
                phases = {"calm": asyncio.run(normal_client(url, headers, count))}
                phases["benign"] = loaded(router_port, url, headers, count, cookie)
                phases["attack"] = loaded(router_port, url, headers, count, None)
            finally:
                router.terminate()
                router.wait(10)
            print(label, f"bound {bound}:", phases, flush=True)
            rows.append((label, bound, phases))
    return rows


def _errors(result: dict) -> str:
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(result["error_kinds"].items()))
    return f"{result['errors']} ({kinds})" if kinds else str(result["errors"])


def _row(label: str, bound: int, phases: dict) -> tuple[str, str]:
    calm, benign, hit = phases["calm"], phases["benign"], phases["attack"]
    benign_ratio, ratio = benign["p99_ms"] / calm["p99_ms"], hit["p99_ms"] / calm["p99_ms"]
    setting = f"{bound}" if bound else "none"
    line = (
        f"| {label} | {setting} | {calm['p50_ms']:.2f} | {calm['p99_ms']:.2f} "
        f"| {benign['p50_ms']:.2f} | {benign['p99_ms']:.2f} | {benign_ratio:.2f}x | {benign['load_rps']:.0f} "
        f"| {_errors(benign)} | {hit['p50_ms']:.2f} | {hit['p99_ms']:.2f} | **{ratio:.2f}x** | {hit['load_rps']:.0f} "
        f"| {_errors(hit)} | {hit['requests']} in {hit['seconds']:.0f} s |"
    )
    ok = ratio <= 2.0 and hit["errors"] == 0
    verdict = f"{label}, bound {setting}: {'met' if ok else 'MISSED'} ({ratio:.2f}x, {hit['errors']} errors)"
    return line, verdict


def write_attack(output: Path, rows: list[tuple[str, int, dict]]) -> None:
    lines = [
        "| ruleset evaluated on | per-client bound | calm p50 (ms) | calm p99 (ms) | benign load p50 (ms) "
        "| benign load p99 (ms) | p99 ratio | load requests/s | errors | under attack p50 (ms) "
        "| under attack p99 (ms) | p99 ratio | attack requests/s | errors | normal requests under attack |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for row in rows:
        line, verdict = _row(*row)
        lines.append(line)
        verdicts.append(verdict)
    table = "\n".join(lines)
    print(table)
    doc = [
        "## Data plane under attack (latest run of `make bench`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}. One router process per row; a normal client "
        "(127.0.0.1) sends sequential requests (warm classification cache) in three phases one after the other: "
        "alone (calm), beside a **benign load**, and **under attack**, each loaded phase at least "
        f"{PHASE_SECONDS:g} s (past `--header-timeout`, so slowloris connections are being cut too). The attack "
        f"comes from another process bound to {ATTACKER}: 4 connections looping on a cookie crafted for the "
        "catastrophic first rule (`^(a+)+$`, or `^(a|a)*\\1$` off RE2; 64 `a`s and `!`), 1 looping on a 9 KiB "
        "cookie (431), and 20 slowloris connections dribbling header bytes. The benign load is the control, of "
        f"the same shape from the same address: 5 connections looping on the normal client's own request, and "
        "20 connections sending one every 5 s. Neither is paced: *requests/s* is what each got answered. "
        "Everything shares the machine's 2 cores, load generators included. Off RE2, the normal client either "
        "sends only the session cookie (no backtracking pattern has to see it: decided on the event loop) or a "
        "`hostile=aaaa` cookie that the backtracking pattern must match (so it waits for one of the two "
        "evaluation workers). *Per-client bound*: the router's `--max-in-flight-per-client` (none: the "
        "default), the attacker's excess waiting in its own queue.",
        "",
        table,
        "",
        "Goal: the normal client's p99 under attack at most 2x its calm p99, no errors: " + "; ".join(verdicts) + ".",
    ]
    replace_section(output, "dataplane-attack", "\n".join(doc))


def main() -> int:
    from tests.bench import dataplane

    return dataplane.main(["--only-attack", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
