"""kopf wiring: watch Cells and RoutingRules, hand every event to the namespace's reconcile loop.

Handlers are deliberately thin: they neither read nor write anything themselves. kopf provides the
watch streams, login, retries of the watch and the operator lifecycle; the reconcile loops
(:mod:`cells_operator.workers`) do the work level-based, so kopf stores no per-object progress or
diff-base annotations (fewer API writes, nothing to migrate).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from . import webhook
from .cell import GROUP, PLURAL, VERSION
from .config import MANAGED_BY, MANAGED_BY_LABEL, OperatorConfig
from .kube import Kube, load_api_client, wait_for_crds
from .metrics import OperatorMetrics
from .reconciler import NamespaceReconciler
from .rule import PLURAL as RULES
from .workers import NamespaceWorkers

log = logging.getLogger(__name__)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    # Everything kopf could write on our objects is named under cells.dev: changing these later
    # would re-trigger handlers on every existing object.
    config = OperatorConfig.from_env()
    settings.persistence.finalizer = "cells.dev/kopf-finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="cells.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="cells.dev", key="last-handled-configuration"
    )
    # Peering (production overlay): how long a silent peer counts as alive; a standby takes over after it.
    settings.peering.lifetime = config.peering_lifetime
    # We post our own Events (one per decision); kopf's log-to-Event posting would duplicate them.
    settings.posting.enabled = False
    # Every watch reconnection starts with a full LIST, which re-triggers every namespace: that is the
    # periodic resync. It pauses with kopf when a peer with a higher priority is active, so that exactly
    # one replica acts (a timer of our own would keep running while kopf is paused).
    settings.watching.server_timeout = config.resync_seconds
    settings.watching.client_timeout = config.resync_seconds + 30
    memo.config = config
    memo.kube = Kube(load_api_client())
    # kopf discovers the resources it serves once, right after start-up, and only rediscovers when a CRD
    # changes. An API server that is itself starting (e.g. restarted with the operator) may not list the
    # CRDs yet: wait for them, or they would never be served by this process.
    await asyncio.to_thread(wait_for_crds, memo.kube, logger)
    memo.metrics = OperatorMetrics()
    if config.metrics_port:
        memo.metrics.serve(config.metrics_port)
    if config.webhook_listen:
        await webhook.start(settings, memo, logger)
    memo.workers = NamespaceWorkers(
        NamespaceReconciler(memo.kube, config, memo.metrics),
        debounce=config.debounce_seconds,
        max_delay=config.debounce_max_seconds,
    )


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    workers = getattr(memo, "workers", None)
    if workers is not None:
        await workers.stop()
    if getattr(memo, "config", None) is not None and memo.config.webhook_listen:
        await webhook.stop(memo, logger)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def cell_event(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    if namespace:
        memo.workers.trigger(namespace)


@kopf.on.event(GROUP, VERSION, RULES)
async def routing_rule_event(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    if namespace:
        memo.workers.trigger(namespace)


@kopf.on.event("", "v1", "configmaps", labels={MANAGED_BY_LABEL: MANAGED_BY})
async def output_event(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Our ConfigMaps edited or deleted by someone else: reconcile, which restores the desired content."""
    if namespace:
        memo.workers.trigger(namespace)
