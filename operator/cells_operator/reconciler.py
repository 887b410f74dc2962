"""Reconcile one namespace: read its Cells and RoutingRules once, then run each reconciler, and record
what happened in the metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .cell import PLURAL as CELLS
from .cell_reconciler import CellReconciler, CellsResult
from .config import OperatorConfig
from .kube import Kube
from .leader import NotLeader
from .metrics import OperatorMetrics
from .rule import PLURAL as RULES
from .rule_reconciler import RuleReconciler, RulesResult

log = logging.getLogger(__name__)
CONTROLLER = "namespace"


class NamespaceReconciler:
    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        metrics: OperatorMetrics | None = None,
        burst_age: Callable[[str], float | None] = lambda namespace: None,
    ):
        self.kube = kube
        self.config = config
        self.metrics = metrics or OperatorMetrics()
        self.cells = CellReconciler(kube, config)
        self.rules = RuleReconciler(kube, config)
        # How long the namespace's events have been arriving without a quiet moment, when this pass was
        # forced by the bound while they still arrive (``NamespaceWorkers.burst_age``); None otherwise.
        self.burst_age = burst_age

    def in_burst(self, namespace: str) -> bool:
        """This pass runs in a burst that has not yet lasted ``incomplete_defer_seconds``: it may hold back
        statuses the rest of the burst would change (ADR 0015)."""
        age = self.burst_age(namespace)
        return age is not None and age < self.config.incomplete_defer_seconds

    def __call__(self, namespace: str) -> bool:
        """Reconcile ``namespace``; False when it holds no Cells or RoutingRules (its loop may stop)."""
        started, writes_before = time.perf_counter(), self.kube.writes
        self.metrics.reconcile_started.labels(namespace).set(time.time())
        try:
            active = self._reconcile(namespace)
        except NotLeader:
            raise  # not an error: the Lease moved on; the next leader reconciles
        except Exception:
            self.metrics.reconcile_errors.labels(CONTROLLER).inc()
            self.metrics.reconcile_total.labels(CONTROLLER, "error").inc()
            raise
        finally:
            self.metrics.reconcile_time.labels(CONTROLLER).observe(time.perf_counter() - started)
            self.metrics.api_writes.inc(self.kube.writes - writes_before)
        self.metrics.reconcile_total.labels(CONTROLLER, "success").inc()
        return active

    def _reconcile(self, namespace: str) -> bool:
        cell_objs = self.kube.list_objects(CELLS, namespace)
        rules = self.kube.list_objects(RULES, namespace)
        result = self.cells.reconcile(namespace, cell_objs, rules)
        self._observe_cells(namespace, result)
        if result.error:
            raise RuntimeError(f"records of {namespace} not published: {result.error}")
        assert result.records is not None
        if result.published:
            log.info(
                "published records revision %s to %s/%s (%d bytes, %d conflicts retried)",
                result.records.revision,
                namespace,
                self.config.topology_configmap,
                result.bytes,
                result.conflicts,
            )
        rules_result = self.rules.reconcile(namespace, rules, result.records, self.in_burst(namespace))
        if rules_result.deferred:
            log.info(
                "%s: %d new rule(s) in rulesets without a catch-all are reported after the burst",
                namespace,
                rules_result.deferred,
                extra={"namespace": namespace},
            )
        self._observe_rules(namespace, rules_result)
        if rules_result.written:
            log.info(
                "published %d rulesets to %s/%s (%d bytes, %d conflicts retried)",
                len(rules_result.plan.hashes),
                namespace,
                self.config.router_configmap,
                rules_result.bytes,
                rules_result.conflicts,
                extra={"namespace": namespace},
            )
        return bool(cell_objs or rules)

    def _observe_publish(self, namespace: str, output: str, written: bool, size: int, conflicts: int) -> None:
        m = self.metrics
        if written:
            m.publishes.labels(namespace, output).inc()
        m.publish_bytes.labels(namespace, output).set(size)
        m.publish_last_success.labels(namespace, output).set(time.time())
        m.conflicts.labels(output).inc(conflicts)

    def _observe_cells(self, namespace: str, result: CellsResult) -> None:
        if result.error or result.held:
            self.metrics.publish_failures.labels(namespace, "records").inc()
        if result.error:
            return
        if result.records is None or not (result.verdicts or result.published or result.records.cells):
            return
        if not result.held:  # held back (too large): not a success, what is published is older
            self._observe_publish(namespace, "records", result.published, result.bytes, result.conflicts)
        self.metrics.observe_topology(namespace, result.records)
        self.metrics.observe_stalled(
            namespace,
            "Cell",
            [v.problem.reason for v in result.verdicts.values() if v.problem is not None and not v.deleting],
        )

    def _observe_rules(self, namespace: str, result: RulesResult) -> None:
        if not result.plan.verdicts and not result.written:
            return
        self._observe_publish(namespace, "router", result.written, result.bytes, result.conflicts)
        self.metrics.observe_rules(namespace, result.plan)
        self.metrics.observe_stalled(
            namespace, "RoutingRule", [v.problem.reason for v in result.plan.verdicts.values() if v.problem is not None]
        )
