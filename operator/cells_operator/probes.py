"""The operator's own HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz`` on one port.

It is started by the supervisor before kopf and outlives kopf's restarts, so a scrape or a probe always
gets an answer -- in particular while the operator is waiting for its CRDs or for the API server, which
is exactly when ``/readyz`` must say so.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .health import REASONS, Health
from .metrics import OperatorMetrics


def refresh(health: Health, metrics: OperatorMetrics, now: float) -> None:
    """Mirror ``health`` into the gauges (called before every scrape and by the watchdog)."""
    for reason in REASONS:
        metrics.blocked.labels(reason).set(1 if reason in health.blockers else 0)
    metrics.blocked_seconds.set(health.blocked_for(now))
    metrics.ready.set(1 if health.ready else 0)
    metrics.leader.set(0 if health.leader is False else 1)


async def start(
    health: Health,
    metrics: OperatorMetrics,
    port: int,
    host: str = "0.0.0.0",
    clock: Callable[[], float] = time.monotonic,
) -> web.AppRunner:
    async def scrape(_: web.Request) -> web.Response:
        refresh(health, metrics, clock())
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text=health.describe(clock()) + "\n", status=200 if health.ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
