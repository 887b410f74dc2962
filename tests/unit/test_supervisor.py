"""The supervisor's decisions, against an in-memory fake of the API and a fake kopf run (no cluster, fake
time): which failures restart kopf in the same process, which end it, what is said and how often."""

from __future__ import annotations

import asyncio
import itertools
import logging
from types import SimpleNamespace

import looptime
from prometheus_client import generate_latest
from tenacity import wait_exponential

from cells_operator.config import OperatorConfig
from cells_operator.health import API_UNAVAILABLE, CRD_MISSING, Health
from cells_operator.metrics import OperatorMetrics
from cells_operator.supervisor import Supervisor
from cells_operator.workers import NamespaceWorkers
from tests.support.operator import metric_value


def run(coro):
    with asyncio.Runner(loop_factory=lambda: looptime.new_event_loop(start=0, _enabled=True)) as runner:
        return runner.run(coro)


class FakeKube:
    """crd_exists and discovery, as the supervisor reads them."""

    def __init__(self, installed=True, served=True):
        self.installed, self.served = installed, served
        self.custom = SimpleNamespace(get_api_resources=self._resources)

    def crd_exists(self, name):
        return self.installed

    def _resources(self, group, version):
        names = ["cells", "routingrules"] if self.served else []
        return SimpleNamespace(resources=[SimpleNamespace(name=n) for n in names])


APINotFoundError = type("APINotFoundError", (Exception,), {})
APIForbiddenError = type("APIForbiddenError", (Exception,), {})


class ScriptedSupervisor(Supervisor):
    """kopf's runs replaced by a script: each entry is an exception to end the run with, or None for
    "runs until stopped"."""

    script: list

    async def run_kopf_once(self, memo, liveness):
        self.runs = getattr(self, "runs", 0) + 1
        step = self.script.pop(0) if self.script else None
        if step is None:
            self.kopf_started()
            await asyncio.sleep(1)
            self.api_ok()  # the first watch event
            await self.stop.wait()
            return
        raise step


def supervisor(kube=None, script=()):
    s = ScriptedSupervisor(
        OperatorConfig(),
        kube or FakeKube(),
        OperatorMetrics(),
        Health(stall_after=120),
        NamespaceWorkers(lambda ns: True),
        clock=lambda: asyncio.get_running_loop().time(),
    )
    s.script = list(script)
    return s


def test_transient_errors_restart_kopf_in_the_same_process_with_one_warning(caplog):
    caplog.set_level(logging.INFO, logger="cells_operator.supervisor")

    async def scenario():
        s = supervisor(script=[APINotFoundError("404 page not found"), ConnectionResetError(), TimeoutError()])
        task = asyncio.create_task(s.run(memo=None))
        watchdog = asyncio.create_task(s.watchdog(period=5))
        await asyncio.sleep(120)
        watchdog.cancel()
        assert s.runs == 4 and not task.done() and s.health.ready
        s.stop.set()
        assert await task == 0
        return s

    s = run(scenario())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "watch ended: APINotFoundError" in warnings[0].getMessage()
    (recovered,) = [r.getMessage() for r in caplog.records if "answers again after" in r.getMessage()]
    assert "(3 errors, first: watch ended: APINotFoundError" in recovered
    metrics = generate_latest(s.metrics.registry).decode()
    assert metric_value(metrics, "cells_operator_watch_restarts_total", code="404") == 1
    assert metric_value(metrics, "cells_operator_watch_restarts_total", code="connection") == 1
    assert metric_value(metrics, "cells_operator_watch_restarts_total", code="timeout") == 1


def test_backoff_between_restarts_grows():
    async def scenario():
        loop = asyncio.get_running_loop()
        starts = []
        s = supervisor(script=[ConnectionResetError()] * 5)
        s.restart_wait = wait_exponential(multiplier=1.0, max=30.0)  # no jitter: exact delays
        original = s.run_kopf_once

        async def timed(memo, liveness):
            starts.append(loop.time())
            return await original(memo, liveness)

        s.run_kopf_once = timed
        task = asyncio.create_task(s.run(memo=None))
        await asyncio.sleep(300)
        s.stop.set()
        await task
        return starts

    starts = run(scenario())
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(starts)]
    assert gaps == [1.0, 2.0, 4.0, 8.0, 16.0]  # exponential, capped at 30 s


def test_forbidden_ends_the_process_with_a_clear_error(caplog):
    caplog.set_level(logging.ERROR, logger="cells_operator.supervisor")
    code = run(supervisor(script=[APIForbiddenError("forbidden: cannot watch cells")]).run(memo=None))
    assert code == 1
    (record,) = caplog.records
    assert "403" in record.getMessage() and "RBAC" in record.getMessage()


