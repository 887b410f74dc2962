"""Leader election on a Lease: client-go's algorithm, against an in-memory Lease with optimistic
concurrency and an injected clock (no sleeps)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from cells_operator.election import LeaderElector
from cells_operator.leader import (
    ElectionConfig,
    LeaseRecord,
    Observation,
    Write,
    release,
    still_leader,
    try_acquire_or_renew,
)

CONFIG = ElectionConfig(lease_duration=15.0, renew_deadline=10.0, retry_period=2.0)
WALL = datetime(2026, 11, 29, tzinfo=UTC)


def test_config_refuses_timings_that_allow_two_leaders():
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        ElectionConfig(lease_duration=10.0, renew_deadline=10.0, retry_period=2.0)


def test_a_missing_lease_is_created_by_the_first_candidate():
    write = try_acquire_or_renew("a", None, None, Observation(), 0.0, WALL, False, CONFIG)
    assert write == Write(LeaseRecord("a", 15, WALL, WALL, 0), None)


def test_another_holders_lease_is_respected_until_unchanged_for_a_lease_duration():
    held = LeaseRecord("b", 15, WALL, WALL, 3)
    observed = Observation()
    assert try_acquire_or_renew("a", held, "7", observed, 100.0, WALL, False, CONFIG) is None
    assert try_acquire_or_renew("a", held, "7", observed, 114.9, WALL, False, CONFIG) is None
    # the holder renewed: the clock starts again from when *we* saw the change
    renewed = LeaseRecord("b", 15, WALL, datetime(2026, 11, 29, 0, 0, 5, tzinfo=UTC), 3)
    assert try_acquire_or_renew("a", renewed, "8", observed, 114.9, WALL, False, CONFIG) is None
    assert try_acquire_or_renew("a", renewed, "8", observed, 129.8, WALL, False, CONFIG) is None
    write = try_acquire_or_renew("a", renewed, "8", observed, 130.0, WALL, False, CONFIG)
    assert write is not None and write.record.holder == "a" and write.record.transitions == 4
    assert write.resource_version == "8"  # an update at what we read: a racing candidate gets a conflict


def test_the_leader_renews_keeping_acquire_time_and_transitions():
    mine = LeaseRecord("a", 15, WALL, WALL, 2)
    later = datetime(2026, 11, 29, 0, 1, tzinfo=UTC)
    write = try_acquire_or_renew("a", mine, "9", Observation(), 0.0, later, True, CONFIG)
    assert write == Write(LeaseRecord("a", 15, WALL, later, 2), "9")


def test_a_released_lease_is_taken_at_once():
    released = release("b", LeaseRecord("b", 15, WALL, WALL, 1), WALL)
    assert released == LeaseRecord("", 1, WALL, WALL, 1)
    write = try_acquire_or_renew("a", released, "5", Observation(), 0.0, WALL, False, CONFIG)
    assert write is not None and write.record.holder == "a" and write.record.transitions == 2
    assert release("a", LeaseRecord("b", 15, WALL, WALL, 1), WALL) is None  # not ours: nothing to release


def test_a_leader_stops_acting_at_the_renew_deadline():
    assert still_leader(100.0, 109.9, CONFIG)
    assert not still_leader(100.0, 110.0, CONFIG)
    assert not still_leader(None, 0.0, CONFIG)


@dataclass
class MemoryLease:
    """A Lease with resourceVersion semantics; ``down`` simulates an unreachable API server."""

    record: LeaseRecord | None = None
    version: int = 0
    down: bool = False

    def get(self):
        if self.down:
            raise ConnectionRefusedError("API server down")
        return self.record, (str(self.version) if self.record else None)

    def put(self, write: Write) -> bool:
        if self.down:
            raise ConnectionRefusedError("API server down")
        current = str(self.version) if self.record else None
        if write.resource_version != current:
            return False
        self.record, self.version = write.record, self.version + 1
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_two_electors_one_leader_failover_after_silence_and_fence():
    async def scenario():
        lease, clock = MemoryLease(), Clock()
        changes = []
        a = LeaderElector(lease, "a", CONFIG, clock, on_change=lambda v: changes.append(("a", v)))
        b = LeaderElector(lease, "b", CONFIG, clock, on_change=lambda v: changes.append(("b", v)))
        await a.step()
        await b.step()
        assert a.may_write() and not b.may_write()
        for _ in range(10):  # a renews every retry period; b keeps seeing changes and waits
            clock.now += 2.0
            await a.step()
            await b.step()
        assert a.may_write() and not b.may_write() and lease.record.holder == "a"
        # a dies silently: b takes over only once the record has not changed for a lease duration
        died = clock.now
        while not b.may_write():
            clock.now += 2.0
            await b.step()
        assert clock.now - died >= CONFIG.lease_duration
        assert lease.record.holder == "b" and lease.record.transitions == 1
        assert not a.may_write()  # a's fence closed at its renew deadline, long before b could start
        assert changes == [("a", True), ("b", True)]

    asyncio.run(scenario())


def test_a_leader_that_cannot_renew_stops_before_anyone_else_may_start():
    async def scenario():
        lease, clock = MemoryLease(), Clock()
        a = LeaderElector(lease, "a", CONFIG, clock)
        await a.step()
        lease.down = True
        clock.now += 9.9
        await a.step()
        assert a.may_write()  # within the renew deadline
        clock.now += 0.2
        await a.step()
        assert not a.may_write() and not a.leading.is_set()
        lease.down = False
        clock.now += 2.0
        await a.step()  # the Lease still names it: it renews and leads again
        assert a.may_write() and lease.record.holder == "a"

    asyncio.run(scenario())


def test_release_hands_over_at_once():
    async def scenario():
        lease, clock = MemoryLease(), Clock()
        a = LeaderElector(lease, "a", CONFIG, clock)
        b = LeaderElector(lease, "b", CONFIG, clock)
        await a.step()
        await b.step()
        await a.release()
        assert lease.record.holder == "" and not a.may_write()
        clock.now += 2.0
        await b.step()
        assert b.may_write()

    asyncio.run(scenario())
