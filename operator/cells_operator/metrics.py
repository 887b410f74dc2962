"""Prometheus metrics of the operator (kopf exports none).

Reconcile metrics are named after controller-runtime's where they mean the same, so existing dashboards
and alerts for Go operators apply: ``controller_runtime_reconcile_total{controller,result}``,
``controller_runtime_reconcile_errors_total{controller}``, ``controller_runtime_reconcile_time_seconds``.
Domain metrics are prefixed ``cells_operator_``. One reconcile pass covers a whole namespace; the
``controller`` label is ``namespace`` for it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cells_formats.records import Topology

from .ranges import remaining_capacity
from .rulesets import RulesPlan

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        # The label sets each gauge family was ever given, per (gauge, fixed labels): prometheus_client
        # keeps its own children private, so the sets that disappeared are found here.
        self._label_sets: dict[tuple[Gauge, tuple[str, ...]], set[str]] = {}
        self.reconcile_total = Counter(
            "controller_runtime_reconcile_total",
            "Reconciliations per controller and result",
            ["controller", "result"],
            registry=r,
        )
        self.reconcile_errors = Counter(
            "controller_runtime_reconcile_errors_total",
            "Reconciliation errors per controller",
            ["controller"],
            registry=r,
        )
        self.reconcile_time = Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            ["controller"],
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.cells = Gauge(
            "cells_operator_cells", "Registered cells by namespace and state", ["namespace", "state"], registry=r
        )
        self.rules = Gauge(
            "cells_operator_rules", "Published rules by namespace and ruleset", ["namespace", "ruleset"], registry=r
        )
        self.publishes = Counter(
            "cells_operator_publish_total", "ConfigMap writes by output", ["namespace", "output"], registry=r
        )
        self.publish_bytes = Gauge(
            "cells_operator_publish_bytes", "Size of the published ConfigMap data", ["namespace", "output"], registry=r
        )
        self.publish_last_success = Gauge(
            "cells_operator_publish_last_success_timestamp_seconds",
            "When the output was last confirmed published (written or already up to date)",
            ["namespace", "output"],
            registry=r,
        )
        self.publish_failures = Counter(
            "cells_operator_publish_failures_total", "Failed attempts to publish", ["namespace", "output"], registry=r
        )
        self.conflicts = Counter(
            "cells_operator_publish_conflicts_total",
            "Optimistic-concurrency conflicts retried while publishing",
            ["output"],
            registry=r,
        )
        self.stalled = Gauge(
            "cells_operator_stalled_resources",
            "Resources with Stalled=True by kind and reason",
            ["namespace", "kind", "reason"],
            registry=r,
        )
        self.sequence_allocated = Gauge(
            "cells_operator_sequence_ids_allocated",
            "IDs in live and retired sequence ranges",
            ["namespace"],
            registry=r,
        )
        self.sequence_remaining = Gauge(
            "cells_operator_sequence_ids_remaining",
            "IDs left above the highest range ever used (to 2^57-1, the 57-bit ID sequence)",
            ["namespace"],
            registry=r,
        )
        self.api_writes = Counter(
            "cells_operator_api_writes_total", "Write requests sent to the API server", registry=r
        )
        self.admission_reviews = Counter(
            "cells_operator_admission_reviews_total",
            "Admission reviews by webhook and result (allowed, refused, unchecked: allowed without a check)",
            ["webhook", "result"],
            registry=r,
        )
        self.admission_latency = Histogram(
            "cells_operator_admission_review_seconds",
            "Time to answer an admission review",
            ["webhook"],
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )

        self.reconcile_started = Gauge(
            "cells_operator_reconcile_last_start_timestamp_seconds",
            "When the last reconcile pass of the namespace started",
            ["namespace"],
            registry=r,
        )
        self.api_errors = Counter(
            "cells_operator_api_errors_total",
            "Errors from the API server by code (HTTP status, or connection / timeout / tls)",
            ["code"],
            registry=r,
        )
        self.watch_restarts = Counter(
            "cells_operator_watch_restarts_total",
            "Watch streams restarted after an error that ended them, by error code",
            ["code"],
            registry=r,
        )
        self.blocked = Gauge(
            "cells_operator_reconcile_blocked",
            "1 while the operator cannot reconcile for this reason (CRDNotInstalled, APIServerUnavailable, ...)",
            ["reason"],
            registry=r,
        )
        self.blocked_seconds = Gauge(
            "cells_operator_reconcile_blocked_seconds",
            "How long the operator has been unable to reconcile (0 when it can)",
            registry=r,
        )
        self.ready = Gauge("cells_operator_ready", "1 when /readyz answers ok", registry=r)
        self.leader = Gauge(
            "cells_operator_leader",
            "1 when this replica reconciles (it holds the Lease, or leader election is off)",
            registry=r,
        )

    def observe_admission(self, webhook: str, result: str, seconds: float) -> None:
        self.admission_reviews.labels(webhook, result).inc()
        self.admission_latency.labels(webhook).observe(seconds)

    # ----------------------------------------------------------------- domain snapshots
    def observe_topology(self, namespace: str, topology: Topology) -> None:
        for state in ("Active", "Draining", "Offline"):
            self.cells.labels(namespace, state).set(sum(1 for c in topology.cells if c.state.value == state))
        ranges = topology.all_ranges()
        self.sequence_allocated.labels(namespace).set(sum(r.size for r in ranges))
        self.sequence_remaining.labels(namespace).set(remaining_capacity(ranges))

    def observe_rules(self, namespace: str, plan: RulesPlan) -> None:
        counts: dict[str, int] = {}
        for verdict in plan.verdicts.values():
            if verdict.live is not None:
                counts[verdict.live.ruleset] = counts.get(verdict.live.ruleset, 0) + 1
        self._set_counts(self.rules, (namespace,), counts)  # rulesets that disappeared go to zero

    def observe_stalled(self, namespace: str, kind: str, reasons: list[str]) -> None:
        counts: dict[str, int] = {}
        for reason in reasons:
            counts[reason] = counts.get(reason, 0) + 1
        self._set_counts(self.stalled, (namespace, kind), counts)

    def _set_counts(self, gauge: Gauge, fixed: tuple[str, ...], counts: dict[str, int]) -> None:
        """Set ``gauge{*fixed, key}`` to each count, and to 0 for every key seen before under ``fixed``
        but absent now: a series that stops being reported would keep its last value on dashboards."""
        seen = self._label_sets.setdefault((gauge, fixed), set())
        for key in seen - counts.keys():
            gauge.labels(*fixed, key).set(0)
        for key, count in counts.items():
            gauge.labels(*fixed, key).set(count)
        seen.update(counts)
