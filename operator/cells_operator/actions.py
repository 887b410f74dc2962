"""The shell's plan of writes as data, and the executor that only performs it.

A reconcile is observe -> plan -> execute. The decisions -- which finalizer to add or remove, which
status to write, which Event to post -- are pure functions of what was observed that return a list of
these actions (:mod:`cells_operator.cell_reconciler`, :mod:`cells_operator.rule_reconciler`). The
executor below makes no decision of its own, so the decisions are unit-tested without any API, and the
shell around them is tested against an in-memory fake of :class:`cells_operator.kube.Kube`.

The ConfigMap writes are planned the same way one level down (:func:`cells_operator.publish.plan_write`):
they are read -> plan -> write at the read resourceVersion, re-planned on every conflict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import conditions as cond
from .kube import Kube, for_each


@dataclass(frozen=True)
class SetFinalizers:
    """Replace ``obj``'s finalizers, guarded by the resourceVersion it was read at (409: re-plan)."""

    plural: str
    obj: dict[str, Any]
    finalizers: tuple[str, ...]


@dataclass(frozen=True)
class WriteStatus:
    """Merge-patch ``obj``'s status. ``announce``: log the Ready condition it now reports."""

    plural: str
    obj: dict[str, Any]
    status: dict[str, Any]
    announce: bool = True


@dataclass(frozen=True)
class PostEvent:
    """An Event on ``obj`` (ADR 0015: on transitions only)."""

    obj: dict[str, Any]
    event: cond.Event


Action = SetFinalizers | WriteStatus | PostEvent


def execute(kube: Kube, actions: Sequence[Action]) -> None:
    """Perform ``actions`` in order. No decision here: an API error propagates (a 409 on finalizers
    raises :class:`cells_operator.kube.Conflict`, and the next pass re-plans from a fresh read)."""
    for action in actions:
        if isinstance(action, SetFinalizers):
            kube.set_finalizers(action.plural, action.obj, list(action.finalizers))
        elif isinstance(action, WriteStatus):
            if action.announce:
                kube.write_status(action.plural, action.obj, action.status)
            else:
                meta = action.obj["metadata"]
                kube.patch_status(action.plural, meta["namespace"], meta["name"], action.status)
        else:
            event = action.event
            kube.post_event(action.obj, event.reason, event.message, warning=event.warning)


def execute_each(kube: Kube, plans: Sequence[Sequence[Action]], concurrency: int) -> None:
    """One plan per object, objects in parallel (each object's actions stay in order); the first error is
    raised after all have run, as :func:`cells_operator.kube.for_each` does."""
    for_each([plan for plan in plans if plan], lambda plan: execute(kube, plan), concurrency)
