"""Status conditions the kstatus way, so ``kubectl wait``, Argo CD and Flux read the truth.

kstatus reads ``status.observedGeneration`` first (a stale status means *in progress*), then the
abnormal-true conditions ``Reconciling`` and ``Stalled``, then ``Ready``. kopf writes none of this,
so the operator does. ``lastTransitionTime`` only moves when a condition's ``status`` flips, which
is what makes "Ready since ..." meaningful in ``kubectl describe``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str

    def as_dict(self, observed_generation: int, transition: str) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": "True" if self.status else "False",
            "reason": self.reason,
            "message": self.message,
            "observedGeneration": observed_generation,
            "lastTransitionTime": transition,
        }


def ready(reason: str, message: str) -> list[Condition]:
    """Converged: Ready=True, nothing in progress, nothing stuck."""
    return [
        Condition(READY, True, reason, message),
        Condition(RECONCILING, False, reason, message),
        Condition(STALLED, False, reason, message),
    ]


def stalled(reason: str, message: str) -> list[Condition]:
    """Cannot make progress without a change from a person: Stalled=True, Ready=False."""
    return [
        Condition(READY, False, reason, message),
        Condition(RECONCILING, False, reason, message),
        Condition(STALLED, True, reason, message),
    ]


def reconciling(reason: str, message: str) -> list[Condition]:
    """Work under way (or waiting on something that will resolve by itself): Reconciling=True."""
    return [
        Condition(READY, False, reason, message),
        Condition(RECONCILING, True, reason, message),
        Condition(STALLED, False, reason, message),
    ]


def merge_conditions(
    previous: Sequence[Mapping[str, Any]] | None, desired: Sequence[Condition], generation: int, now: str | None = None
) -> list[dict[str, Any]]:
    """Desired conditions as dicts, keeping each ``lastTransitionTime`` unless its status flipped."""
    before = {c.get("type"): c for c in previous or () if isinstance(c, Mapping)}
    stamp = now or now_rfc3339()
    out = []
    for cond in desired:
        old = before.get(cond.type)
        status = "True" if cond.status else "False"
        kept = old.get("lastTransitionTime") if old is not None and old.get("status") == status else None
        out.append(cond.as_dict(generation, kept or stamp))
    return out


def condition(status: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    """Find one condition in a ``status`` mapping."""
    cond: Mapping[str, Any]  # each entry of status.conditions is an object (the CRDs' schema)
    for cond in (status or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return cond
    return None


def status_differs(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether writing ``desired`` would change anything.

    ``desired`` comes from :func:`merge_conditions`, which keeps the ``lastTransitionTime`` of every
    condition whose status did not flip, so an unchanged condition compares equal and costs no write."""
    current = dict(current or {})
    return any(current.get(k) != v for k, v in desired.items())


@dataclass(frozen=True)
class Event:
    """An Event to post on the object whose status was just written (ADR 0015: only on transitions)."""

    reason: str
    message: str
    warning: bool = False


def ready_reason(status: Mapping[str, Any] | None) -> str | None:
    """The reason of the Ready condition in ``status`` (None for an object never reported)."""
    reason: str | None = (condition(status, READY) or {}).get("reason")
    return reason
