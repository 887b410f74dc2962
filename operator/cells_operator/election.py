"""The leader-election loop: reads and writes the Lease, and tells the rest of the operator whether it
may act. The decisions are in :mod:`cells_operator.leader`; this module only does the I/O and keeps time.

Who may write is answered by :meth:`LeaderElector.may_write`, which the API client checks before every
write (a fence): a leader that could not renew for the renew deadline stops writing on its own, even in
the middle of a reconcile, before any other candidate can take the Lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from .leader import ElectionConfig, Observation, Write, release, still_leader, try_acquire_or_renew
from .lease_store import LeaseStore

log = logging.getLogger(__name__)


class LeaderElector:
    def __init__(
        self,
        store: LeaseStore,
        identity: str,
        config: ElectionConfig,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ):
        self.store = store
        self.identity = identity
        self.config = config
        self.clock = clock
        self.on_change = on_change or (lambda leading: None)
        self.observed = Observation()
        self.last_renewed: float | None = None
        self.leading = asyncio.Event()
        self._leading = False

    def may_write(self) -> bool:
        return self._leading and still_leader(self.last_renewed, self.clock(), self.config)

    @property
    def lease(self) -> str:
        return f"{self.config.lease_namespace}/{self.config.lease_name}"

    def _set_leading(self, leading: bool, why: str = "") -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            self.leading.set()
            log.info("became the leader (Lease %s, identity %s)", self.lease, self.identity)
        else:
            self.leading.clear()
            log.warning("stopped leading (Lease %s): %s", self.lease, why)
        self.on_change(leading)

    async def step(self) -> None:
        """One try to acquire or renew (client-go's ``tryAcquireOrRenew``)."""
        now = self.clock()
        try:
            current, version = await asyncio.to_thread(self.store.get)
            write = try_acquire_or_renew(
                self.identity, current, version, self.observed, now, datetime.now(UTC), self._leading, self.config
            )
            if write is not None and await asyncio.to_thread(self.store.put, write):
                self.observed.see(write.record, now)
                self.last_renewed = now
                self._set_leading(True)
                return
            if write is None and self._leading:
                self._set_leading(False, f"the Lease is held by {current.holder if current else 'nobody'}")
                return
        except Exception as exc:  # an API outage: keep trying; the deadline below decides
            log.debug("leader election: %s", exc)
        if self._leading and not still_leader(self.last_renewed, self.clock(), self.config):
            self._set_leading(
                False, f"not renewed within {self.config.renew_deadline:.0f}s; waiting to be elected again"
            )

    async def run(self) -> None:
        log.info("leader election on Lease %s as %s", self.lease, self.identity)
        while True:
            await self.step()
            await asyncio.sleep(self.config.retry_period)

    async def release(self) -> None:
        """Give the Lease up (on SIGTERM) so the next replica takes over without waiting. The caller has
        stopped every writer first."""
        self._set_leading(False, "shutting down")
        try:
            current, version = await asyncio.to_thread(self.store.get)
            record = release(self.identity, current, datetime.now(UTC))
            if record is not None and await asyncio.to_thread(self.store.put, Write(record, version)):
                log.info("released the Lease %s", self.lease)
        except Exception as exc:
            log.warning("could not release the Lease %s: %s", self.lease, exc)
