"""``cells-router``: the HTTP router -- evaluate the ruleset, classify, reverse-proxy to the cell.

For each request: the first matching rule decides; ``classify`` asks the Topology Service (through a
cache of positive and negative answers that honours its Cache-Control and serves stale answers when the
service is down); ``proxy`` goes straight to the rule's address. Bodies stream both ways (no full
buffering); hop-by-hop headers are dropped; ``X-Forwarded-*`` is set from what the router saw (a client's
own values are replaced unless it connects from ``--trusted-proxies``, whose chain is extended); bodies
past ``--max-body`` are answered 413. Like GitLab's router, the proxied request tells the cell which
rule decided (``X-Gitlab-Http-Router-Rule-Action``: ``classify`` or
``proxy``; ``X-Gitlab-Http-Router-Rule-Type``: the classify type, none for proxy), which GitLab Rails reads
(``Gitlab::HttpRouter::RuleContext``); values a client sent itself are dropped. Every response says the
same as ``X-Cells-Router-Rule-Action`` / ``-Type`` (a debugging aid). A ``proxy`` rule without an address
goes to ``--default-upstream``, or to the first cell when that is unset. The scheme and port for an
address are chosen by ``--upstream-scheme`` (``auto``: https for a bare host, http for ``host:port``).
Hostile input is bounded (ADR 0013): patterns run on RE2 (linear time) where they can, a ruleset with
others is evaluated in worker processes with a deadline (``--match-deadline``, then 503), and a header or
Cookie value longer than ``--max-header-value`` (8 KiB) is answered 431.
Failures are answered, never hung: no rule -> 502, Topology Service unreachable with nothing cached ->
503, unknown cell -> 502, cell unreachable -> 502, cell too slow -> 504.

The ruleset file (``<ruleset>.json`` from the operator's ConfigMap) is reloaded atomically on change; a
bad file is rejected and the last good ruleset stays in service. Admin endpoints (``/healthz``,
``/readyz``, ``/metrics``) are on a separate port so that no application path is shadowed.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import ipaddress
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from cells_formats.fields import address_problem

from .classify_cache import ClassifyCache, ServiceAnswer, Unavailable
from .eventloop import DEFAULT_LOOP, LOOPS, loop_factory
from .fairness import CLIENT_QUEUE, ClientFairness, Networks, TooManyRequests, trusted_peer
from .filewatch import WatchedFile
from .matching import NeedsBacktracking, deferred
from .routing import (
    SCHEMES,
    Decision,
    RequestView,
    Ruleset,
    decide_in_worker,
    load_ruleset,
    oversized_header,
    upstream_base,
)

log = logging.getLogger("cells_router")
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
}
ACTION_HEADER = "X-Cells-Router-Rule-Action"
TYPE_HEADER = "X-Cells-Router-Rule-Type"
# What GitLab's router sets on the proxied request (http-router src/header.ts, as cited by gitlabhq's
# lib/gitlab/http_router/rule_context.rb); Rails counts routed requests by them.
UPSTREAM_ACTION_HEADER = "X-Gitlab-Http-Router-Rule-Action"
UPSTREAM_TYPE_HEADER = "X-Gitlab-Http-Router-Rule-Type"
# Request headers never forwarded as the client sent them: hop-by-hop ones, Host (the cell's own is sent),
# the rule headers (a client must not claim a decision) and X-Forwarded-* (set by the router, see below).
NOT_FORWARDED = HOP_BY_HOP | {
    "host",
    UPSTREAM_ACTION_HEADER.lower(),
    UPSTREAM_TYPE_HEADER.lower(),
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
}
CHUNK = 64 * 1024
NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding")  # what aiohttp's client would add on its own
MAX_HEADER_VALUE = 8 * 1024  # what the rules may see of one header or Cookie value; longer -> 431
MAX_BODY = 1 << 30  # bytes a request body may stream to a cell; more -> 413 (0: no limit)
HEADER_TIMEOUT = 10.0  # seconds a connection may take to send a request's headers (also bounds idle keep-alive)
MATCH_DEADLINE = 0.25  # seconds a ruleset with patterns off RE2 may take to decide, in a worker process
WORKER_WAIT = 10.0  # seconds a request may wait for a free evaluation worker; then 503


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "cells_router_requests_total",
            "Requests by deciding rule action/type and status",
            ["action", "type", "code"],
            registry=r,
        )
        self.classify = Histogram(
            "cells_router_classify_duration_seconds",
            "Topology Service classify calls by result",
            ["result"],
            buckets=BUCKETS,
            registry=r,
        )
        self.cache = Counter(
            "cells_router_classify_cache_total", "Classification lookups by cache result", ["result"], registry=r
        )
        self.upstream = Histogram(
            "cells_router_upstream_duration_seconds",
            "Time to the upstream cell's response headers",
            buckets=BUCKETS,
            registry=r,
        )
        self.reloads = Counter("cells_router_rules_reloads_total", "Ruleset files loaded", registry=r)
        self.rejected = Counter(
            "cells_router_rules_rejected_total",
            "Ruleset files rejected; the last good ruleset stays in service",
            registry=r,
        )
        self.rules = Gauge("cells_router_rules", "Rules in the ruleset in service", registry=r)
        self.linear = Gauge(
            "cells_router_rules_linear",
            "1 if every pattern of the ruleset in service runs on the linear-time engine (RE2), else 0",
            registry=r,
        )
        self.slow_clients = Counter(
            "cells_router_slow_clients_total",
            "Connections cut because a request's headers took longer than --header-timeout",
            registry=r,
        )
        self.budget_exceeded = Counter(
            "cells_router_match_budget_exceeded_total",
            "Requests whose rule evaluation passed its deadline (answered 503; the evaluation worker is replaced)",
            registry=r,
        )
        self.client_refused = Counter(
            "cells_router_client_refused_total",
            "Requests answered 429: their client had --max-in-flight-per-client in flight and its queue was full "
            "(queue_full) or the wait ran out (queue_wait)",
            ["reason"],
            registry=r,
        )
        self._children: dict[tuple[int, tuple[str, ...]], Counter] = {}

    def count(self, counter: Counter, *labels: str) -> None:
        """``counter.labels(*labels).inc()``, the labelled child looked up once per label set, not per
        request (prometheus_client's lookup takes a lock and builds a key: it showed in the profile)."""
        key = (id(counter), labels)  # the counters live as long as this object: their ids stay theirs
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        child.inc()

    def request_done(self, action: str, kind: str, code: int) -> None:
        self.count(self.requests, action, kind, str(code))

    def cache_lookup(self, result: str) -> None:
        self.count(self.cache, result)


class BudgetExceeded(Exception):
    """Rule evaluation passed its deadline (or found no evaluation worker free in time)."""


def _worker_context() -> multiprocessing.context.BaseContext:
    """Workers forked from a fork server that has imported the routing code: a replacement starts in
    milliseconds, not the second a fresh interpreter takes, so a stream of killed matches costs little."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["cells_dataplane.routing"])
    return context


class _Slot:
    """One evaluation worker process, given one evaluation at a time (so a kill hits only that evaluation)."""

    def __init__(self) -> None:
        self.executor = concurrent.futures.ProcessPoolExecutor(1, mp_context=_worker_context())
        self.source: bytes | None = None  # the ruleset this worker has compiled (warmed outside any deadline)

    def kill(self) -> None:
        for process in list((getattr(self.executor, "_processes", None) or {}).values()):
            process.kill()
        self.executor.shutdown(wait=False)


def _retrieve(future: asyncio.Future) -> None:
    """Mark an abandoned evaluation's outcome (usually BrokenProcessPool after a kill) as seen."""
    if not future.cancelled():
        future.exception()


def _deferred_all(patterns):
    return tuple(deferred(p) for p in patterns)


class BoundedDecider:
    """Decide on the event loop whatever no backtracking pattern has to see; the rest in isolated workers.

    A backtracking pattern cannot be interrupted inside Python's ``re`` (it holds the GIL). So a ruleset with
    patterns off RE2 is first tried on the event loop with those patterns deferred
    (:func:`cells_dataplane.matching.deferred`): a request that needs none of them is decided there, with the
    same first-match answer. A request that does is evaluated in one of ``workers`` worker processes, each
    given one evaluation at a time: the deadline counts that evaluation only (not the wait for a free worker
    nor the worker's start and compile), and past it :class:`BudgetExceeded` is raised and only that worker
    is killed and replaced. No request is ever answered 503 because another request's match was killed.
    """

    def __init__(self, deadline: float = MATCH_DEADLINE, workers: int = 2, wait: float = WORKER_WAIT, slot=None):
        self.new_slot = slot or _Slot  # a factory of workers (unit tests give fakes)
        self.deadline = deadline
        self.workers = workers
        self.wait = wait  # seconds a request may wait for a free worker; then 503 (bounds the queue)
        self._idle: asyncio.Queue[_Slot] | None = None
        self._slots: set[_Slot] = set()
        # The ruleset in service, whether it is linear, and its copy with the patterns off RE2 deferred:
        # worked out once per ruleset (both visit every pattern), not per request.
        self._prepared: tuple[Ruleset, bool, Ruleset] | None = None

    async def decide(self, ruleset: Ruleset, request: RequestView) -> Decision | None:
        linear, deferring = self._prepare(ruleset)
        if linear:
            return ruleset.decide(request)
        try:
            return deferring.decide(request)
        except NeedsBacktracking:
            pass
        slot = await self._take()
        try:
            decision = await self._evaluate(slot, ruleset, request)
        except BaseException:
            self._replace(slot)  # its evaluation may still run: nobody else may queue behind it
            raise
        self._queue().put_nowait(slot)
        return decision

    def _prepare(self, ruleset: Ruleset) -> tuple[bool, Ruleset]:
        """Whether ``ruleset`` is linear, and its copy with the patterns off RE2 deferred: the match's and
        the transform steps' alike (a step's pattern runs on a value the request chose, after the match)."""
        if self._prepared is None or self._prepared[0] is not ruleset:
            rules = [
                replace(
                    r,
                    name_re=deferred(r.name_re),
                    value_re=deferred(r.value_re),
                    phases=None if r.phases is None else replace(r.phases, patterns=_deferred_all(r.phases.patterns)),
                )
                for r in ruleset.rules
            ]
            self._prepared = (ruleset, ruleset.linear, Ruleset(rules, ruleset.source))
        return self._prepared[1], self._prepared[2]

    def _queue(self) -> asyncio.Queue[_Slot]:
        """The idle workers; the queue and its ``workers`` slots are made on first use."""
        if self._idle is None:
            self._idle = asyncio.Queue()
            for _ in range(self.workers):
                self._add_slot(self._idle)
        return self._idle

    async def _take(self) -> _Slot:
        idle = self._queue()
        try:
            return await asyncio.wait_for(idle.get(), self.wait)
        except TimeoutError:
            raise BudgetExceeded(f"no evaluation worker free within {self.wait:g}s") from None

    def _add_slot(self, idle: asyncio.Queue[_Slot]) -> None:
        slot = self.new_slot()
        self._slots.add(slot)
        idle.put_nowait(slot)

    async def _evaluate(self, slot: _Slot, ruleset: Ruleset, request: RequestView) -> Decision | None:
        if slot.source != ruleset.source:
            # Start the worker and compile the ruleset there before the deadline counts (bounded all the same:
            # a warm-up without a bound once left every request waiting for a pool that never got ready).
            await self._run(slot, ruleset.source, RequestView("/"), self.wait, "evaluation worker did not start")
            slot.source = ruleset.source
        return await self._run(slot, ruleset.source, request, self.deadline, "rule evaluation passed its deadline")

    async def _run(self, slot: _Slot, source: bytes, request: RequestView, limit: float, late: str):
        try:
            future = asyncio.wrap_future(slot.executor.submit(decide_in_worker, source, request))
        except concurrent.futures.process.BrokenProcessPool as exc:
            raise BudgetExceeded(f"evaluation worker died: {exc}") from exc
        # asyncio.wait, not wait_for: the worker's future is not cancelled, so killing the worker resolves it.
        # (Python 3.11's pool manager thread dies on InvalidStateError when it meets a cancelled future, and
        # the futures queued behind it are then never resolved.)
        future.add_done_callback(_retrieve)
        done, _ = await asyncio.wait({future}, timeout=limit)
        if not done:
            raise BudgetExceeded(f"{late} of {limit:g}s")
        try:
            return future.result()
        except concurrent.futures.process.BrokenProcessPool as exc:
            raise BudgetExceeded(f"evaluation worker died: {exc}") from exc

    def _replace(self, slot: _Slot) -> None:
        self._slots.discard(slot)
        slot.kill()
        if self._idle is not None:
            self._add_slot(self._idle)

    def close(self) -> None:
        for slot in list(self._slots):
            slot.kill()
        self._slots.clear()


def _error(status: int, reason: str, decision: Decision | None = None) -> web.Response:
    headers = {"Cache-Control": "no-store", "X-Cells-Router-Error": reason.split(":")[0]}
    if decision is not None:
        headers[ACTION_HEADER] = decision.action
        if decision.classify_type:
            headers[TYPE_HEADER] = decision.classify_type
    return web.Response(status=status, text=reason + "\n", headers=headers)


class Router:
    def __init__(
        self,
        rules_path: Path,
        topology_service: str,
        cache_ttl: float = 10.0,
        negative_ttl: float = 5.0,
        classify_timeout: float = 1.0,
        connect_timeout: float = 2.0,
        upstream_timeout: float = 30.0,
        poll: float = 1.0,
        upstream_scheme: str = "auto",
        default_upstream: str | None = None,
        max_header_value: int = MAX_HEADER_VALUE,
        match_deadline: float = MATCH_DEADLINE,
        trusted_proxies: tuple[str, ...] = (),
        max_body: int = MAX_BODY,
        header_timeout: float = HEADER_TIMEOUT,
        max_in_flight_per_client: int = 0,
        client_queue: int = CLIENT_QUEUE,
    ):
        if upstream_scheme not in SCHEMES:
            raise ValueError(f"upstream scheme must be one of {', '.join(SCHEMES)}, got {upstream_scheme!r}")
        if default_upstream is not None and (problem := address_problem(default_upstream)):
            raise ValueError(f"default upstream: {problem}")
        self.upstream_scheme = upstream_scheme
        self.default_upstream = default_upstream
        self.max_header_value = max_header_value
        self.max_body = max_body
        self.header_timeout = header_timeout
        self.trusted_proxies = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)
        self.decider = BoundedDecider(match_deadline)
        self.metrics = Metrics()
        metrics = self.metrics
        self.fairness = ClientFairness(
            max_in_flight_per_client,
            client_queue,
            self.trusted_proxies,
            on_refuse=lambda reason: metrics.count(metrics.client_refused, reason),
        )
        self.topology_service = topology_service.rstrip("/")
        self.classify_timeout = aiohttp.ClientTimeout(total=classify_timeout)
        self.upstream_timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_connect=connect_timeout, sock_read=upstream_timeout
        )
        self.ruleset: Ruleset | None = None
        self.watched = WatchedFile(
            rules_path,
            load_ruleset,
            on_reload=self._loaded,
            on_reject=lambda _: self.metrics.rejected.inc(),
            interval=poll,
        )
        self.cache = ClassifyCache(self._classify_call, ttl=cache_ttl, negative_ttl=negative_ttl)
        self.session: aiohttp.ClientSession | None = None

    def _loaded(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset  # atomic swap; in-flight requests keep the ruleset they started with
        self.metrics.reloads.inc()
        self.metrics.rules.set(len(ruleset.rules))
        self.metrics.linear.set(1 if ruleset.linear else 0)
        if not ruleset.linear:
            log.warning(
                "ruleset has patterns off the linear-time engine: evaluated in worker processes with a deadline"
            )

    async def start(self, app: web.Application) -> None:
        # One session, its connections kept alive and reused across requests and clients (no limit: the
        # router queues nothing of its own). It is shared by every client, so it must carry nothing of one
        # client to another: no cookie jar (aiohttp's default keeps a cell's Set-Cookie and sends it with the
        # next request to that host, whoever makes it), and none of its own default headers (User-Agent,
        # Accept, Accept-Encoding: a client that accepts no gzip must not be sent one).
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=NO_AUTO_HEADERS,
        )
        self.watched.start()

    async def stop(self, app: web.Application) -> None:
        await self.watched.stop()
        self.decider.close()
        if self.session is not None:
            await self.session.close()

    async def _classify_call(self, kind: str, value: str | None) -> ServiceAnswer:
        assert self.session is not None
        started = time.perf_counter()
        result = "error"
        try:
            body = {"type": kind} if value is None else {"type": kind, "value": value}
            async with self.session.post(
                f"{self.topology_service}/v1/classify", json=body, timeout=self.classify_timeout
            ) as resp:
                payload = await resp.json(content_type=None)
                if resp.status == 200 and payload.get("action") == "PROXY":
                    result = "found"
                    return ServiceAnswer(payload["proxy"]["address"], resp.headers.get("Cache-Control"))
                if resp.status == 404:
                    result = "not_found"
                    return ServiceAnswer(None, resp.headers.get("Cache-Control"))
                raise RuntimeError(f"Topology Service answered {resp.status}: {payload.get('message', payload)}")
        finally:
            self.metrics.classify.labels(result).observe(time.perf_counter() - started)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        protocol = request.protocol
        if isinstance(protocol, HeaderDeadline):
            protocol.headers_done()
        try:
            async with self.fairness.turn(request.remote, request.headers):
                decision, response = await self._route(request)
        except TooManyRequests as exc:
            decision, response = None, _error(429, str(exc))
        finally:
            if isinstance(protocol, HeaderDeadline) and protocol.transport is not None:
                protocol.rearm()  # the next request on this connection gets the same deadline
        if decision is None:
            self.metrics.request_done("none", "none", response.status)
        else:
            self.metrics.request_done(decision.action, decision.type_label, response.status)
        return response

    async def _route(self, request: web.Request) -> tuple[Decision | None, web.StreamResponse]:
        ruleset = self.ruleset
        if ruleset is None:
            return None, _error(503, "ruleset not loaded")
        if name := oversized_header(request.headers.items(), self.max_header_value):
            return None, _error(431, f"request header too large: {name} longer than {self.max_header_value} characters")
        try:
            decision = await self.decider.decide(ruleset, RequestView.build(request.path, request.headers.items()))
        except BudgetExceeded as exc:
            self.metrics.budget_exceeded.inc()
            log.warning("%s: %s %s", exc, request.method, request.path)
            return None, _error(503, f"routing rules took too long: {exc}")
        if decision is None:
            return None, _error(502, "no routing rule matched this request")
        address = decision.address
        if decision.action == "proxy" and address is None:
            address = self.default_upstream
        if address is None:
            # A classify rule; or a proxy rule without an address and no --default-upstream: the first cell.
            if decision.action == "classify":
                kind, value = decision.classify_type or "", decision.value
            else:
                kind, value = "FIRST_CELL", None
            try:
                resolution = await self.cache.resolve(kind, value)
            except Unavailable as exc:
                return decision, _error(503, f"topology service unavailable: {exc}", decision)
            self.metrics.cache_lookup(resolution.source)
            if resolution.address is None:
                if decision.action == "proxy":
                    reason = "no default upstream: no first cell and no --default-upstream"
                    return decision, _error(502, reason, decision)
                what = f"{kind} {value or ''}".strip()
                return decision, _error(502, f"cell not found: {what}", decision)
            address = resolution.address
        assert address is not None
        return decision, await self.proxy(request, address, decision)

    async def proxy(self, request: web.Request, address: str, decision: Decision) -> web.StreamResponse:
        """Stream the request to ``address`` and the answer back, headers filtered both ways."""
        assert self.session is not None
        try:
            base = upstream_base(address, self.upstream_scheme)
        except ValueError as exc:
            return _error(502, f"cell address unusable: {exc}", decision)
        if self.max_body and (request.content_length or 0) > self.max_body:
            return self._too_large(decision)
        limit = _BodyLimit(self.max_body)
        started = time.perf_counter()
        response: web.StreamResponse | None = None
        try:
            async with self.session.request(
                request.method,
                f"{base}{request.rel_url}",
                headers=_forward_headers(request, decision, self.trusted_proxies),
                data=self._request_body(request, limit),
                allow_redirects=False,
                timeout=self.upstream_timeout,
            ) as upstream:
                self.metrics.upstream.observe(time.perf_counter() - started)
                headers = _answer_headers(upstream, decision)
                if _fits_one_chunk(upstream):
                    return await _answer_whole(upstream, headers)
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
                return await _stream_back(request, upstream, response)
        except (TimeoutError, aiohttp.ClientError, ConnectionResetError, BodyTooLarge) as exc:
            return self._proxy_failed(request, exc, limit, response, address, decision)

    def _too_large(self, decision: Decision) -> web.Response:
        return _error(413, f"request body larger than {self.max_body} bytes", decision)

    def _request_body(self, request: web.Request, limit: _BodyLimit):
        """The body to stream to the cell (None without one), cut off past ``--max-body``."""
        if not request.body_exists:
            return None
        return request.content if not self.max_body else limit.stream(request.content)

    def _proxy_failed(
        self,
        request: web.Request,
        exc: BaseException,
        limit: _BodyLimit,
        response: web.StreamResponse | None,
        address: str,
        decision: Decision,
    ) -> web.StreamResponse:
        """The answer when the exchange with the cell failed: 413, a cut connection, 504 or 502."""
        if limit.exceeded and (response is None or not response.prepared):
            # aiohttp reports the aborted upload as a connection error; the cause is the limit. The rest of
            # the body is never read, so this connection is done after the answer.
            too_large = self._too_large(decision)
            too_large.force_close()
            return too_large
        if response is not None and response.prepared:
            # Headers are gone already: the only honest signal left is to cut the connection.
            log.warning("upstream %s failed mid-response: %r", address, exc)
            if request.transport is not None:
                request.transport.close()
            return response
        if isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ConnectionTimeoutError):
            return _error(504, f"cell timed out: {address}", decision)
        return _error(502, f"cell unreachable: {address} ({type(exc).__name__})", decision)


