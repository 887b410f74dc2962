"""Argo CD health checks (deploy/argocd/health/<group>/<Kind>/health.lua), executed in a real Lua runtime
against the sample objects of their health_test.yaml, as Argo CD's own test harness does."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from lupa import LuaRuntime

HEALTH = Path(__file__).resolve().parents[2] / "deploy" / "argocd" / "health"
CASES = [
    (script, case)
    for script in sorted(HEALTH.glob("*/*/health.lua"))
    for case in yaml.safe_load((script.parent / "health_test.yaml").read_text())["tests"]
]


def run_health(script: Path, obj: dict) -> dict:
    lua = LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value):
        if isinstance(value, dict):
            return lua.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([to_lua(v) for v in value])
        return value

    lua.globals().obj = to_lua(obj)
    result = lua.execute(script.read_text())
    return {"status": result["status"], "message": result["message"]}


def test_every_kind_has_a_health_check():
    assert {p.parent.name for p in HEALTH.glob("cells.dev/*/health.lua")} == {"Cell", "RoutingRule"}


@pytest.mark.parametrize(("script", "case"), CASES, ids=[f"{s.parent.name}-{c['inputPath']}" for s, c in CASES])
def test_health_check(script, case):
    obj = yaml.safe_load((script.parent / case["inputPath"]).read_text())
    assert run_health(script, obj) == case["healthStatus"]
