"""One reconcile loop per namespace: debounced, serialized, retried with backoff.

A namespace is the unit of reconciliation because its outputs are namespace-wide (one records
ConfigMap, one router ConfigMap): a burst of 300 events must become a handful of writes, not 300.
Watch events only *mark* a namespace dirty; its loop waits for a short quiet period, then
reconciles the whole namespace from a fresh read of the API (level-based, like controller-runtime),
so a lost or coalesced event can never leave an object unreconciled. Periodic resync comes from kopf's
watch re-listing, which triggers every namespace and pauses under peering; a timer of our own would not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class NamespaceWorkers:
    def __init__(
        self,
        reconcile: Callable[[str], bool],
        debounce: float = 0.3,
        max_backoff: float = 30.0,
        max_delay: float = 10.0,
    ):
        self._reconcile = reconcile
        self._debounce = debounce
        self._max_backoff = max_backoff
        self._max_delay = max_delay
        self._dirty: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task] = {}

    @property
    def namespaces(self) -> list[str]:
        return sorted(self._tasks)

    def trigger(self, namespace: str) -> None:
        """Mark ``namespace`` for reconciliation; starts its loop on first use. Call from the event loop."""
        if namespace not in self._tasks:
            self._dirty[namespace] = asyncio.Event()
            self._tasks[namespace] = asyncio.get_running_loop().create_task(
                self._loop(namespace), name=f"reconcile:{namespace}"
            )
        self._dirty[namespace].set()

    async def _loop(self, namespace: str) -> None:
        dirty = self._dirty[namespace]
        failures = 0
        while True:
            await dirty.wait()
            await self._quiet(dirty)
            try:
                active = await asyncio.to_thread(self._reconcile, namespace)
                failures = 0
                if not active and not dirty.is_set():
                    # Nothing of ours left here (e.g. the namespace was deleted): end its loop.
                    # The next watch event starts a new one.
                    del self._tasks[namespace], self._dirty[namespace]
                    return
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                delay = min(self._max_backoff, 0.5 * 2 ** min(failures, 10))
                log.exception(
                    "reconcile of namespace %s failed (attempt %d); retrying in %.1fs", namespace, failures, delay
                )
                await asyncio.sleep(delay)
                dirty.set()

    async def _quiet(self, dirty: asyncio.Event) -> None:
        """Wait until no event came for ``debounce`` seconds, but never longer than ``max_delay``.

        A ``kubectl apply`` of 1,000 objects is a stream of events lasting seconds; reconciling in the
        middle of it would rewrite the status of every rule seen so far (their ruleset's hash changed)
        on every pass. Waiting for the stream to end makes it one pass; the bound keeps a steady trickle
        of changes from postponing work forever."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_delay
        while True:
            dirty.clear()
            await asyncio.sleep(min(self._debounce, max(0.0, deadline - loop.time())))
            if not dirty.is_set() or loop.time() >= deadline:
                break
        dirty.clear()

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._dirty.clear()
