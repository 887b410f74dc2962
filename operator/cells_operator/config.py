"""Operator configuration, from environment variables (the Deployment sets them) or CLI flags."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass

FINALIZER = "cells.dev/topology"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "cells-operator"


@dataclass(frozen=True)
class OperatorConfig:
    topology_configmap: str = "cells-topology"
    router_configmap: str = "cells-router-rules"
    # ConfigMap whose config.toml key is the Topology Service's own settings, merged before [[cells]]
    # (ADR 0010); empty: config.toml holds only [[cells]].
    base_config_configmap: str = ""
    # Quiet period after an event before a namespace is reconciled: a burst of creates becomes one
    # records write instead of one per object.
    debounce_seconds: float = 0.5
    # ... but a continuous stream of events is reconciled at least this often.
    debounce_max_seconds: float = 10.0
    # Level-based safety net: kopf's watch reconnects this often, starting with a full LIST that
    # re-triggers every namespace (and pauses with kopf peering).
    resync_seconds: int = 300
    conflict_retries: int = 8
    # Parallel status/finalizer/Event requests when reporting on many objects at once.
    report_concurrency: int = 8
    # Seconds a silent peer is still considered alive (kopf peering); the standby waits this long.
    peering_lifetime: int = 60
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
    def from_env(cls) -> OperatorConfig:
        env = os.environ
        return cls(
            topology_configmap=env.get("CELLS_TOPOLOGY_CONFIGMAP", cls.topology_configmap),
            router_configmap=env.get("CELLS_ROUTER_CONFIGMAP", cls.router_configmap),
            base_config_configmap=env.get("CELLS_BASE_CONFIGMAP", cls.base_config_configmap),
            debounce_seconds=float(env.get("CELLS_DEBOUNCE_SECONDS", cls.debounce_seconds)),
            debounce_max_seconds=float(env.get("CELLS_DEBOUNCE_MAX_SECONDS", cls.debounce_max_seconds)),
            resync_seconds=int(env.get("CELLS_RESYNC_SECONDS", cls.resync_seconds)),
            metrics_port=int(env.get("CELLS_METRICS_PORT", cls.metrics_port)),
            report_concurrency=int(env.get("CELLS_REPORT_CONCURRENCY", cls.report_concurrency)),
            peering_lifetime=int(env.get("CELLS_PEERING_LIFETIME", cls.peering_lifetime)),
            namespaces=tuple(n.strip() for n in env.get("CELLS_NAMESPACES", "").split(",") if n.strip()),
            webhook_listen=env.get("CELLS_WEBHOOK_LISTEN", cls.webhook_listen),
            webhook_cert_dir=env.get("CELLS_WEBHOOK_CERT_DIR", cls.webhook_cert_dir),
            webhook_self_signed=env.get("CELLS_WEBHOOK_SELF_SIGNED", "").lower() in ("1", "true", "yes"),
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
