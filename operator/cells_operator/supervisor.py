"""The operator process: everything that must outlive a failure of kopf's watches.

kopf ends its whole operator when a watch stream fails with an error it does not retry -- for example
the 404 an API server answers for custom resources for a moment after it restarts, before its CRD
informers have synced again (kubernetes/kubernetes#71218). An operator that exits on every
control-plane upgrade is not one to trust, so this module runs kopf as a *child* of a supervisor loop
(ADR 0008):

- what must survive lives here, created once: the API client, the metrics and probes endpoint, the
  namespace reconcile loops, the leader elector, the health state;
- kopf runs with our settings (bounded retries with jitter, connect and read timeouts on every stream);
  when it ends with a transient error the supervisor restarts it in the same process after a jittered
  backoff -- it re-lists everything on start, which re-triggers every namespace, so nothing is lost;
- only permanent conditions end the process: 401/403 (credentials or RBAC), with an ERROR that names
  the request and the fix;
- before kopf starts, the CRDs must be installed and served; until they are, the operator says so at
  ERROR level, ``/readyz`` answers 503, and it starts by itself once they appear.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf
from tenacity.wait import wait_base

from . import probes
from .backoff import Backoffs, delay_for, exponential_jitter
from .cell import GROUP, VERSION
from .config import OperatorConfig
from .election import LeaderElector
from .health import API_UNAVAILABLE, CRD_MISSING, STARTING, WATCH_RESTARTING, Health
from .kube import Kube, load_api_client
from .leader import ElectionConfig
from .lease_store import KubeLeaseStore
from .metrics import OperatorMetrics
from .outage import OUTAGE_CODES, PERMANENT_CODES, OutageTracker, error_code, parse_kopf_retry
from .reconciler import NamespaceReconciler
from .workers import NamespaceWorkers

log = logging.getLogger(__name__)
CRDS = (f"cells.{GROUP}", f"routingrules.{GROUP}")
# A kopf run that lasted this long was healthy: the next failure starts the backoff from the beginning.
HEALTHY_RUN_SECONDS = 60.0


def kopf_settings(config: OperatorConfig) -> kopf.OperatorSettings:
    """kopf's settings for one run. Pure, so a unit test pins every value that keeps the process alive."""
    settings = kopf.OperatorSettings()
    # Everything kopf could write on our objects is named under cells.dev: changing these later would
    # re-trigger handlers on every existing object.
    settings.persistence.finalizer = "cells.dev/kopf-finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="cells.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="cells.dev", key="last-handled-configuration"
    )
    # We post our own Events (one per decision); kopf's log-to-Event posting would duplicate them.
    settings.posting.enabled = False
    # Retries inside kopf: exponential with jitter, for about a minute; beyond that the error reaches the
    # supervisor, which restarts the watches (transient) or exits clearly (401/403).
    settings.networking.error_backoffs = Backoffs(exponential_jitter(1.0, 15.0), budget=60.0)
    settings.networking.request_timeout = config.request_timeout
    settings.networking.connect_timeout = config.connect_timeout
    # A watch stream that is silently dead (no data, not even a bookmark) is reconnected after this long.
    settings.watching.connect_timeout = config.connect_timeout
    settings.watching.inactivity_timeout = config.watch_read_timeout
    settings.watching.server_timeout = config.resync_seconds
    settings.watching.client_timeout = config.resync_seconds + 30
    # kopf schedules a SIGKILL of the whole process 10 minutes after any exit it did not expect. The
    # supervisor restarts kopf instead, so that timer would kill a healthy process: off.
    settings.process.ultimate_exiting_timeout = None
    return settings


class KopfRetryLog(logging.Filter):
    """kopf logs every retry of a failing request at ERROR, on the logger of whoever made the request
    (watching, fetching, ...). Installed on the log *handlers*, this filter sees them all: it counts each
    by code for the outage tracker (one WARNING per outage) and demotes the line to DEBUG, shown only when
    the operator logs at DEBUG."""

    def __init__(self, on_error: Callable[[str, str], None], show_debug: Callable[[], bool] = lambda: False):
        super().__init__()
        self.on_error = on_error
        self.show_debug = show_debug

    def filter(self, record: logging.LogRecord) -> bool:
        parsed = parse_kopf_retry(record.getMessage())
        if parsed is None:
            return True
        request, code, _ = parsed
        self.on_error(code, f"{request}: {code}")
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self.show_debug()