def _answer_headers(upstream: aiohttp.ClientResponse, decision: Decision) -> CIMultiDict[str]:
    """The answer's headers: the cell's, hop-by-hop ones dropped, the rule decision added."""
    drop = _without_named(HOP_BY_HOP, upstream.headers)
    headers = CIMultiDict((name, value) for name, value in upstream.headers.items() if name.lower() not in drop)
    headers[ACTION_HEADER] = decision.action
    if decision.classify_type:
        headers[TYPE_HEADER] = decision.classify_type
    return headers


def _fits_one_chunk(upstream: aiohttp.ClientResponse) -> bool:
    length = upstream.headers.get("Content-Length")
    return length is not None and length.isdigit() and int(length) <= CHUNK


async def _answer_whole(upstream: aiohttp.ClientResponse, headers: CIMultiDict[str]) -> web.Response:
    """A body no larger than one streaming chunk goes out with the headers in one write."""
    headers.popall("Content-Length", None)
    return web.Response(status=upstream.status, reason=upstream.reason, headers=headers, body=await upstream.read())


async def _stream_back(
    request: web.Request, upstream: aiohttp.ClientResponse, response: web.StreamResponse
) -> web.StreamResponse:
    """Stream a larger (or unsized) body back chunk by chunk."""
    if upstream.headers.get("Content-Length") is None:
        response.enable_chunked_encoding()
    await response.prepare(request)
    async for chunk in upstream.content.iter_chunked(CHUNK):
        await response.write(chunk)
    await response.write_eof()
    return response


