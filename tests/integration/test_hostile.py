"""Hostile input against the running router (issue 17, ADR 0013). Real processes, no cluster.

Each ruleset here is written by hand, as an older operator or a person could: the router must hold even
when a catastrophic pattern reaches it.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from pathlib import Path

import pytest

from cells_devtools.devcluster.cluster import free_port
from tests.support.dataplane import Process, echo_backend, request, router_argv, wait_http_ok
from tests.support.kubectl import eventually
from tests.support.prometheus import metric_value

HOSTILE = "a" * 64 + "!"  # exponential for the patterns below on a backtracking engine: never finishes


def ruleset(value_pattern: str, hostile_cell: int, catch_all_cell: int) -> str:
    return json.dumps(
        [
            {
                "match": {"type": "cookie", "regex_name": "^hostile$", "regex_value": value_pattern},
                "action": "proxy",
                "proxy": {"address": f"127.0.0.1:{hostile_cell}"},
            },
            {"action": "proxy", "proxy": {"address": f"127.0.0.1:{catch_all_cell}"}},
        ]
    )


class Stack:
    def __init__(self, tmp_path, pattern: str, **options):
        self.logdir = tmp_path
        self.procs: list[Process] = []
        self.cells = {}
        for name in ("matched", "other"):
            proc, self.cells[name] = echo_backend(name, tmp_path)
            self.procs.append(proc)
        rules = tmp_path / "rules.json"
        rules.write_text(ruleset(pattern, self.cells["matched"], self.cells["other"]))
        self.port, self.admin = free_port(), free_port()
        argv = router_argv(rules, "http://127.0.0.1:9", self.port, self.admin, **options)
        self.router = Process("router", argv, tmp_path).start()
        self.procs.append(self.router)
        wait_http_ok(f"http://127.0.0.1:{self.admin}/readyz")
        self.base = f"http://127.0.0.1:{self.port}"

    def get(self, path="/", headers=None, **kw):
        return request(self.base + path, headers=headers, **kw)

    def metric(self, name: str) -> float:
        value = metric_value(request(f"http://127.0.0.1:{self.admin}/metrics").body.decode(), name)
        assert value is not None, f"{name} not exported"
        return value

    def raw(self, payload: bytes) -> tuple[int, bytes]:
        """Send bytes as they are; the status and body of the router's first answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=15) as sock:
            sock.sendall(payload)
            answer = http.client.HTTPResponse(sock)
            answer.begin()
            return answer.status, answer.read()

    def stop(self):
        for p in self.procs:
            p.stop()


@pytest.fixture
def linear_stack(tmp_path):
    stack = Stack(tmp_path, r"^(a+)+$", max_header_value=1024)
    yield stack
    stack.stop()


@pytest.fixture
def fallback_stack(tmp_path):
    # A backreference keeps the pattern off RE2: it is evaluated by the backtracking evaluator, bounded.
    stack = Stack(tmp_path, r"^(a|a)*\1$", match_deadline=0.2)
    yield stack
    stack.stop()


def test_a_catastrophic_pattern_on_re2_answers_hostile_and_normal_requests(linear_stack):
    s = linear_stack
    assert s.metric("cells_router_rules_linear") == 1
    results = {}

    def hostile():
        results["hostile"] = s.get(headers={"Cookie": f"hostile={HOSTILE}"})

    thread = threading.Thread(target=hostile)
    thread.start()
    normal = s.get(headers={"Cookie": "hostile=aaaa"})
    thread.join()
    assert normal.status == 200 and normal.json()["cell"] == "matched"  # first-match semantics unchanged
    assert results["hostile"].status == 200 and results["hostile"].json()["cell"] == "other"


def test_off_re2_the_deadline_answers_503_and_the_router_keeps_routing(fallback_stack):
    s = fallback_stack
    assert s.metric("cells_router_rules_linear") == 0
    assert s.get(headers={"Cookie": "hostile=aa"}).json()["cell"] == "matched"
    hostile = s.get(headers={"Cookie": f"hostile={HOSTILE}"})
    assert hostile.status == 503
    assert hostile.headers["X-Cells-Router-Error"] == "routing rules took too long"
    assert s.metric("cells_router_match_budget_exceeded_total") >= 1
    # The worker that was stuck is gone: the next requests are decided as before.
    assert s.get(headers={"Cookie": "hostile=aa"}).json()["cell"] == "matched"
    assert s.get().json()["cell"] == "other"