@dataclass
class Supervisor:
    config: OperatorConfig
    kube: Kube
    metrics: OperatorMetrics
    health: Health
    workers: NamespaceWorkers
    elector: LeaderElector | None = None
    clock: Callable[[], float] = time.monotonic
    # tenacity's wait strategies: between restarts of kopf's watches, and between checks for the CRDs
    # (tests pass strategies without jitter)
    restart_wait: wait_base = field(default_factory=lambda: exponential_jitter(1.0, 30.0))
    crd_wait: wait_base = field(default_factory=lambda: exponential_jitter(0.5, 5.0))
    outages: OutageTracker = field(default_factory=OutageTracker)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    election_task: asyncio.Task[None] | None = None
    _handover: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ API errors and recoveries
    def api_error(self, code: str, description: str, outage: bool = False) -> None:
        """Every API error the operator sees, from any client: counted by code; the ones that mean the API
        server is not answering (OUTAGE_CODES) make an outage, with one WARNING when it starts."""
        if code == "other":
            return  # not an API error (the reconcile loop logs its own failures)
        self.metrics.api_errors.labels(code).inc()
        if code not in OUTAGE_CODES and not outage:
            return
        description = " ".join(description.split())[:300]  # the client's messages span lines
        now = self.clock()
        if self.outages.error(now, description):
            log.warning("API server error (%s); retrying with backoff until it answers again", description)
        self.health.block(API_UNAVAILABLE, description, now)

    def kopf_started(self) -> None:
        """kopf's startup handlers ran: its watches are (re)starting."""
        now = self.clock()
        self.health.unblock(STARTING, now)
        self.health.unblock(WATCH_RESTARTING, now)

    def api_ok(self, answered: bool = True) -> None:
        """The API server answered (``answered``; or the watchdog asks whether an outage has settled):
        readiness follows at once, the outage's INFO once it has settled."""
        now = self.clock()
        if answered:
            self.health.unblock(API_UNAVAILABLE, now)
        finished = self.outages.ok(now, answered)
        if finished is not None:
            outage, length = finished
            log.info(
                "API server answers again after %.1fs (%d errors, first: %s)", length, outage.errors, outage.first_error
            )

    # ------------------------------------------------------------------ CRDs
    def _crds_served(self) -> tuple[list[str], bool]:
        """(CRDs not installed, whether the installed ones are served by discovery)."""
        missing = [name for name in CRDS if not self.kube.crd_exists(name)]
        if missing:
            return missing, False
        served = self.kube.custom.get_api_resources(GROUP, VERSION)
        names = {r.name for r in served.resources or []}
        return [], {"cells", "routingrules"} <= names

    async def wait_for_crds(self) -> bool:
        """Wait until our CRDs are installed and served; False when asked to stop first. kopf discovers
        what it serves once at start (and on CRD changes): starting it before discovery lists the CRDs
        -- an API server that is itself starting -- would leave them unserved for the whole run."""
        attempt = 0
        while not self.stop.is_set():
            attempt += 1
            try:
                missing, served = await asyncio.to_thread(self._crds_served)
            except Exception as exc:
                self.api_error(error_code(exc), f"checking the CRDs: {exc}")
                missing, served = [], False
            else:
                # The API answers; whether the outage is over is for kopf's watches to show (api_ok).
                self.health.unblock(API_UNAVAILABLE, self.clock())
                if served:
                    if self.health.unblock(CRD_MISSING, self.clock()) is not None:
                        log.info("the CRDs %s are installed: starting", ", ".join(CRDS))
                    return True
            if missing:
                message = (
                    f"CRD {', '.join(missing)} is not installed; the operator waits for it and starts by itself. "
                    "Install it with: kubectl apply --server-side -f crds/"
                )
                if self.health.block(CRD_MISSING, message, self.clock()):
                    log.error(message)
            await self._pause(delay_for(self.crd_wait, attempt))
        return False

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    # ------------------------------------------------------------------ the kopf runs
    async def run_kopf_once(self, memo: kopf.Memo, liveness: str | None) -> None:
        """One kopf run, with our stop flag instead of kopf's own signal handling."""
        existing = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        tasks = await kopf.spawn_tasks(
            settings=kopf_settings(self.config),
            memo=memo,
            standalone=True,  # one replica acts through the Lease (ADR 0009), not kopf's peering
            clusterwide=not self.config.namespaces,
            namespaces=list(self.config.namespaces),
            liveness_endpoint=liveness,
            stop_flag=self.stop,
        )
        self.install_signal_handlers()  # kopf installed its own; ours set the same stop flag
        # A run that lasts is a working one, even in a cluster without any object to send events.
        tasks = [*tasks, asyncio.create_task(self._healthy_after(HEALTHY_RUN_SECONDS / 2), name="run health")]
        await kopf.run_tasks(tasks, ignored=existing)

    async def _healthy_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.api_ok()
        await asyncio.Event().wait()  # a root task of kopf's run: it must not finish before the run

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: stop kopf, and hand over at once rather than after kopf's own teardown (which
        waits up to 5 s for the tasks it did not create): a rolling update's next leader starts within a
        retry period."""
        self.stop.set()
        if self._handover is None:
            self._handover = asyncio.get_running_loop().create_task(self._hand_over(), name="hand over")

    async def hand_over(self) -> None:
        """Stop every writer, then give the Lease up; once, however often it is asked."""
        if self._handover is None or self._handover.cancelled():  # kopf may cancel it in its teardown
            self._handover = asyncio.get_running_loop().create_task(self._hand_over(), name="hand over")
        await self._handover

    async def _hand_over(self) -> None:
        if self.election_task is not None:
            self.election_task.cancel()  # it would take the Lease right back
        await self.workers.stop()  # no writer left before the Lease is given up
        if self.elector is not None:
            await self.elector.release()

    async def run(self, memo: kopf.Memo, liveness: str | None = None) -> int:
        """Run kopf until a signal; restart it after transient failures. The exit code."""
        self.install_signal_handlers()
        attempt = 0
        while not self.stop.is_set():
            if not await self.wait_for_crds():
                break
            started = self.clock()
            try:
                await self.run_kopf_once(memo, liveness)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if type(exc).__name__ == "ActivityError":  # a startup handler failed permanently
                    log.error("the operator cannot start: %s", exc.__cause__ or exc)
                    return 1
                code = error_code(exc)
                self.metrics.watch_restarts.labels(code).inc()
                if code in PERMANENT_CODES:
                    log.error(
                        "the API server refuses the operator's requests (%s: %s). This does not pass with time: "
                        "check the credentials and the RBAC rules (deploy/base/rbac.yaml, "
                        "deploy/base/managed-namespace.yaml). Exiting.",
                        code,
                        exc,
                    )
                    return 1
                self.api_error(code, f"watch ended: {type(exc).__name__}: {exc}", outage=True)
                self.health.block(WATCH_RESTARTING, f"restarting the watches after {code}", self.clock())
                attempt = 1 if self.clock() - started > HEALTHY_RUN_SECONDS else attempt + 1
                wait = delay_for(self.restart_wait, attempt)
                log.debug("kopf ended with %r; restarting its watches in %.1fs", exc, wait)
                await self._pause(wait)
                continue
            finally:
                self.install_signal_handlers()
            if not self.stop.is_set():  # kopf ended without an error and without being asked to
                log.warning("kopf's watches ended unexpectedly; restarting them")
                await self._pause(1.0)
        return 0

    async def resync(self) -> None:
        """Reconcile every namespace seen, every ``resync_seconds``: a lost event, or an output edited in
        a way no watch reports, is corrected within that bound. The leadership gate applies as always."""
        while True:
            await asyncio.sleep(self.config.resync_seconds)
            self.workers.trigger_all()

    async def watchdog(self, period: float = 5.0, crd_check_every: int = 6) -> None:
        """Log once, at ERROR, any state in which the operator has not been able to reconcile for longer
        than ``stall_after``; keep the gauges current between scrapes; and every ``crd_check_every``
        periods make sure the CRDs are still installed -- kopf stops watching a deleted CRD without a word
        and resumes when it comes back, so without this check a deleted CRD would be silent."""
        ticks = 0
        while True:
            now = self.clock()
            for reason, blocker in self.health.overdue(now):
                log.error("not reconciling for %.0fs (%s): %s", now - blocker.since, reason, blocker.message)
            probes.refresh(self.health, self.metrics, now)
            self.api_ok(answered=False)  # an outage that has settled says so, even in a quiet cluster
            ticks += 1
            if ticks % crd_check_every == 0 and STARTING not in self.health.blockers:
                await self.check_crds()
            await asyncio.sleep(period)

    async def check_crds(self) -> None:
        try:
            missing, _ = await asyncio.to_thread(self._crds_served)
        except Exception as exc:
            self.api_error(error_code(exc), f"checking the CRDs: {exc}")
            return
        if missing:
            message = (
                f"CRD {', '.join(missing)} was deleted; nothing of it is reconciled until it is installed again "
                "(kubectl apply --server-side -f crds/), then work resumes by itself"
            )
            if self.health.block(CRD_MISSING, message, self.clock()):
                log.error(message)
        elif self.health.unblock(CRD_MISSING, self.clock()) is not None:
            log.info("the CRDs %s are installed again", ", ".join(CRDS))


def identity() -> str:
    """This replica's name in the Lease: the Pod's name when set, plus a random suffix (client-go's
    convention), so a restarted process never mistakes the previous one's lease for its own."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