class BodyTooLarge(Exception):
    """The request body streamed past ``--max-body``."""


class _BodyLimit:
    """Streams a request body, stopping with :class:`BodyTooLarge` past ``limit`` bytes (and remembering it)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.exceeded = False

    async def stream(self, content):
        seen = 0
        async for chunk in content.iter_chunked(CHUNK):
            seen += len(chunk)
            if seen > self.limit:
                self.exceeded = True
                raise BodyTooLarge(f"request body larger than {self.limit} bytes")
            yield chunk


def _connection_tokens(headers) -> set[str]:
    return {t.strip().lower() for v in headers.getall("Connection", []) for t in v.split(",") if t.strip()}


def _without_named(always: set[str], headers) -> set[str]:
    """``always`` plus the headers that a ``Connection`` header names (hop-by-hop too), if there is one."""
    if "Connection" not in headers:
        return always
    return always | _connection_tokens(headers)


def _forward_headers(request: web.Request, decision: Decision, trusted: Networks = ()) -> CIMultiDict[str]:
    # A client must not be able to claim a rule decision of its own: its copies of the rule headers go;
    # X-Forwarded-* are set below. One pass over the request's headers (this runs for every request).
    drop = _without_named(NOT_FORWARDED, request.headers)
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in drop)
    peer = request.remote or ""
    if trusted_peer(peer, trusted):
        # A trusted proxy in front: its chain is extended and what it says about scheme and host is kept.
        prior = ", ".join(request.headers.getall("X-Forwarded-For", []))
        headers.add("X-Forwarded-For", f"{prior}, {peer}" if prior else peer)
        headers.add("X-Forwarded-Proto", request.headers.get("X-Forwarded-Proto", request.scheme))
        headers.add("X-Forwarded-Host", request.headers.get("X-Forwarded-Host", request.host))
    else:
        # Anyone else: whatever the client claims is replaced by what the router saw itself.
        headers.add("X-Forwarded-For", peer)
        headers.add("X-Forwarded-Proto", request.scheme)
        headers.add("X-Forwarded-Host", request.host)
    headers.extend(rule_headers(decision))
    return headers


def rule_headers(decision: Decision) -> list[tuple[str, str]]:
    """What GitLab's router tells the cell about the deciding rule: the action, and the type for classify."""
    headers = [(UPSTREAM_ACTION_HEADER, decision.action)]
    if decision.action == "classify" and decision.classify_type:
        headers.append((UPSTREAM_TYPE_HEADER, decision.classify_type))
    return headers


