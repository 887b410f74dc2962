"""The data-plane benchmark's pure parts: the nginx peer's configuration, the goal verdicts, the event loops.

The benchmark's numbers are never asserted (they are the machine's); what is asserted is that the peer is
the one the goals name (a reverse proxy with upstream keepalive) and that a verdict says what it should.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import uvloop

from cells_dataplane.eventloop import LOOPS, loop_factory
from tests.bench.dataplane import goal_verdicts
from tests.bench.nginx import proxy_conf


def test_nginx_keeps_upstream_connections_alive_and_writes_nothing_outside_its_prefix(tmp_path):
    conf = proxy_conf(tmp_path, 18080, "127.0.0.1:18002")
    # All three are needed for upstream keepalive: the pool, HTTP/1.1, and no "Connection: close".
    assert "keepalive 64;" in conf
    assert "proxy_http_version 1.1;" in conf
    assert 'proxy_set_header Connection "";' in conf
    assert "server 127.0.0.1:18002;" in conf and "listen 127.0.0.1:18080;" in conf
    paths = [word.rstrip(";") for word in conf.split() if word.startswith("/") and word != "/"]  # not "location /"
    assert paths and all(Path(p).is_relative_to(tmp_path) for p in paths), paths


def test_goal_verdicts_say_met_or_missed_and_by_how_much():
    results = {
        "direct": {"p50_ms": 0.3, "p99_ms": 0.5},
        "nginx": {"p50_ms": 0.4, "p99_ms": 0.6},
        "router (uvloop)": {"p50_ms": 0.8, "p99_ms": 0.9},
    }
    verdicts = goal_verdicts(results, "router (uvloop)")
    assert verdicts == [
        "router p50 at most 1.5x nginx's: 2.00x, **MISSED by 0.50x**",
        "router p99 at most 1.5x nginx's: 1.50x, **met**",
        "router p50 at most 2x direct's: 2.67x, **MISSED by 0.67x**",
        "router p99 at most 2x direct's: 1.80x, **met**",
    ]


def test_the_event_loops_on_offer():
    assert LOOPS[0] == "uvloop"
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is asyncio.new_event_loop
    with pytest.raises(ValueError, match="uvloop, asyncio"):
        loop_factory("trio")
