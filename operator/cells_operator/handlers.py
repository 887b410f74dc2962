"""kopf wiring: watch Cells and RoutingRules, hand every event to the namespace's reconcile loop.

Handlers are deliberately thin: they neither read nor write anything themselves. kopf provides the
watch streams, login and retries of the watch; the supervisor (:mod:`cells_operator.supervisor`) owns
the process lifecycle and restarts kopf after failures; the reconcile loops
(:mod:`cells_operator.workers`) do the work level-based, so kopf stores no per-object progress or
diff-base annotations (fewer API writes, nothing to migrate).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from . import webhook
from .cell import GROUP, PLURAL, VERSION
from .config import MANAGED_BY, MANAGED_BY_LABEL
from .rule import PLURAL as RULES

log = logging.getLogger(__name__)


@kopf.on.startup()
async def started(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Runs at the start of every kopf run (the supervisor restarts kopf after transient failures); what
    outlives a run -- API client, metrics, reconcile loops, Lease -- was made once by the supervisor."""
    if memo.config.webhook_listen:
        await webhook.start(settings, memo, logger)
    memo.supervisor.kopf_started()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def cell_event(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    _seen(namespace, memo)


@kopf.on.event(GROUP, VERSION, RULES)
async def routing_rule_event(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    _seen(namespace, memo)


@kopf.on.event("", "v1", "configmaps", labels={MANAGED_BY_LABEL: MANAGED_BY})
async def output_event(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Our ConfigMaps edited or deleted by someone else: reconcile, which restores the desired content."""
    _seen(namespace, memo)


def _seen(namespace: str | None, memo: kopf.Memo) -> None:
    """A watch event arrived: the API server answers, and the namespace needs a reconcile."""
    memo.supervisor.api_ok()
    if namespace:
        memo.workers.trigger(namespace)