def build_apps(router: Router) -> tuple[web.Application, web.Application]:
    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", router.handle)
    app.on_startup.append(router.start)
    app.on_cleanup.append(router.stop)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.Response:
        return (
            web.Response(text="ok")
            if router.ruleset is not None
            else web.Response(text="ruleset not loaded", status=503)
        )

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(router.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    admin = web.Application()
    admin.router.add_get("/healthz", healthz)
    admin.router.add_get("/readyz", readyz)
    admin.router.add_get("/metrics", metrics)
    return app, admin


class HeaderDeadline(RequestHandler):
    """aiohttp's connection handler, cut off when a request's headers take longer than ``timeout`` to arrive.

    aiohttp has no header timeout of its own: a client that dribbles headers byte by byte holds a connection
    for ever (slowloris). The deadline is armed when the connection opens and again after each answer,
    and disarmed when the router's handler sees a request (its headers are complete).
    """

    timeout = HEADER_TIMEOUT
    on_cut: object = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self.rearm()

    def rearm(self) -> None:
        self.headers_done()
        self._deadline = asyncio.get_running_loop().call_later(self.timeout, self._cut)

    def headers_done(self) -> None:
        deadline = getattr(self, "_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._deadline = None

    def _cut(self) -> None:
        self._deadline = None
        if self.transport is not None:
            if callable(self.on_cut):
                self.on_cut()
            self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.headers_done()
        super().connection_lost(exc)


class _DeadlineServer:
    """aiohttp's ``Server`` (the protocol factory), making :class:`HeaderDeadline` handlers."""

    def __init__(self, server, timeout: float, on_cut) -> None:
        self._server = server
        self._handler = type("HeaderDeadlineHandler", (HeaderDeadline,), {"timeout": timeout, "on_cut": on_cut})

    def __call__(self) -> RequestHandler:
        return self._handler(self._server, loop=self._server._loop, **self._server._kwargs)

    def __getattr__(self, name: str):
        return getattr(self._server, name)


class GuardedRunner(web.AppRunner):
    """``AppRunner`` whose connections have a header deadline."""

    def __init__(self, app: web.Application, header_timeout: float, on_cut=None, **kwargs) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout = header_timeout
        self.on_cut = on_cut

    async def _make_server(self):
        return _DeadlineServer(await super()._make_server(), self.header_timeout, self.on_cut)


def parser_limits(max_header_value: int) -> dict[str, int]:
    """aiohttp's own header limits, set above the rules' cap so that the router answers 431 itself."""
    return {"max_field_size": max(8190, 4 * max_header_value + 1024)}


async def serve(router: Router, host: str, port: int, admin_port: int) -> None:
    app, admin = build_apps(router)
    runners = [
        GuardedRunner(
            app,
            router.header_timeout,
            router.metrics.slow_clients.inc,
            access_log=None,
            **parser_limits(router.max_header_value),
        ),
        web.AppRunner(admin, access_log=None),
    ]
    for runner in runners:
        await runner.setup()
    await web.TCPSite(runners[0], host, port).start()
    await web.TCPSite(runners[1], host, admin_port).start()
    log.info("routing on %s:%d (admin %s:%d)", host, port, host, admin_port)
    try:
        # SIGTERM (Kubernetes, tests) stops the router cleanly: the cleanup kills the evaluation workers,
        # which would otherwise outlive it (they and their fork server hold each other's pipes open).
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="cells-router", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rules",
        default=env.get("CELLS_ROUTER_RULES", "/etc/cells/router/session_token.json"),
        help="path of the ruleset file (<ruleset>.json of the mounted cells-router-rules ConfigMap)",
    )
    parser.add_argument("--topology-service", default=env.get("CELLS_TOPOLOGY_SERVICE", "http://127.0.0.1:9100"))
    parser.add_argument("--host", default=env.get("CELLS_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(env.get("CELLS_PORT", "8080")))
    parser.add_argument("--admin-port", type=int, default=int(env.get("CELLS_ADMIN_PORT", "9191")))
    parser.add_argument("--cache-ttl", type=float, default=10.0, help="cap on positive classify caching (s)")
    parser.add_argument("--negative-ttl", type=float, default=5.0, help="cap on NOT_FOUND caching (s)")
    parser.add_argument("--classify-timeout", type=float, default=1.0)
    parser.add_argument("--connect-timeout", type=float, default=2.0)
    parser.add_argument("--upstream-timeout", type=float, default=30.0, help="max seconds between upstream reads")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between checks of the ruleset file")
    parser.add_argument(
        "--upstream-scheme",
        choices=SCHEMES,
        default=env.get("CELLS_UPSTREAM_SCHEME", "auto"),
        help="scheme for cell addresses: auto (https, port 443, for a bare host; http for host:port), http or https",
    )
    parser.add_argument(
        "--default-upstream",
        default=env.get("CELLS_DEFAULT_UPSTREAM") or None,
        help="address for proxy rules without one (default: the first cell, asked of the Topology Service)",
    )
    parser.add_argument(
        "--max-header-value",
        type=int,
        default=int(env.get("CELLS_ROUTER_MAX_HEADER_VALUE", str(MAX_HEADER_VALUE))),
        help="longest header or Cookie value the rules see (characters); a longer one is answered 431",
    )
    parser.add_argument(
        "--match-deadline",
        type=float,
        default=float(env.get("CELLS_ROUTER_MATCH_DEADLINE", str(MATCH_DEADLINE))),
        help="seconds a ruleset with patterns RE2 cannot take may spend deciding (in a worker process); then 503",
    )
    parser.add_argument(
        "--trusted-proxies",
        default=env.get("CELLS_ROUTER_TRUSTED_PROXIES", ""),
        help="comma-separated CIDRs of proxies in front of the router whose X-Forwarded-* are kept and extended; "
        "from any other peer they are replaced (default: none)",
    )
    parser.add_argument(
        "--max-body",
        type=int,
        default=int(env.get("CELLS_ROUTER_MAX_BODY", str(MAX_BODY))),
        help="bytes a request body may stream to a cell (default 1 GiB; 0: no limit); more is answered 413",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=float(env.get("CELLS_ROUTER_HEADER_TIMEOUT", str(HEADER_TIMEOUT))),
        help="seconds a connection may take to send a request's headers, and may stay idle between requests",
    )
    parser.add_argument(
        "--max-in-flight-per-client",
        type=int,
        default=int(env.get("CELLS_ROUTER_MAX_IN_FLIGHT_PER_CLIENT", "0")),
        help="requests one client (peer address, or the X-Forwarded-For address behind --trusted-proxies) may "
        "have served at once; the next wait in its own queue (default 0: no bound)",
    )
    parser.add_argument(
        "--client-queue",
        type=int,
        default=int(env.get("CELLS_ROUTER_CLIENT_QUEUE", str(CLIENT_QUEUE))),
        help="requests one client may have waiting beyond --max-in-flight-per-client; more are answered 429",
    )
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default=env.get("CELLS_ROUTER_LOOP", DEFAULT_LOOP),
        help="event loop: uvloop (default; libuv, faster I/O) or asyncio (the standard library's, for comparison)",
    )
    args = parser.parse_args(argv)
    try:
        trusted = tuple(n.strip() for n in args.trusted_proxies.split(",") if n.strip())
        for network in trusted:
            ipaddress.ip_network(network, strict=False)
    except ValueError as exc:
        parser.error(f"--trusted-proxies: {exc}")
    if args.default_upstream and (problem := address_problem(args.default_upstream)):
        parser.error(f"--default-upstream: {problem}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    router = Router(
        Path(args.rules),
        args.topology_service,
        args.cache_ttl,
        args.negative_ttl,
        args.classify_timeout,
        args.connect_timeout,
        args.upstream_timeout,
        args.poll,
        args.upstream_scheme,
        args.default_upstream,
        args.max_header_value,
        args.match_deadline,
        trusted,
        args.max_body,
        args.header_timeout,
        args.max_in_flight_per_client,
        args.client_queue,
    )
    run(serve(router, args.host, args.port, args.admin_port), args.loop)


def run(main: Coroutine[object, object, None], loop: str = DEFAULT_LOOP) -> None:
    """Run ``main`` on the chosen event loop: uvloop's (ADR 0018) or the standard library's."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        runner.run(main)


if __name__ == "__main__":
    main()
