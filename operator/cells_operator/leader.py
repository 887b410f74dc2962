"""Leader election on a ``coordination.k8s.io/v1`` Lease: the decisions, without I/O.

The algorithm is client-go's (``tools/leaderelection``), which every controller-runtime operator uses:

- a candidate takes the Lease when nobody holds it, or when the record has not *changed* for a whole
  lease duration as measured on the candidate's own monotonic clock. Comparing the record's timestamps
  with our wall clock would make correctness depend on clock skew between nodes; observing change does
  not;
- the leader renews every retry period and stops acting when it could not renew for the renew deadline
  (shorter than the lease duration, so it stops before anybody else may start);
- a leader that shuts down cleanly releases the Lease (empty holder, duration 1 s) so the next one takes
  over at once instead of after a lease duration.

Every write is an update at the read ``resourceVersion``: two candidates racing for an expired Lease
cannot both win.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime


class NotLeader(Exception):
    """A write was attempted without holding the Lease (raised by the API client's fence)."""


@dataclass(frozen=True)
class ElectionConfig:
    lease_name: str = "cells-operator"
    lease_namespace: str = "cells-system"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not (0 < self.retry_period < self.renew_deadline < self.lease_duration):
            raise ValueError(
                "leader election needs retry period < renew deadline < lease duration, got "
                f"{self.retry_period}/{self.renew_deadline}/{self.lease_duration}"
            )


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease's spec the election reads and writes."""

    holder: str = ""
    lease_duration_seconds: int = 15
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0

    def same_as(self, other: LeaseRecord | None) -> bool:
        return other is not None and self == other


@dataclass(frozen=True)
class Write:
    """Create (``resource_version`` None) or update the Lease to ``record``."""

    record: LeaseRecord
    resource_version: str | None


@dataclass
class Observation:
    """What the candidate last saw of the Lease and when (its own monotonic clock)."""

    record: LeaseRecord | None = None
    at: float = 0.0

    def see(self, record: LeaseRecord | None, now: float) -> None:
        if record is None or not record.same_as(self.record):
            self.record, self.at = record, now


def try_acquire_or_renew(
    me: str,
    current: LeaseRecord | None,
    resource_version: str | None,
    observed: Observation,
    now: float,
    wall_now: datetime,
    is_leader: bool,
    config: ElectionConfig,
) -> Write | None:
    """The write that acquires or renews the Lease for ``me``, or None when another holder's lease is
    still valid. ``observed`` is updated with ``current`` first."""
    observed.see(current, now)
    duration = max(1, round(config.lease_duration))
    if current is None:
        return Write(LeaseRecord(me, duration, wall_now, wall_now, 0), None)
    held_by_other = bool(current.holder) and current.holder != me
    if held_by_other and now < observed.at + config.lease_duration:
        return None
    if current.holder == me and is_leader:
        record = replace(current, renew_time=wall_now, lease_duration_seconds=duration)
    else:
        record = LeaseRecord(me, duration, wall_now, wall_now, current.transitions + (1 if current.holder != me else 0))
    return Write(record, resource_version)


def release(me: str, current: LeaseRecord | None, wall_now: datetime) -> LeaseRecord | None:
    """The record that gives the Lease up, or None when ``me`` does not hold it (nothing to release)."""
    if current is None or current.holder != me:
        return None
    return replace(current, holder="", lease_duration_seconds=1, renew_time=wall_now)


def still_leader(last_renewed: float | None, now: float, config: ElectionConfig) -> bool:
    """Whether a leader that last renewed at ``last_renewed`` may still act: only within the renew
    deadline, which ends before any other candidate's lease duration can."""
    return last_renewed is not None and now - last_renewed < config.renew_deadline
