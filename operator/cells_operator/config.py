"""Operator configuration, from environment variables (the Deployment sets them) or CLI flags."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass

from cells_formats.router_format import DIALECT_ENV, Dialect, parse_dialect

FINALIZER = "cells.dev/topology"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "cells-operator"


@dataclass(frozen=True)
class OperatorConfig:
    topology_configmap: str = "cells-topology"
    router_configmap: str = "cells-router-rules"
    # The published ruleset's shape (ADR 0014): GitLab's current router language, or its 2024 one. One
    # operator feeds one router build; admission, the planner and render/validate all take it from here.
    router_dialect: Dialect = Dialect.CURRENT
    # ConfigMap whose config.toml key is the Topology Service's own settings, merged before [[cells]]
    # (ADR 0010); empty: config.toml holds only [[cells]].
    base_config_configmap: str = ""
    # Quiet period after an event before a namespace is reconciled: a burst of creates becomes one
    # records write instead of one per object.
    debounce_seconds: float = 0.5
    # ... but a continuous stream of events is reconciled at least this often: a long burst (a GitOps
    # sync of 1,000 rules) is published and reported while it arrives, not in a batch after it.
    debounce_max_seconds: float = 2.0
    # A pass during a burst holds back the first status of new rules in a ruleset without a catch-all
    # (ADR 0015), for at most this long after the burst began; then they are written as they are.
    # 10 s: a new rule's first status never comes later than before the hold (the old quiet-period bound)
    incomplete_defer_seconds: float = 10.0
    # Level-based safety net (controller-runtime's SyncPeriod): every namespace seen is reconciled again
    # this often, and the API server ends each watch request after this long (kopf resumes it).
    resync_seconds: int = 300
    conflict_retries: int = 8
    # Parallel status/finalizer/Event requests when reporting on many objects at once.
    report_concurrency: int = 8
    # Leader election on a coordination.k8s.io/v1 Lease (ADR 0009); client-go's default timings.
    leader_elect: bool = False
    lease_name: str = "cells-operator"
    lease_namespace: str = "cells-system"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    # Timeouts of every API request, of establishing a connection, and of a watch stream that has sent
    # nothing (not even a bookmark) -- a dead connection is noticed within this bound (ADR 0008).
    request_timeout: float = 60.0
    connect_timeout: float = 10.0
    watch_read_timeout: float = 60.0
    # A state in which the operator cannot reconcile (CRDs missing, API server unreachable) is logged at
    # ERROR once it lasts this long; readiness is false from its first second.
    stall_seconds: float = 120.0
    # Prometheus /metrics port (0: not served).
    metrics_port: int = 9090
    # Namespaces the operator manages (kopf patterns); empty: all. The webhook leaves the others alone.
    namespaces: tuple[str, ...] = ()
    # Admission webhook (ADR 0007): where to listen ("host:port"; empty: no webhook), the folder holding
    # tls.crt / tls.key / ca.crt (cert-manager's Secret layout, kubebuilder's default path), whether to
    # make a self-signed CA + certificate there, the host the API server dials, and -- on the local
    # control plane -- the name under which to register the webhook configurations ourselves.
    webhook_listen: str = ""
    webhook_cert_dir: str = "/tmp/k8s-webhook-server/serving-certs"
    webhook_self_signed: bool = False
    webhook_host: str = ""
    webhook_configuration: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> OperatorConfig:
        return cls(
            topology_configmap=env.get("CELLS_TOPOLOGY_CONFIGMAP", cls.topology_configmap),
            router_configmap=env.get("CELLS_ROUTER_CONFIGMAP", cls.router_configmap),
            router_dialect=parse_dialect(env.get(DIALECT_ENV, "")),
            base_config_configmap=env.get("CELLS_BASE_CONFIGMAP", cls.base_config_configmap),
            debounce_seconds=float(env.get("CELLS_DEBOUNCE_SECONDS", cls.debounce_seconds)),
            debounce_max_seconds=float(env.get("CELLS_DEBOUNCE_MAX_SECONDS", cls.debounce_max_seconds)),
            incomplete_defer_seconds=float(env.get("CELLS_INCOMPLETE_DEFER_SECONDS", cls.incomplete_defer_seconds)),
            resync_seconds=int(env.get("CELLS_RESYNC_SECONDS", cls.resync_seconds)),
            metrics_port=int(env.get("CELLS_METRICS_PORT", cls.metrics_port)),
            report_concurrency=int(env.get("CELLS_REPORT_CONCURRENCY", cls.report_concurrency)),
            leader_elect=_flag(env.get("CELLS_LEADER_ELECT", "")),
            lease_name=env.get("CELLS_LEASE_NAME", cls.lease_name),
            lease_namespace=env.get("CELLS_LEASE_NAMESPACE") or env.get("POD_NAMESPACE") or cls.lease_namespace,
            lease_duration=float(env.get("CELLS_LEASE_DURATION", cls.lease_duration)),
            renew_deadline=float(env.get("CELLS_RENEW_DEADLINE", cls.renew_deadline)),
            retry_period=float(env.get("CELLS_RETRY_PERIOD", cls.retry_period)),
            request_timeout=float(env.get("CELLS_REQUEST_TIMEOUT", cls.request_timeout)),
            connect_timeout=float(env.get("CELLS_CONNECT_TIMEOUT", cls.connect_timeout)),
            watch_read_timeout=float(env.get("CELLS_WATCH_READ_TIMEOUT", cls.watch_read_timeout)),
            stall_seconds=float(env.get("CELLS_STALL_SECONDS", cls.stall_seconds)),
            namespaces=tuple(n.strip() for n in env.get("CELLS_NAMESPACES", "").split(",") if n.strip()),
            webhook_listen=env.get("CELLS_WEBHOOK_LISTEN", cls.webhook_listen),
            webhook_cert_dir=env.get("CELLS_WEBHOOK_CERT_DIR", cls.webhook_cert_dir),
            webhook_self_signed=_flag(env.get("CELLS_WEBHOOK_SELF_SIGNED", "")),
            webhook_host=env.get("CELLS_WEBHOOK_HOST", cls.webhook_host),
            webhook_configuration=env.get("CELLS_WEBHOOK_CONFIGURATION", cls.webhook_configuration),
        )

    def manages(self, namespace: str) -> bool:
        """Whether ``namespace`` is one of ours (kopf's glob patterns, as given to ``--namespace``)."""
        return not self.namespaces or any(fnmatch.fnmatchcase(namespace, p) for p in self.namespaces)

    @property
    def webhook_address(self) -> tuple[str, int]:
        """``webhook_listen`` split into (host, port); an IPv6 host may be bracketed."""
        host, _, port = self.webhook_listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"webhook listen address {self.webhook_listen!r} must be host:port")
        return host.strip("[]"), int(port)


def _flag(value: str) -> bool:
    return value.lower() in ("1", "true", "yes")
