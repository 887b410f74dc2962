"""Reconcile one namespace: read its Cells and RoutingRules once, then run each reconciler."""

from __future__ import annotations

import logging

from .cell import PLURAL as CELLS
from .cell_reconciler import CellReconciler
from .config import OperatorConfig
from .kube import Kube
from .rule import PLURAL as RULES
from .rule_reconciler import RuleReconciler

log = logging.getLogger(__name__)


class NamespaceReconciler:
    def __init__(self, kube: Kube, config: OperatorConfig):
        self.kube = kube
        self.config = config
        self.cells = CellReconciler(kube, config)
        self.rules = RuleReconciler(kube, config)

    def __call__(self, namespace: str) -> bool:
        """Reconcile ``namespace``; False when it holds no Cells or RoutingRules (its loop may stop)."""
        cell_objs = self.kube.list_objects(CELLS, namespace)
        rules = self.kube.list_objects(RULES, namespace)
        result = self.cells.reconcile(namespace, cell_objs, rules)
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
        rules_result = self.rules.reconcile(namespace, rules, result.records)
        if rules_result.written:
            log.info(
                "published %d rulesets to %s/%s (%d bytes, %d conflicts retried)",
                len(rules_result.plan.hashes),
                namespace,
                self.config.router_configmap,
                rules_result.bytes,
                rules_result.conflicts,
            )
        return bool(cell_objs or rules)
