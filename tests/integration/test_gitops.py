"""GitOps-facing behaviour on real objects: the Argo CD health script judges what the operator wrote, and
JSON logs name the resource they are about."""

from __future__ import annotations

import json

from tests.support.cells import cell_manifest, wait_ready, wait_reason
from tests.support.kubectl import eventually
from tests.support.operator import OperatorProcess
from tests.unit.test_argocd_health import HEALTH, run_health

SCRIPT = HEALTH / "cells.dev" / "Cell" / "health.lua"


def test_argocd_health_of_real_objects(kubectl, namespace, operator):
    kubectl.apply([cell_manifest("a-good", 1, firstCell=True), cell_manifest("b-dup", 1)], namespace)
    good = wait_ready(kubectl, "cell", "a-good", namespace)
    dup = wait_reason(kubectl, "cell", "b-dup", namespace, "DuplicateId")
    assert run_health(SCRIPT, good)["status"] == "Healthy"
    degraded = run_health(SCRIPT, dup)
    assert degraded["status"] == "Degraded" and degraded["message"].startswith("DuplicateId: id 1 is already")
    # a spec change not yet observed is Progressing (kstatus: observedGeneration behind generation)
    stale = {**good, "metadata": {**good["metadata"], "generation": good["metadata"]["generation"] + 1}}
    assert run_health(SCRIPT, stale)["status"] == "Progressing"
    # deletion held by the first-cell rule is Progressing with the reason
    kubectl("delete", "cell", "a-good", "-n", namespace, "--wait=false")
    blocked = wait_reason(kubectl, "cell", "a-good", namespace, "DeletionBlocked")
    held = run_health(SCRIPT, blocked)
    assert held["status"] == "Progressing" and "first cell" in held["message"]


def test_json_logs_name_the_resource(kubectl, namespace, control_plane, tmp_path):
    operator = OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log", ["--log-format=json"])
    operator.start()
    try:
        kubectl.apply(cell_manifest("logged", 4), namespace)
        wait_ready(kubectl, "cell", "logged", namespace)

        def line_about_cell():
            for line in operator.log_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                ref = record.get("object") or {}
                if (
                    ref.get("name") == "logged"
                    and ref.get("namespace") == namespace
                    and "Ready=True" in record.get("message", "")
                ):
                    return record
            return None

        record = eventually(line_about_cell, message="a JSON log line about the Cell")
        assert record["object"]["kind"] == "Cell" and record["severity"] == "info" and "timestamp" in record
    finally:
        operator.stop()
