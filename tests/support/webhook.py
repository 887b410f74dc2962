"""The operator serving its admission webhooks on loopback (ADR 0007), for tests and the benchmark."""

from __future__ import annotations

import json
from pathlib import Path

from cells_devtools.devcluster.cluster import free_port
from tests.support.kubectl import Kubectl, eventually
from tests.support.operator import OperatorProcess
from tests.support.rules import rule_manifest

# A rule the webhook always refuses (unterminated group): probing with it shows the webhook is answering.
BAD_PATTERN = {
    "ruleset": "main",
    "action": "classify",
    "match": {"type": "path", "regexValue": "^/(?<x>[a-z]+"},
    "classify": {"type": "SESSION_PREFIX", "value": "${x}"},
}


class WebhookOperator(OperatorProcess):
    """``cells-operator run`` for ``namespaces``, making its certificate and registering its webhooks
    under ``configuration`` so that the local API server calls it on 127.0.0.1."""

    def __init__(
        self,
        kubeconfig: Path,
        logfile: Path,
        namespaces: list[str],
        cert_dir: Path,
        configuration: str,
        env: dict[str, str] | None = None,
    ):
        self.configuration = configuration
        self.webhook_port = free_port()
        super().__init__(
            kubeconfig,
            logfile,
            extra_args=[
                *[a for ns in namespaces for a in ("-n", ns)],
                *("--webhook-listen", f"127.0.0.1:{self.webhook_port}", "--webhook-self-signed"),
                *("--webhook-cert-dir", str(cert_dir), "--webhook-configuration", configuration),
            ],
            env=env,
        )


def wait_webhook_serving(kubectl: Kubectl, namespace: str, timeout: float = 60) -> None:
    """Registered and answering: a server-side dry run of a bad rule is refused (and creates nothing)."""

    def refused() -> bool:
        proc = kubectl(
            "apply", "--dry-run=server", "-n", namespace, "-f", "-",
            input=json.dumps(rule_manifest("probe", BAD_PATTERN)), check=False,
        )  # fmt: skip
        return proc.returncode != 0 and "denied the request" in proc.stderr

    eventually(refused, timeout=timeout, message="the admission webhook refusing a bad rule")
