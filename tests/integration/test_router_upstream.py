"""What the router sends a cell, and on which connection (ADR 0018). Real processes, no cluster.

The router forwards every client's requests through one shared HTTP client session. That session must
reuse its connections to a cell (keep-alive: a new TCP connection per request is most of a proxy's cost),
and it must carry nothing from one client to another: aiohttp's default cookie jar would keep a cell's
``Set-Cookie`` and send it with the next request to that host, whoever makes it; and its default headers
would tell a cell that a client accepts gzip when it never said so.
"""

from __future__ import annotations

import http.client
import json

import pytest

from cells_devtools.devcluster.cluster import free_port
from tests.support.dataplane import Process, echo_backend, request, router_argv, wait_http_ok


@pytest.fixture
def router(tmp_path):
    """A router whose only rule proxies to an echo cell by host name (aiohttp's jar ignores IP addresses)."""
    echo, echo_port = echo_backend("cell", tmp_path)
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"action": "proxy", "proxy": {"address": f"localhost:{echo_port}"}}]))
    port, admin = free_port(), free_port()
    proc = Process("router", router_argv(rules, "http://127.0.0.1:9", port, admin), tmp_path).start()
    try:
        wait_http_ok(f"http://127.0.0.1:{admin}/readyz")
        yield port
    finally:
        proc.stop()
        echo.stop()


def seen_by_cell(port: int, path: str, headers: dict[str, str] | None = None) -> dict:
    answer = request(f"http://127.0.0.1:{port}{path}", headers=headers)
    assert answer.status == 200, answer.body
    return json.loads(answer.body)


def test_a_cookie_a_cell_sets_for_one_client_never_reaches_the_cell_for_another(router):
    set_by_cell = request(f"http://127.0.0.1:{router}/set-cookie?name=_gitlab_session&value=alice-secret")
    assert set_by_cell.status == 200
    assert set_by_cell.headers.get("Set-Cookie", "").startswith("_gitlab_session=alice-secret")  # the client gets it

    other_client = seen_by_cell(router, "/projects")
    assert "Cookie" not in other_client["headers"]

    with_own_cookie = seen_by_cell(router, "/projects", {"Cookie": "_gitlab_session=bob"})
    assert with_own_cookie["headers"]["Cookie"] == "_gitlab_session=bob"


def test_the_router_adds_no_header_of_its_own_http_client(router):
    connection = http.client.HTTPConnection("127.0.0.1", router, timeout=15)
    try:
        connection.putrequest("GET", "/bare", skip_accept_encoding=True)  # http.client adds no User-Agent itself
        connection.endheaders()
        answer = connection.getresponse()
        assert answer.status == 200
        seen = {name.lower() for name in json.loads(answer.read())["headers"]}
    finally:
        connection.close()
    assert not seen & {"user-agent", "accept", "accept-encoding"}, seen


def test_sequential_requests_reuse_one_connection_to_the_cell(router):
    ports = {seen_by_cell(router, f"/page/{i}")["peer_port"] for i in range(5)}
    assert len(ports) == 1, f"the router opened {len(ports)} connections for 5 sequential requests"
    streamed = request(f"http://127.0.0.1:{router}/stream?chunks=2&pause=0")  # the streaming path releases it too
    assert streamed.status == 200
    assert {seen_by_cell(router, "/after-stream")["peer_port"]} == ports
