"""``cells-operator``: run the operator, or check and render manifests offline.

Subcommands:
  run            run the operator (kopf) against the current kubeconfig
  manifests webhooks  print deploy/webhook/webhooks.yaml (the webhook configurations, from the code)
  manifests crds      print the CRDs generated from the models (--out-dir crds writes crds/*.yaml)
  validate       check Cells and RoutingRules offline, as admission and the planner would (GitOps reviews)
  render         print the ConfigMaps the operator would publish for manifests
  route          explain which rule and which cell a request is routed to
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cells_formats.router_format import parse_dialect

from .config import OperatorConfig

# ``run``'s flags and the OperatorConfig fields they set; the Deployment sets the same settings through
# CELLS_* environment variables (OperatorConfig.from_env), which are the defaults a flag overrides.
FLAG_FIELDS = {
    "metrics_port": "metrics_port",
    "topology_configmap": "topology_configmap",
    "router_configmap": "router_configmap",
    "base_config_configmap": "base_config_configmap",
    "webhook_listen": "webhook_listen",
    "webhook_cert_dir": "webhook_cert_dir",
    "webhook_host": "webhook_host",
    "webhook_configuration": "webhook_configuration",
    "leader_elect_lease_name": "lease_name",
    "leader_elect_namespace": "lease_namespace",
    "leader_elect_lease_duration": "lease_duration",
    "leader_elect_renew_deadline": "renew_deadline",
    "leader_elect_retry_period": "retry_period",
}


def config_from(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> OperatorConfig:
    """The operator's configuration: the environment's, then every flag given on top. Passed explicitly
    (kopf's memo carries it to the handlers), never written back into the process environment."""
    overrides: dict[str, Any] = {
        field: getattr(args, flag) for flag, field in FLAG_FIELDS.items() if getattr(args, flag) not in (None, "")
    }
    if args.namespace:
        overrides["namespaces"] = tuple(args.namespace)
    if args.webhook_self_signed:
        overrides["webhook_self_signed"] = True
    if args.leader_elect:
        overrides["leader_elect"] = True
    if getattr(args, "router_dialect", None):
        overrides["router_dialect"] = parse_dialect(args.router_dialect)
    return dataclasses.replace(OperatorConfig.from_env(env), **overrides)


def _run(args: argparse.Namespace) -> int:
    import asyncio

    import kopf

    from . import (
        handlers,  # noqa: F401  (registers the handlers)
        supervisor,
        webhook,
    )

    config = config_from(args)  # handed to kopf's handlers in the memo (supervisor.serve)
    if config.webhook_listen:
        webhook.register()
    kopf.configure(
        verbose=args.verbose,
        debug=args.debug,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
    )
    return asyncio.run(supervisor.serve(config, liveness=args.liveness))


def _manifests(args: argparse.Namespace) -> int:
    if args.what == "crds":
        from .crd_schema import write_crds

        return write_crds(Path(args.out_dir) if args.out_dir else None)
    import yaml

    from .admission import DEPLOY_HEADER, deploy_webhook_configurations

    docs = deploy_webhook_configurations()
    print(DEPLOY_HEADER + "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cells-operator", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator")
    run.add_argument(
        "-n", "--namespace", action="append", help="namespace to manage (repeatable); default: all namespaces"
    )
    run.add_argument(
        "--standalone",
        action="store_true",
        help="accepted for compatibility: without --leader-elect the operator always acts alone",
    )
    run.add_argument(
        "--leader-elect",
        action="store_true",
        help="elect one active replica on a coordination.k8s.io Lease (env CELLS_LEADER_ELECT=true)",
    )
    run.add_argument("--leader-elect-lease-name", help="the Lease's name (default cells-operator)")
    run.add_argument(
        "--leader-elect-namespace", help="the Lease's namespace (default $POD_NAMESPACE, else cells-system)"
    )
    run.add_argument("--leader-elect-lease-duration", type=float, help="seconds (default 15)")
    run.add_argument("--leader-elect-renew-deadline", type=float, help="seconds (default 10)")
    run.add_argument("--leader-elect-retry-period", type=float, help="seconds (default 2)")
    run.add_argument(
        "--liveness",
        default=os.environ.get("CELLS_LIVENESS_ENDPOINT"),
        help="also serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    run.add_argument(
        "--metrics-port", type=int, help="/metrics, /healthz and /readyz on this port (default 9090; 0 disables)"
    )
    run.add_argument("--topology-configmap", help="records ConfigMap name (default cells-topology)")
    run.add_argument("--router-configmap", help="router rules ConfigMap name (default cells-router-rules)")
    run.add_argument(
        "--router-dialect",
        choices=("current", "2024"),
        help="rules format to publish (default: $CELLS_ROUTER_DIALECT, else current; ADR 0014)",
    )
    run.add_argument(
        "--base-config-configmap",
        help="ConfigMap (in each managed namespace) whose config.toml key is merged before the [[cells]] "
        "(env CELLS_BASE_CONFIGMAP; default: none, config.toml holds only [[cells]])",
    )
    run.add_argument(
        "--webhook-listen",
        help="serve the admission webhooks on host:port, e.g. 0.0.0.0:9443 (env CELLS_WEBHOOK_LISTEN; default: none)",
    )
    run.add_argument(
        "--webhook-cert-dir",
        help="folder with tls.crt, tls.key and ca.crt (default /tmp/k8s-webhook-server/serving-certs)",
    )
    run.add_argument(
        "--webhook-self-signed",
        action="store_true",
        help="make a self-signed CA and certificate in --webhook-cert-dir (local control plane)",
    )
    run.add_argument("--webhook-host", help="host the API server dials (default: the listen address, or 127.0.0.1)")
    run.add_argument(
        "--webhook-configuration",
        help="register the webhook configurations under this name, pointing at this process (local control plane)",
    )
    run.add_argument("--log-format", choices=("text", "json"), default=os.environ.get("CELLS_LOG_FORMAT", "text"))
    run.add_argument("-v", "--verbose", action="store_true")
    run.add_argument("--debug", action="store_true")
    run.set_defaults(func=_run)

    manifests = sub.add_parser("manifests", help="print manifests generated from the code")
    manifests.add_argument("what", choices=("webhooks", "crds"))
    manifests.add_argument("--out-dir", help="crds: write one file per CRD into this folder (e.g. crds)")
    manifests.set_defaults(func=_manifests)

    from .gitops_cli import add_subparsers as add_gitops_subparsers  # validate, render, route (issue 14)

    add_gitops_subparsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":  # `run` leaves logging to kopf.configure (text or JSON)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
