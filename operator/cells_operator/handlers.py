"""kopf wiring: watch Cells and RoutingRules, hand every event to the namespace's reconcile loop.

Handlers are deliberately thin: they neither read nor write anything themselves. kopf provides the
watch streams, login, retries of the watch and the operator lifecycle; the reconcile loops
(:mod:`cells_operator.workers`) do the work level-based, so kopf stores no per-object progress or
diff-base annotations (fewer API writes, nothing to migrate).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from .cell import GROUP, PLURAL, VERSION
from .config import OperatorConfig
from .kube import Kube, load_api_client
from .metrics import OperatorMetrics
from .reconciler import NamespaceReconciler
from .rule import PLURAL as RULES
from .workers import NamespaceWorkers

log = logging.getLogger(__name__)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Everything kopf could write on our objects is named under cells.dev: changing these later
    # would re-trigger handlers on every existing object.
    settings.persistence.finalizer = "cells.dev/kopf-finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="cells.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="cells.dev", key="last-handled-configuration"
    )
    # We post our own Events (one per decision); kopf's log-to-Event posting would duplicate them.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    config = OperatorConfig.from_env()
    memo.config = config
    memo.kube = Kube(load_api_client())
    memo.metrics = OperatorMetrics()
    if config.metrics_port:
        memo.metrics.serve(config.metrics_port)
    memo.workers = NamespaceWorkers(
        NamespaceReconciler(memo.kube, config, memo.metrics),
        debounce=config.debounce_seconds,
        resync=config.resync_seconds,
    )


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    workers = getattr(memo, "workers", None)
    if workers is not None:
        await workers.stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def cell_event(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    if namespace:
        memo.workers.trigger(namespace)


@kopf.on.event(GROUP, VERSION, RULES)
async def routing_rule_event(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    if namespace:
        memo.workers.trigger(namespace)
