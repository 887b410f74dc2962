"""One reconcile loop per namespace: debounced, serialized, retried with backoff, gated by leadership.

A namespace is the unit of reconciliation because its outputs are namespace-wide (one records
ConfigMap, one router ConfigMap): a burst of 300 events must become a handful of writes, not 300.
Watch events only *mark* a namespace dirty; its loop waits for a short quiet period, then
reconciles the whole namespace from a fresh read of the API (level-based, like controller-runtime),
so a lost or coalesced event can never leave an object unreconciled.

With leader election, a standby replica keeps watching and marking namespaces dirty, but its loops wait
at the gate; when it becomes the leader every namespace it has seen is reconciled.

The loops survive kopf's restarts (:mod:`cells_operator.supervisor`): kopf cancels the tasks it did not
create when it stops, so a loop found finished is simply started again by the next trigger, and a
per-namespace lock keeps a reconcile still running in its thread from overlapping the new loop's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable

from tenacity.wait import wait_base

from .backoff import delay_for, exponential_jitter
from .leader import NotLeader

log = logging.getLogger(__name__)


class NamespaceWorkers:
    def __init__(
        self,
        reconcile: Callable[[str], bool],
        debounce: float = 0.3,
        max_backoff: float = 30.0,
        max_delay: float = 2.0,
        gate: Callable[[], Awaitable[object]] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_success: Callable[[], None] | None = None,
        expected: Callable[[BaseException], bool] = lambda exc: False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] | None = None,
        wait: wait_base | None = None,
        offload: Callable[..., Awaitable[bool]] = asyncio.to_thread,
    ):
        self._reconcile = reconcile
        self._debounce = debounce
        self._max_delay = max_delay
        self._gate = gate
        self._on_error = on_error or (lambda exc: None)
        self._on_success = on_success or (lambda: None)
        self._expected = expected
        self._sleep = sleep
        self._clock = clock
        # tenacity's strategy for the wait before each retry (tests pass one without jitter)
        self._wait = wait or exponential_jitter(0.5, max_backoff)
        # How a (blocking) reconcile leaves the event loop: a thread in production. Unit tests on fake
        # time run it inline: while a thread runs, looptime steps its clock in real time, so intervals
        # measured around a thread depend on the machine's load (a test failed once that way).
        self._offload = offload
        self._dirty: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, threading.Lock] = {}
        # Per namespace: when its current burst began (the first event after a pass that started in a
        # quiet moment), and -- while a pass forced by the bound runs -- how long the burst has lasted.
        self._burst_began: dict[str, float] = {}
        self._burst_age: dict[str, float] = {}

    @property
    def namespaces(self) -> list[str]:
        return sorted(self._tasks)

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def burst_age(self, namespace: str) -> float | None:
        """How long events have been arriving for ``namespace`` without a quiet moment, when its running
        pass was started by the bound (``max_delay``) while they still arrived; None when that pass began
        after ``debounce`` seconds without events (the burst, if any, is over). Read by the reconcile
        running in a thread: it may hold back what a burst still in progress is about to change."""
        return self._burst_age.get(namespace)

    def trigger(self, namespace: str) -> None:
        """Mark ``namespace`` for reconciliation; starts its loop on first use. Call from the event loop."""
        task = self._tasks.get(namespace)
        if task is None or task.done():
            self._dirty[namespace] = asyncio.Event()
            self._tasks[namespace] = asyncio.get_running_loop().create_task(
                self._loop(namespace), name=f"reconcile:{namespace}"
            )
        self._dirty[namespace].set()

    def trigger_all(self) -> None:
        """Mark every namespace seen so far (a new leader catches up on all of them)."""
        for namespace in list(self._tasks):
            self.trigger(namespace)

    def _locked_reconcile(self, namespace: str) -> bool:
        with self._locks.setdefault(namespace, threading.Lock()):
            return self._reconcile(namespace)

    async def _loop(self, namespace: str) -> None:
        dirty = self._dirty[namespace]
        failures = 0
        while True:
            await dirty.wait()
            began = self._burst_began.setdefault(namespace, self._now())
            if await self._quiet(dirty):
                self._burst_age[namespace] = self._now() - began
            else:
                self._burst_age.pop(namespace, None)
                self._burst_began.pop(namespace, None)
            if self._gate is not None:
                await self._gate()
            try:
                active = await self._offload(self._locked_reconcile, namespace)
                failures = 0
                self._on_success()
                if namespace in self._burst_age:
                    # A pass in a burst may hold back statuses (ADR 0015): another pass follows, once
                    # quiet, even if the burst's last event came before this pass began.
                    dirty.set()
                if not active and not dirty.is_set():
                    # Nothing of ours left here (e.g. the namespace was deleted): end its loop.
                    # The next watch event starts a new one.
                    if self._tasks.get(namespace) is asyncio.current_task():
                        del self._tasks[namespace], self._dirty[namespace]
                        self._burst_began.pop(namespace, None)
                        self._burst_age.pop(namespace, None)
                    return
            except asyncio.CancelledError:
                raise
            except NotLeader:
                dirty.set()  # the gate holds the loop until this replica leads again
            except Exception as exc:
                failures += 1
                wait = delay_for(self._wait, failures)
                self._on_error(exc)
                if self._expected(exc):  # the API server is out: said once per outage, not per retry
                    log.debug("reconcile of namespace %s failed (attempt %d): %s", namespace, failures, exc)
                else:
                    log.exception(
                        "reconcile of namespace %s failed (attempt %d); retrying in %.1fs", namespace, failures, wait
                    )
                await self._sleep(wait)
                dirty.set()

    async def _quiet(self, dirty: asyncio.Event) -> bool:
        """Wait until no event came for ``debounce`` seconds, but never longer than ``max_delay``; True
        when the bound ended the wait while events still arrived (a burst in progress).

        A ``kubectl apply`` of 1,000 objects is a stream of events lasting seconds. The quiet period
        coalesces what arrives together into one pass; the bound (2 s by default, ADR 0004) makes the
        operator keep pace with a long burst: a pass every ``max_delay`` publishes what has arrived so far
        and writes the outcomes already known, instead of all of them in one batch after the burst. A
        pass in a burst writes no status that the burst's rest is likely to change (ADR 0015)."""
        deadline = self._now() + self._max_delay
        while True:
            dirty.clear()
            await self._sleep(min(self._debounce, max(0.0, deadline - self._now())))
            if not dirty.is_set():
                return False
            if self._now() >= deadline:
                dirty.clear()
                return True

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._dirty.clear()
        self._burst_began.clear()
        self._burst_age.clear()
        # A reconcile may still be running in its thread (cancelling the task does not stop it): wait for
        # it, so that no write happens after stop() -- the Lease is released right after.
        for lock in list(self._locks.values()):
            await asyncio.to_thread(_wait_for, lock)


def _wait_for(lock: threading.Lock) -> None:
    """Block until whoever holds ``lock`` releases it."""
    with lock:
        pass
