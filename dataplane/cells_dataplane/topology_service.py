"""``cells-topology-service``: the Topology Service's classify REST API over the operator's records.

Reads ``topology.json`` (the operator's ConfigMap, mounted as a file), reloads it on change without
dropping requests (each request sees one immutable snapshot), rejects a bad file and keeps the last good
records. Endpoints: ``POST /v1/classify`` (GitLab's REST mapping of ``ClassifyService.Classify``), and
this project's extensions ``GET /v1/cells``, ``GET /v1/cells/{id}`` (upstream's ``GetCells`` is gRPC only,
with no REST mapping), ``/healthz``, ``/readyz`` (ready once records are loaded), ``/metrics``, and the
OpenAPI 3 document of it all at ``/openapi.json``. Hostile input is bounded (ADR 0013): bodies over
``--max-body-bytes`` are 413, non-JSON content types 415, anything malformed 400; every error is a
``google.rpc.Status`` body, never a 5xx or a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from cells_formats.records import CellRecord, parse_topology_json

from .classify import INVALID_ARGUMENT, Snapshot, classify, not_found, status_body
from .eventloop import DEFAULT_LOOP, LOOPS, loop_factory
from .filewatch import WatchedFile

log = logging.getLogger("cells_topology_service")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "topology_service_requests_total",
            "Requests by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "topology_service_request_duration_seconds",
            "Request duration by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.reloads = Counter("topology_service_records_reloads_total", "Records files loaded", registry=self.registry)
        self.rejected = Counter(
            "topology_service_records_rejected_total",
            "Records files rejected (unparseable); the last good records stay in service",
            registry=self.registry,
        )
        self.revision = Gauge(
            "topology_service_records_revision", "Revision of the records in service", registry=self.registry
        )
        self.cells = Gauge("topology_service_cells", "Registered cells in service", registry=self.registry)


DEFAULT_MAX_BODY = 64 * 1024
NO_STORE = {"Cache-Control": "no-store"}
# What a classify body may be labelled: JSON, nothing at all, or the form type that curl -d and urllib
# put on any body without one (grpc-gateway parses every type but form bodies as JSON; ADR 0013).
JSON_TYPES = ("application/json", "application/x-www-form-urlencoded")
OPENAPI = Path(__file__).with_name("openapi.json")


def content_type_problem(request: web.Request) -> str | None:
    """Why the body's declared Content-Type cannot be a ClassifyRequest, or None if it can."""
    if "Content-Type" not in request.headers:
        return None
    kind = request.content_type.lower()
    if kind not in JSON_TYPES and not (kind.startswith("application/") and kind.endswith("+json")):
        return f"Content-Type {request.headers['Content-Type']!r} is not JSON (send application/json)"
    if request.charset is not None and request.charset.lower() not in ("utf-8", "utf8"):
        return f"charset {request.charset!r} is not supported (send UTF-8)"
    return None


def bad_request(status: int, message: str) -> web.Response:
    return web.json_response(status_body(INVALID_ARGUMENT, message), status=status, headers=NO_STORE)


# gRPC codes the gateway renders aiohttp's own HTTP errors with (unknown path: 5, as grpc-gateway does).
HTTP_ERROR_CODES = {404: 5, 405: 12, 413: 3, 415: 3}


@web.middleware
async def status_errors(request: web.Request, handler):
    """Every error is a ``google.rpc.Status`` body: aiohttp's own (404, 405, ...) and, never expected, 500."""
    try:
        return await handler(request)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        body = status_body(HTTP_ERROR_CODES.get(err.status, 3 if err.status < 500 else 13), err.reason)
        headers = {k: v for k, v in err.headers.items() if k.lower() == "allow"}
        return web.json_response(body, status=err.status, headers={**headers, "Cache-Control": "no-store"})
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return web.json_response(status_body(13, "internal error"), status=500, headers=NO_STORE)


def unavailable() -> web.Response:
    return web.json_response(status_body(14, "records not loaded yet"), status=503, headers=NO_STORE)


def cell_json(cell: CellRecord) -> dict[str, Any]:
    """One cell as ``GET /v1/cells`` shows it (this project's extension; the fields of the records)."""
    return {
        "id": cell.id,
        "address": cell.address,
        "session_prefix": cell.session_prefix,
        "state": cell.state.value,
        "routable": cell.routable,
        "first_cell": cell.first_cell,
        "sequence_ranges": [r.model_dump() for r in cell.sequence_ranges],
    }


SnapshotHandler = Callable[["TopologyService", web.Request, Snapshot], Awaitable[web.StreamResponse]]


