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
import json
import logging
import re
import time
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from cells_operator.records import parse_topology_json

from .classify import INVALID_ARGUMENT, Snapshot, classify, not_found, status_body
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
    return web.json_response(
        status_body(INVALID_ARGUMENT, message), status=status, headers={"Cache-Control": "no-store"}
    )


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
        return web.json_response(status_body(13, "internal error"), status=500, headers={"Cache-Control": "no-store"})


def build_app(
    records: Path,
    max_age: int = 10,
    negative_max_age: int = 5,
    poll: float = 1.0,
    max_body: int = DEFAULT_MAX_BODY,
) -> web.Application:
    metrics = Metrics()
    state: dict[str, Snapshot | None] = {"snapshot": None}

    def loaded(snapshot: Snapshot) -> None:
        state["snapshot"] = snapshot  # one reference swap: in-flight requests keep their snapshot
        metrics.reloads.inc()
        metrics.revision.set(snapshot.revision)
        metrics.cells.set(len(snapshot.topology.cells))

    watched = WatchedFile(
        records,
        lambda raw: Snapshot(parse_topology_json(raw.decode())),
        on_reload=loaded,
        on_reject=lambda _: metrics.rejected.inc(),
        interval=poll,
    )

    def observe(method: str, started: float, response: web.StreamResponse) -> web.StreamResponse:
        metrics.requests.labels(method, str(response.status)).inc()
        metrics.duration.labels(method).observe(time.perf_counter() - started)
        return response

    def unavailable() -> web.Response:
        return web.json_response(
            status_body(14, "records not loaded yet"), status=503, headers={"Cache-Control": "no-store"}
        )

    async def post_classify(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        snapshot = state["snapshot"]
        if snapshot is None:
            return observe("Classify", started, unavailable())
        refused = content_type_problem(request)
        if refused is not None:
            return observe("Classify", started, bad_request(415, refused))
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            message = f"request body is larger than {max_body} bytes"
            return observe("Classify", started, bad_request(413, message))
        try:
            body = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, int digits limit; nesting
            return observe("Classify", started, bad_request(400, "request body is not valid JSON (UTF-8)"))
        answer = classify(snapshot, body)
        cache = {200: f"max-age={max_age}", 404: f"max-age={negative_max_age}"}.get(answer.status, "no-store")
        response = web.json_response(
            answer.body,
            status=answer.status,
            headers={"Cache-Control": cache, "X-Topology-Revision": str(snapshot.revision)},
        )
        return observe("Classify", started, response)

    def cell_json(cell) -> dict:
        return {
            "id": cell.id,
            "address": cell.address,
            "session_prefix": cell.session_prefix,
            "state": cell.state.value,
            "routable": cell.routable,
            "first_cell": cell.first_cell,
            "sequence_ranges": [r.model_dump() for r in cell.sequence_ranges],
        }

    async def get_cells(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        snapshot = state["snapshot"]
        if snapshot is None:
            return observe("ListCells", started, unavailable())
        body = {
            "revision": snapshot.revision,
            "cells": [cell_json(c) for c in sorted(snapshot.topology.cells, key=lambda c: c.id)],
        }
        return observe("ListCells", started, web.json_response(body, headers={"Cache-Control": f"max-age={max_age}"}))

    async def get_cell(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        snapshot = state["snapshot"]
        if snapshot is None:
            return observe("GetCell", started, unavailable())
        raw = request.match_info["id"]
        if not re.fullmatch(r"[0-9]{1,19}", raw):
            return observe(
                "GetCell",
                started,
                web.json_response(status_body(INVALID_ARGUMENT, f"cell id {raw!r} is not an integer"), status=400),
            )
        cell = snapshot.by_id.get(int(raw))
        if cell is None:
            return observe(
                "GetCell",
                started,
                web.json_response(
                    not_found(raw).body,
                    status=404,
                    headers={"Cache-Control": f"max-age={negative_max_age}"},
                ),
            )
        return observe(
            "GetCell", started, web.json_response(cell_json(cell), headers={"Cache-Control": f"max-age={max_age}"})
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.Response:
        if state["snapshot"] is None:
            return web.Response(text="records not loaded", status=503)
        return web.Response(text="ok")

    async def metrics_endpoint(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def on_startup(app: web.Application) -> None:
        watched.start()

    async def on_cleanup(app: web.Application) -> None:
        await watched.stop()

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=OPENAPI.read_bytes(), content_type="application/json")

    app = web.Application(client_max_size=max_body, middlewares=[status_errors])
    app.router.add_get("/openapi.json", openapi)
    app.router.add_post("/v1/classify", post_classify)
    app.router.add_get("/v1/cells", get_cells)
    app.router.add_get("/v1/cells/{id}", get_cell)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app["metrics"] = metrics
    app["watched"] = watched
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
    args = parser.parse_args(argv)
    if args.max_body_bytes < 1:
        parser.error("--max-body-bytes must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build_app(Path(args.records), args.max_age, args.negative_max_age, args.poll, args.max_body_bytes)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
