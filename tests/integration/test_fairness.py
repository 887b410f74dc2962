"""Per-client fairness against the running router (issue 17, item 5; ADR 0013). Real processes, no cluster.

A client's requests in flight are held open by streaming answers from the echo cell (``/stream``: the head
comes at once, the body over seconds), so "in flight" is observable from outside: the response head has
arrived. Clients are told apart by source address on loopback (127.0.0.1 and 127.0.0.2), or by the
``X-Forwarded-For`` a trusted proxy sets.
"""

from __future__ import annotations

import http.client
from concurrent.futures import ThreadPoolExecutor

from tests.integration.test_hostile import Stack
from tests.support.dataplane import request
from tests.support.prometheus import metric_value

STREAM = "/stream?chunks=15&pause=0.2"  # about 3 s in flight


def refused(stack: Stack, reason: str) -> float | None:
    text = request(f"http://127.0.0.1:{stack.admin}/metrics").body.decode()
    return metric_value(text, "cells_router_client_refused_total", reason=reason)


def open_stream(stack: Stack, source: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    """Start a streaming request from ``source`` and return once its head is back (it is then in flight)."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=15, source_address=(source, 0))
    conn.request("GET", STREAM, headers=headers or {})
    return conn.getresponse()


def get(stack: Stack, source: str, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=15, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def test_a_client_past_its_bound_is_queued_then_refused_and_another_client_is_served(tmp_path):
    s = Stack(tmp_path, "^x$", max_in_flight_per_client=1, client_queue=1)
    try:
        first = open_stream(s, "127.0.0.2")  # the attacker's one request in flight
        with ThreadPoolExecutor(2) as pool:
            # Two more from the same client: one waits in its queue (answered after the first), one is 429.
            later = [pool.submit(get, s, "127.0.0.2", STREAM) for _ in range(2)]
            # Another client is not held up by any of it: answered while the first still streams.
            status, body = get(s, "127.0.0.1")
            assert status == 200 and b'"cell": "other"' in body
            first.read()
            outcomes = sorted(f.result()[0] for f in later)
        assert outcomes == [200, 429]
        refusal = next(body for status, body in (f.result() for f in later) if status == 429)
        assert b"too many requests from this client: 127.0.0.2, 1 in flight and 1 waiting already" in refusal
        assert refused(s, "queue_full") == 1
    finally:
        s.stop()


def test_behind_a_trusted_proxy_clients_are_told_apart_by_x_forwarded_for(tmp_path):
    s = Stack(tmp_path, "^x$", trusted_proxies="127.0.0.1/32", max_in_flight_per_client=1, client_queue=0)
    try:
        alice = open_stream(s, "127.0.0.1", {"X-Forwarded-For": "198.51.100.1"})
        bob = open_stream(s, "127.0.0.1", {"X-Forwarded-For": "198.51.100.2"})  # same proxy, another client
        assert alice.status == bob.status == 200
        # Alice again, through the same proxy, with a forged address to the left of the proxy's entry.
        status, body = get(s, "127.0.0.1", headers={"X-Forwarded-For": "203.0.113.5, 198.51.100.1"})
        assert status == 429 and b"198.51.100.1" in body
        # From an untrusted peer the header is a claim: the peer is the client, whatever it says.
        status, _ = get(s, "127.0.0.2", headers={"X-Forwarded-For": "198.51.100.1"})
        assert status == 200
        alice.read()
        bob.read()
    finally:
        s.stop()


def test_off_by_default_one_client_may_have_many_requests_in_flight(tmp_path):
    s = Stack(tmp_path, "^x$")
    try:
        streams = [open_stream(s, "127.0.0.2") for _ in range(5)]
        assert [r.status for r in streams] == [200] * 5
        for r in streams:
            r.read()
        assert refused(s, "queue_full") is None  # never refused: the counter has no sample at all
    finally:
        s.stop()
