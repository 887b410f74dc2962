"""The demo ruleset (deploy/samples/routingrules.yaml) as specs: the tests exercise what users are shown."""

from __future__ import annotations

from pathlib import Path

import yaml

SAMPLES_FILE = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "routingrules.yaml"
SAMPLE_SPECS: dict[str, dict] = {
    doc["metadata"]["name"]: doc["spec"] for doc in yaml.safe_load_all(SAMPLES_FILE.read_text()) if doc
}
FORCE = SAMPLE_SPECS["force-cell"]
SESSION = SAMPLE_SPECS["session-cookie"]
PATH = SAMPLE_SPECS["path-cell-id"]
CATCH_ALL = SAMPLE_SPECS["catch-all"]


def rule_manifest(name: str, spec: dict) -> dict:
    """A RoutingRule object for ``kubectl apply``."""
    return {"apiVersion": "cells.dev/v1alpha1", "kind": "RoutingRule", "metadata": {"name": name}, "spec": spec}
