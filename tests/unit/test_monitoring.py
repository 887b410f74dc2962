"""deploy/monitoring: the alert rules pass promtool's checks and unit tests, every alert has severity,
summary, description and a runbook that exists, and the dashboard only queries metrics we export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.support.promtool import find_promtool

ROOT = Path(__file__).resolve().parents[2]
RULES = yaml.safe_load((ROOT / "deploy" / "monitoring" / "prometheusrule.yaml").read_text())
ALERTS = [r for g in RULES["spec"]["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_checks_and_unit_tests(tmp_path):
    promtool = str(find_promtool())
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": RULES["spec"]["groups"]}))
    shutil.copy(ROOT / "tests" / "monitoring" / "alerts-test.yaml", tmp_path / "alerts-test.yaml")
    check = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in check.stdout
    test = subprocess.run([promtool, "test", "rules", "alerts-test.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr
    tested = set(re.findall(r"alertname: (\w+)", (tmp_path / "alerts-test.yaml").read_text()))
    assert tested == {a["alert"] for a in ALERTS}


def test_every_alert_is_labelled_annotated_and_has_a_runbook():
    assert {a["alert"] for a in ALERTS} == {
        "CellsOperatorDown",
        "CellsOperatorReconcileErrors",
        "CellsResourcesStalled",
        "CellsPublishFailing",
        "CellsSequenceRangeExhaustionAhead",
        "CellsAdmissionUnchecked",
        "CellsOperatorNotReconciling",
        "CellsOperatorNoLeader",
        "CellsCatastrophicPatternRefused",
        "CellsRouterMatchBudgetExceeded",
    }
    for alert in ALERTS:
        assert alert["labels"]["severity"] in ("critical", "warning"), alert["alert"]
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"], alert["alert"]
        runbook = ROOT / "runbooks" / f"{alert['alert']}.md"
        assert annotations["runbook_url"].endswith(f"/runbooks/{alert['alert']}.md")
        text = runbook.read_text()
        for section in ("## Impact", "## Diagnosis", "## Mitigation", "## Escalation"):
            assert section in text, f"{runbook.name} lacks {section}"


def test_dashboard_queries_exported_metrics():
    dashboard = json.loads((ROOT / "deploy" / "monitoring" / "grafana-dashboard.json").read_text())
    source = (ROOT / "operator" / "cells_operator" / "metrics.py").read_text()
    exported = set(re.findall(r'"((?:controller_runtime|cells_operator)_[a-z_]+)"', source))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names = set(re.findall(r"\b((?:controller_runtime|cells_operator)_[a-z_]+)", target["expr"]))
            base = {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}
            assert base <= exported, (panel["title"], base - exported)
