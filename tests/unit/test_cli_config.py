"""``cells-operator run``'s configuration: the CELLS_* environment (what the Deployment sets) gives the
defaults, flags override them, and nothing is written back into the process environment."""

from __future__ import annotations

import os

from cells_operator.cli import build_parser, config_from
from cells_operator.config import OperatorConfig

ENV = {
    "CELLS_METRICS_PORT": "9191",
    "CELLS_NAMESPACES": "team-a, team-b",
    "CELLS_LEADER_ELECT": "true",
    "CELLS_WEBHOOK_SELF_SIGNED": "yes",
    "CELLS_TOPOLOGY_CONFIGMAP": "from-env",
    "POD_NAMESPACE": "ops",
}


def parse(*argv: str):
    return build_parser().parse_args(["run", *argv])


def test_the_environment_gives_the_defaults():
    config = config_from(parse(), ENV)
    assert config.metrics_port == 9191
    assert config.namespaces == ("team-a", "team-b")
    assert config.leader_elect and config.webhook_self_signed
    assert config.topology_configmap == "from-env"
    assert config.lease_namespace == "ops"
    assert config.router_configmap == OperatorConfig.router_configmap


def test_flags_override_the_environment():
    args = parse(
        "--metrics-port=0",
        "-n", "x", "-n", "y*",
        "--topology-configmap=from-flag",
        "--leader-elect-namespace=elsewhere",
        "--leader-elect-lease-duration=30",
        "--webhook-listen=0.0.0.0:9443",
    )  # fmt: skip
    config = config_from(args, ENV)
    assert config.metrics_port == 0  # 0 disables /metrics: a given flag, not an absent one
    assert config.namespaces == ("x", "y*")
    assert config.topology_configmap == "from-flag"
    assert config.lease_namespace == "elsewhere" and config.lease_duration == 30.0
    assert config.webhook_listen == "0.0.0.0:9443"


def test_boolean_flags_switch_on_what_the_environment_left_off():
    config = config_from(parse("--leader-elect", "--webhook-self-signed"), {})
    assert config.leader_elect and config.webhook_self_signed
    assert config_from(parse(), {}) == OperatorConfig()


def test_nothing_is_written_into_the_process_environment(monkeypatch):
    for name in [k for k in os.environ if k.startswith("CELLS_")]:
        monkeypatch.delenv(name)
    config_from(parse("--metrics-port=1234", "-n", "x", "--leader-elect", "--webhook-self-signed"))
    assert not [k for k in os.environ if k.startswith("CELLS_")]
