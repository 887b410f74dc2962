"""Whether the operator can do its work right now, and since when it cannot.

"Never silent": a state in which the operator does not reconcile -- its CRDs not installed, the API
server unreachable, its watches restarting -- is recorded here with a reason, and shows in three places:
``/readyz`` answers 503 with the reasons, ``cells_operator_reconcile_blocked{reason}`` is 1, and a
blocked state that outlasts ``stall_after`` is logged at ERROR once (the watchdog in
:mod:`cells_operator.supervisor`). A standby replica waiting for the Lease is *not* blocked: it is doing
exactly what it should, and says so in ``/readyz`` and ``cells_operator_leader``.

Pure: the clock is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Reasons, CamelCase like the status reasons.
CRD_MISSING = "CRDNotInstalled"
API_UNAVAILABLE = "APIServerUnavailable"
WATCH_RESTARTING = "WatchRestarting"
STARTING = "Starting"
REASONS = (STARTING, CRD_MISSING, API_UNAVAILABLE, WATCH_RESTARTING)


@dataclass
class Blocker:
    since: float
    message: str
    reported: bool = False  # the ERROR for outlasting the bound was logged


@dataclass
class Health:
    stall_after: float = 120.0
    blockers: dict[str, Blocker] = field(default_factory=dict)
    leader: bool | None = None  # None: no leader election (always acts)

    def block(self, reason: str, message: str, now: float) -> bool:
        """Record ``reason``; True when it is new (the caller logs it)."""
        if reason in self.blockers:
            self.blockers[reason].message = message
            return False
        self.blockers[reason] = Blocker(now, message)
        return True

    def unblock(self, reason: str, now: float) -> float | None:
        """Clear ``reason``; how long it lasted, or None when it was not set."""
        blocker = self.blockers.pop(reason, None)
        return None if blocker is None else now - blocker.since

    @property
    def ready(self) -> bool:
        return not self.blockers

    def blocked_for(self, now: float) -> float:
        """Seconds since the oldest current blocker began (0 when the operator can work)."""
        return max((now - b.since for b in self.blockers.values()), default=0.0)

    def overdue(self, now: float) -> list[tuple[str, Blocker]]:
        """Blockers that outlasted ``stall_after`` and were not reported yet; marks them reported."""
        due = [(r, b) for r, b in self.blockers.items() if not b.reported and now - b.since >= self.stall_after]
        for _, b in due:
            b.reported = True
        return due

    def describe(self, now: float) -> str:
        """The body of ``/readyz``: one line per blocker, or the role when all is well."""
        if self.blockers:
            return "\n".join(
                f"not ready: {r} for {now - b.since:.0f}s: {b.message}" for r, b in sorted(self.blockers.items())
            )
        role = {None: "reconciling", True: "leader: reconciling", False: "standby: waiting for the Lease"}
        return "ok: " + role[self.leader]