async def serve(config: OperatorConfig, liveness: str | None = None) -> int:
    """``cells-operator run``: build what outlives kopf, then supervise kopf until a signal."""
    from . import webhook

    api = load_api_client()
    me = identity()
    api.user_agent = f"cells-operator/{me}"  # the audit log tells replicas apart
    kube = Kube(api)
    metrics = OperatorMetrics()
    health = Health(stall_after=config.stall_seconds)
    health.block(STARTING, "connecting to the API server", time.monotonic())
    elector: LeaderElector | None = None
    gate = None
    if config.leader_elect:
        election = ElectionConfig(
            config.lease_name, config.lease_namespace, config.lease_duration, config.renew_deadline, config.retry_period
        )

        def on_change(leading: bool) -> None:
            health.leader = leading
            if leading:
                workers.trigger_all()

        elector = LeaderElector(KubeLeaseStore(api, election.lease_namespace, election.lease_name), me, election,
                                on_change=on_change)  # fmt: skip
        health.leader = False
        kube.fence = elector.may_write
        gate = elector.leading.wait
    supervisor_ref: list[Supervisor] = []
    reconciler = NamespaceReconciler(kube, config, metrics)
    workers = NamespaceWorkers(
        reconciler,
        debounce=config.debounce_seconds,
        max_delay=config.debounce_max_seconds,
        gate=gate,
        on_error=lambda exc: supervisor_ref[0].api_error(error_code(exc), f"reconcile: {exc}"),
        on_success=lambda: supervisor_ref[0].api_ok(),
        expected=lambda exc: error_code(exc) in OUTAGE_CODES,
    )
    reconciler.burst_age = workers.burst_age
    supervisor = Supervisor(config, kube, metrics, health, workers, elector)
    supervisor_ref.append(supervisor)
    retry_log = KopfRetryLog(supervisor.api_error, lambda: logging.getLogger().isEnabledFor(logging.DEBUG))
    for handler in logging.getLogger().handlers:  # kopf.configure installed them
        handler.addFilter(retry_log)
    memo = kopf.Memo(config=config, kube=kube, metrics=metrics, workers=workers, supervisor=supervisor)
    runner = await probes.start(health, metrics, config.metrics_port) if config.metrics_port else None
    background: list[asyncio.Task[Any]] = [
        asyncio.create_task(supervisor.watchdog(), name="watchdog"),
        asyncio.create_task(supervisor.resync(), name="resync"),
    ]
    if elector is not None:
        supervisor.election_task = asyncio.create_task(elector.run(), name="leader election")
        background.append(supervisor.election_task)
    try:
        return await supervisor.run(memo, liveness)
    finally:
        await supervisor.hand_over()
        for task in background:
            task.cancel()
        if config.webhook_listen:
            await webhook.stop(memo, log)
        if runner is not None:
            await runner.cleanup()