def test_missing_crds_are_an_error_once_then_work_starts_by_itself(caplog):
    caplog.set_level(logging.INFO, logger="cells_operator.supervisor")
    kube = FakeKube(installed=False)

    async def scenario():
        s = supervisor(kube)
        task = asyncio.create_task(s.run(memo=None))
        await asyncio.sleep(60)
        assert getattr(s, "runs", 0) == 0 and CRD_MISSING in s.health.blockers and not s.health.ready
        kube.installed = True
        await asyncio.sleep(10)
        assert s.runs == 1 and s.health.ready
        s.stop.set()
        return await task

    assert run(scenario()) == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "CRD cells.cells.dev, routingrules.cells.dev is not installed; the operator waits for it and starts by "
        "itself. Install it with: kubectl apply --server-side -f crds/"
    ]
    assert any("are installed: starting" in r.getMessage() for r in caplog.records)


def test_installed_but_not_yet_served_crds_are_waited_for_without_an_error(caplog):
    caplog.set_level(logging.ERROR, logger="cells_operator.supervisor")
    kube = FakeKube(served=False)  # an API server that is itself starting

    async def scenario():
        s = supervisor(kube)
        task = asyncio.create_task(s.run(memo=None))
        await asyncio.sleep(20)
        assert getattr(s, "runs", 0) == 0
        kube.served = True
        await asyncio.sleep(10)
        s.stop.set()
        await task
        return s.runs

    assert run(scenario()) == 1
    assert caplog.records == []


def test_the_watchdog_reports_a_long_block_once():
    async def scenario():
        s = supervisor()
        s.health.block(API_UNAVAILABLE, "connection refused", asyncio.get_running_loop().time())
        watchdog = asyncio.create_task(s.watchdog(period=5))
        await asyncio.sleep(600)
        watchdog.cancel()
        return s

    with _capture() as records:
        s = run(scenario())
    stalls = [r for r in records if "not reconciling for" in r.getMessage()]
    assert len(stalls) == 1 and stalls[0].levelno == logging.ERROR
    metrics = generate_latest(s.metrics.registry).decode()
    assert metric_value(metrics, "cells_operator_reconcile_blocked", reason="APIServerUnavailable") == 1
    assert metric_value(metrics, "cells_operator_reconcile_blocked_seconds") >= 595
    assert metric_value(metrics, "cells_operator_ready") == 0


class _capture:
    def __enter__(self):
        self.records = []
        self.handler = logging.Handler()
        self.handler.emit = self.records.append
        logging.getLogger("cells_operator.supervisor").addHandler(self.handler)
        return self.records

    def __exit__(self, *exc):
        logging.getLogger("cells_operator.supervisor").removeHandler(self.handler)


def test_a_crd_deleted_while_running_is_an_error_and_recovers():
    kube = FakeKube()

    async def scenario():
        s = supervisor(kube)
        task = asyncio.create_task(s.run(memo=None))
        watchdog = asyncio.create_task(s.watchdog(period=5, crd_check_every=6))
        await asyncio.sleep(40)
        assert s.health.ready
        kube.installed = False  # someone deleted the CRD; kopf stops watching it without a word
        await asyncio.sleep(40)
        assert CRD_MISSING in s.health.blockers and not s.health.ready
        kube.installed = True
        await asyncio.sleep(40)
        assert s.health.ready
        watchdog.cancel()
        s.stop.set()
        await task

    with _capture() as records:
        run(scenario())
    errors = [r.getMessage() for r in records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "was deleted" in errors[0] and "kubectl apply --server-side -f crds/" in errors[0]
    assert any("installed again" in r.getMessage() for r in records)


def test_sigterm_hands_over_at_once_writers_stopped_then_the_lease_released():
    from cells_operator.election import LeaderElector
    from cells_operator.leader import ElectionConfig
    from tests.unit.test_leader_election import MemoryLease

    async def scenario():
        lease = MemoryLease()
        s = supervisor()
        clock = asyncio.get_running_loop().time
        s.elector = LeaderElector(lease, "me", ElectionConfig(), clock)
        s.election_task = asyncio.create_task(s.elector.run())
        task = asyncio.create_task(s.run(memo=None))
        await asyncio.sleep(10)
        assert lease.record.holder == "me" and s.elector.may_write()
        s.request_stop()  # what SIGTERM does
        assert await task == 0
        await s.hand_over()  # what serve() does afterwards: nothing more to do
        return lease, s

    lease, s = run(scenario())
    assert lease.record.holder == "" and lease.record.lease_duration_seconds == 1
    assert s.election_task.cancelled() and not s.elector.may_write()