def answers(method: str) -> Callable[[SnapshotHandler], Callable[..., Awaitable[web.StreamResponse]]]:
    """An API handler's common frame: 503 until records are loaded, then the handler with the snapshot of
    this request; every answer counted and timed under the gRPC ``method`` name."""

    def frame(handler: SnapshotHandler) -> Callable[..., Awaitable[web.StreamResponse]]:
        @functools.wraps(handler)
        async def framed(service: TopologyService, request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            snapshot = service.snapshot  # one read: the request keeps this snapshot whatever reloads meanwhile
            response = unavailable() if snapshot is None else await handler(service, request, snapshot)
            service.metrics.requests.labels(method, str(response.status)).inc()
            service.metrics.duration.labels(method).observe(time.perf_counter() - started)
            return response

        return framed

    return frame


class TopologyService:
    """The state the handlers share: the records snapshot in service, the metrics, the cache lifetimes."""

    def __init__(self, max_age: int, negative_max_age: int, max_body: int):
        self.metrics = Metrics()
        self.snapshot: Snapshot | None = None
        self.max_age = max_age
        self.negative_max_age = negative_max_age
        self.max_body = max_body

    def loaded(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot  # one reference swap: in-flight requests keep their snapshot
        self.metrics.reloads.inc()
        self.metrics.revision.set(snapshot.revision)
        self.metrics.cells.set(len(snapshot.topology.cells))

    def rejected(self, _why: str) -> None:
        self.metrics.rejected.inc()

    def cache(self, status: int) -> str:
        """Cache-Control of an answer: positive and NOT_FOUND answers for their lifetimes, errors never."""
        return {200: f"max-age={self.max_age}", 404: f"max-age={self.negative_max_age}"}.get(status, "no-store")

    async def classify_body(self, request: web.Request) -> Any | web.Response:
        """The request's JSON body, or the 415, 413 or 400 that refuses it (checked in that order)."""
        refused = content_type_problem(request)
        if refused is not None:
            return bad_request(415, refused)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return bad_request(413, f"request body is larger than {self.max_body} bytes")
        try:
            return json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, int digits limit; nesting
            return bad_request(400, "request body is not valid JSON (UTF-8)")

    @answers("Classify")
    async def post_classify(self, request: web.Request, snapshot: Snapshot) -> web.StreamResponse:
        body = await self.classify_body(request)
        if isinstance(body, web.Response):
            return body
        answer = classify(snapshot, body)
        headers = {"Cache-Control": self.cache(answer.status), "X-Topology-Revision": str(snapshot.revision)}
        return web.json_response(answer.body, status=answer.status, headers=headers)

    @answers("ListCells")
    async def get_cells(self, request: web.Request, snapshot: Snapshot) -> web.StreamResponse:
        cells = sorted(snapshot.topology.cells, key=lambda c: c.id)
        body = {"revision": snapshot.revision, "cells": [cell_json(c) for c in cells]}
        return web.json_response(body, headers={"Cache-Control": self.cache(200)})

    @answers("GetCell")
    async def get_cell(self, request: web.Request, snapshot: Snapshot) -> web.StreamResponse:
        raw = request.match_info["id"]
        if not re.fullmatch(r"[0-9]{1,19}", raw):
            message = f"cell id {raw!r} is not an integer"
            return web.json_response(status_body(INVALID_ARGUMENT, message), status=400)
        cell = snapshot.by_id.get(int(raw))
        if cell is None:
            return web.json_response(not_found(raw).body, status=404, headers={"Cache-Control": self.cache(404)})
        return web.json_response(cell_json(cell), headers={"Cache-Control": self.cache(200)})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.snapshot is None:
            return web.Response(text="records not loaded", status=503)
        return web.Response(text="ok")

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI.read_bytes(), content_type="application/json")


METRICS = web.AppKey("metrics", Metrics)
WATCHED = web.AppKey("watched", WatchedFile)


async def start_watching(app: web.Application) -> None:
    app[WATCHED].start()


async def stop_watching(app: web.Application) -> None:
    await app[WATCHED].stop()


def build_app(
    records: Path,
    max_age: int = 10,
    negative_max_age: int = 5,
    poll: float = 1.0,
    max_body: int = DEFAULT_MAX_BODY,
) -> web.Application:
    """The service's routes over ``records``, followed from startup to cleanup."""
    service = TopologyService(max_age, negative_max_age, max_body)
    app = web.Application(client_max_size=max_body, middlewares=[status_errors])
    app[METRICS] = service.metrics
    app[WATCHED] = WatchedFile(
        records,
        lambda raw: Snapshot(parse_topology_json(raw.decode())),
        on_reload=service.loaded,
        on_reject=service.rejected,
        interval=poll,
    )
    app.router.add_get("/openapi.json", openapi)
    app.router.add_post("/v1/classify", service.post_classify)
    app.router.add_get("/v1/cells", service.get_cells)
    app.router.add_get("/v1/cells/{id}", service.get_cell)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", service.readyz)
    app.router.add_get("/metrics", service.metrics_endpoint)
    app.on_startup.append(start_watching)
    app.on_cleanup.append(stop_watching)
    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    import os

    parser = argparse.ArgumentParser(
        prog="cells-topology-service", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--records",
        default=os.environ.get("CELLS_RECORDS", "/etc/cells/topology/topology.json"),
        help="path of topology.json (the mounted cells-topology ConfigMap)",
    )
    parser.add_argument("--host", default=os.environ.get("CELLS_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CELLS_PORT", "9100")))
    parser.add_argument("--max-age", type=int, default=10, help="Cache-Control max-age of positive answers (s)")
    parser.add_argument("--negative-max-age", type=int, default=5, help="max-age of NOT_FOUND answers (s)")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between checks of the records file")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=int(os.environ.get("CELLS_MAX_BODY_BYTES", str(DEFAULT_MAX_BODY))),
        help="largest classify request body accepted; larger ones get 413 (env CELLS_MAX_BODY_BYTES)",
    )
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default=os.environ.get("CELLS_TOPOLOGY_SERVICE_LOOP", DEFAULT_LOOP),
        help="event loop: uvloop (default) or asyncio (the standard library's, for comparison)",
    )
    args = parser.parse_args(argv)
    if args.max_body_bytes < 1:
        parser.error("--max-body-bytes must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build_app(Path(args.records), args.max_age, args.negative_max_age, args.poll, args.max_body_bytes)
    loop = loop_factory(args.loop)()
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
