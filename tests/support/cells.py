"""Helpers to create Cells and read what the operator published, through the real API."""

from __future__ import annotations

import json
import tomllib
from typing import Any

from cells_formats.records import CellRecord, CellState, SequenceRange
from tests.support.kubectl import Kubectl, eventually


def cell_manifest(name: str, id_: int, *, metadata: dict | None = None, **spec: Any) -> dict:
    """The one Cell factory of the tests: a Cell ``name`` with ``id_``, an address unless ``spec`` names one,
    and any other ``spec`` fields (camelCase, as the API has them) and ``metadata`` fields."""
    return {
        "apiVersion": "cells.dev/v1alpha1",
        "kind": "Cell",
        "metadata": {"name": name, **(metadata or {})},
        "spec": {"id": id_, "address": spec.pop("address", f"{name}.cells.svc:8080"), **spec},
    }


def first_cell_record() -> CellRecord:
    """The record of an active first cell ``cell-1`` (id 1, sequence range 10-19), as the unit tests of the
    reconcilers' reports and decisions publish it."""
    return CellRecord(
        name="cell-1",
        uid="uid-cell-1",
        id=1,
        address="cell-1:443",
        session_prefix="cell-1",
        state=CellState.ACTIVE,
        first_cell=True,
        sequence_ranges=(SequenceRange(minval=10, maxval=19),),
    )


def ready_condition(obj: dict) -> dict:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == "Ready":
            return c
    return {}


def wait_ready(kubectl: Kubectl, kind: str, name: str, namespace: str, timeout: float = 60) -> dict:
    def probe():
        obj = kubectl.get(kind, name, namespace)
        status = obj.get("status") or {}
        current = status.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and ready_condition(obj).get("status") == "True" else None

    return eventually(probe, timeout, message=f"{kind}/{name} Ready")


def wait_reason(kubectl: Kubectl, kind: str, name: str, namespace: str, reason: str, timeout: float = 60) -> dict:
    def probe():
        obj = kubectl.get(kind, name, namespace)
        status = obj.get("status") or {}
        current = status.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and ready_condition(obj).get("reason") == reason else None

    return eventually(probe, timeout, message=f"{kind}/{name} reason {reason}")


def records(kubectl: Kubectl, namespace: str, name: str = "cells-topology") -> tuple[dict, dict]:
    """(topology.json, config.toml) as published, parsed."""
    cm = kubectl.get("configmap", name, namespace)
    return json.loads(cm["data"]["topology.json"]), tomllib.loads(cm["data"]["config.toml"])


def events_for(kubectl: Kubectl, namespace: str, name: str) -> list[dict]:
    items = kubectl.get("events", namespace=namespace)["items"]
    return [e for e in items if e["involvedObject"]["name"] == name]


def touch(kubectl, namespace: str, name: str, value: str) -> None:
    """Any change to a Cell reconciles its namespace now (a base ConfigMap is not watched)."""
    kubectl("annotate", "cell", name, "-n", namespace, f"test/touch={value}", "--overwrite")