def test_off_re2_a_killed_match_fails_no_other_request(fallback_stack):
    """Requests that need the worker path, sent while hostile ones pass the deadline, are all answered 200.

    Each evaluation worker gets one evaluation at a time, so a kill ends only the hostile match; innocent
    requests wait for a free worker. (With one shared pool, those queued behind a killed one were 503.)
    """
    s = fallback_stack
    results: dict[str, list] = {"hostile": [], "normal": []}

    def send(kind: str, cookie: str, times: int) -> None:
        for _ in range(times):
            results[kind].append(s.get(headers={"Cookie": cookie}, timeout=30))

    threads = [threading.Thread(target=send, args=("hostile", f"hostile={HOSTILE}", 3)) for _ in range(3)]
    threads += [threading.Thread(target=send, args=("normal", "hostile=aa", 10)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in results["hostile"]] == [503] * 9
    assert [(r.status, r.json()["cell"]) for r in results["normal"]] == [(200, "matched")] * 30
    assert s.metric("cells_router_match_budget_exceeded_total") == 9


def test_off_re2_requests_no_backtracking_pattern_sees_are_served_during_hostile_matches(fallback_stack):
    """A request without the cookie the fallback rule selects is decided on the event loop: hostile matches
    running (and killed) meanwhile cannot touch it. (With one shared pool it was evaluated there, and 503
    when the pool was killed.)"""
    s = fallback_stack
    done = []
    threads = [
        threading.Thread(target=lambda: done.append(s.get(headers={"Cookie": f"hostile={HOSTILE}"}))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    normal = [s.get(headers={"Cookie": "other=1"}) for _ in range(20)]
    for t in threads:
        t.join()
    assert [(r.status, r.json()["cell"]) for r in normal] == [(200, "other")] * 20
    assert [r.status for r in done] == [503, 503]


def test_oversized_header_values_are_answered_431(linear_stack):
    s = linear_stack
    assert s.get(headers={"Cookie": "hostile=" + "a" * 1000}).status == 200
    too_big = s.get(headers={"Cookie": "hostile=" + "a" * 1100})
    assert too_big.status == 431
    assert s.get(headers={"X-Anything": "x" * 1100}).status == 431


def test_client_supplied_rule_and_forwarded_headers_are_not_trusted(linear_stack):
    s = linear_stack
    seen = s.get(
        headers={
            "X-Gitlab-Http-Router-Rule-Action": "classify",
            "X-Gitlab-Http-Router-Rule-Type": "CELL_ID",
            "X-Forwarded-For": "203.0.113.9",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Proto": "https",
        }
    ).json()["headers"]
    assert seen["X-Gitlab-Http-Router-Rule-Action"] == "proxy"
    assert "X-Gitlab-Http-Router-Rule-Type" not in seen
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Forwarded-Host"] == f"127.0.0.1:{s.port}"
    assert seen["X-Forwarded-Proto"] == "http"


def test_a_trusted_proxy_chain_is_extended(tmp_path):
    s = Stack(tmp_path, "^x$", trusted_proxies="127.0.0.0/8")
    try:
        seen = s.get(headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}).json()["headers"]
        assert seen["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"
        assert seen["X-Forwarded-Proto"] == "https"
    finally:
        s.stop()


def test_hop_by_hop_headers_and_those_named_in_connection_are_dropped(linear_stack):
    conn = http.client.HTTPConnection("127.0.0.1", linear_stack.port, timeout=15)  # sends Connection as given
    try:
        headers = {"Connection": "keep-alive, X-Private", "X-Private": "secret", "Keep-Alive": "5", "TE": "trailers"}
        conn.request("GET", "/", headers={**headers, "X-Kept": "yes"})
        seen = json.loads(conn.getresponse().read())["headers"]
    finally:
        conn.close()
    assert seen["X-Kept"] == "yes"
    for name in ("X-Private", "Keep-Alive", "TE"):
        assert name not in seen


@pytest.mark.parametrize(
    "payload",
    [
        # CL.TE and TE.CL smuggling: both framings on one request
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        # two different Content-Lengths
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
        # an obfuscated Transfer-Encoding
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        # a space before the colon
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc",
    ],
    ids=["cl-and-te", "two-content-lengths", "obfuscated-te", "space-before-colon"],
)
def test_request_smuggling_shapes_are_refused(linear_stack, payload):
    status, body = linear_stack.raw(payload)
    assert status == 400, body
    assert b"smuggled" not in body


def test_request_bodies_past_the_limit_are_refused(tmp_path):
    s = Stack(tmp_path, "^x$", max_body=1000)
    try:
        ok = request(s.base + "/", "POST", {"Content-Type": "application/octet-stream"}, b"x" * 1000)
        assert ok.status == 200 and ok.json()["body_bytes"] == 1000
        declared = request(s.base + "/", "POST", {"Content-Type": "application/octet-stream"}, b"x" * 1001)
        assert declared.status == 413
        status, body = s.raw(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + b"".join(b"100\r\n" + b"y" * 256 + b"\r\n" for _ in range(8))
            + b"0\r\n\r\n"
        )
        assert status == 413, body
    finally:
        s.stop()


def test_a_client_dribbling_its_headers_is_cut_off(tmp_path):
    s = Stack(tmp_path, "^x$", header_timeout=1)
    try:
        with socket.create_connection(("127.0.0.1", s.port), timeout=60) as sock:
            # Headers that never end, as slowloris sends them; the router hangs up without an answer.
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            assert sock.recv(1) == b"", "the router kept a connection whose headers never ended"
        assert s.metric("cells_router_slow_clients_total") >= 1
        assert s.get().status == 200  # everyone else is served
    finally:
        s.stop()


def _descendants(pid: int) -> set[int]:
    """Live descendants of ``pid``, from /proc (the router's fork server and its evaluation workers)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    return {p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in _state(p)}


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_stopping_the_router_stops_its_evaluation_workers(fallback_stack):
    """Workers forked from the fork server used to outlive a terminated router (each holding the other's pipes)."""
    s = fallback_stack
    assert s.get(headers={"Cookie": f"hostile={HOSTILE}"}).status == 503  # a worker killed and replaced
    assert s.get(headers={"Cookie": "hostile=aa"}).status == 200
    workers = _descendants(s.router.proc.pid)
    assert len(workers) >= 2  # the fork server and at least one worker
    s.router.stop()
    eventually(lambda: not _alive(workers), timeout=10, message="the router's workers gone")
