"""Catastrophic patterns are refused at the door: the same verdict in admission and in the planner (ADR 0013).

The policy (:func:`cells_operator.redos.catastrophic_problem`) is pure and tested on verdicts written here;
the rest runs the real checker (recheck under Node.js, installed by ``make recheck``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cells_formats.records import Topology
from cells_operator import redos
from cells_operator.admission import review_rule
from cells_operator.redos import REASON, Verdict, catastrophic_problem
from cells_operator.rule import RoutingRuleSpec, render_rule
from cells_operator.rulesets import PublishedRules, RuleObject, plan_rulesets

ROOT = Path(__file__).resolve().parents[2]
CATASTROPHIC = [r"^(a+)+$", r"^(a|a)*$", r"^(\w+\s?)*$", r"^(?:[a-z]+-?)*\.gitlab$", r"^(?<cell_name>(?:cell-\d+)+)+-"]


@pytest.fixture(scope="module", autouse=True)
def real_checker():
    checker = redos.find_recheck()
    assert checker is not None, "the ReDoS checker is not installed: run make recheck"
    redos.configure(checker)
    yield checker
    checker.close()
    redos.configure(redos.find_recheck())


# --------------------------------------------------------------------------------------------- policy
def test_exponential_is_refused_and_the_message_names_the_offending_part():
    verdict = Verdict("vulnerable", "exponential", hotspots=((2, 4),), attack="'a'.repeat(31) + '!'")
    message = catastrophic_problem("match.regexValue", "^(a+)+$", verdict)
    assert message is not None
    assert "exponential backtracking" in message
    assert "'a+' at 2" in message
    assert "'a'.repeat(31) + '!'" in message
    assert message.startswith("match.regexValue: /^(a+)+$/")


@pytest.mark.parametrize(
    ("verdict", "refused"),
    [
        (Verdict("safe", "linear"), False),
        (Verdict("unknown", error="timeout"), False),
        (redos.UNCHECKED, False),
        (Verdict("vulnerable", "polynomial", degree=2, hotspots=((0, 2),)), False),
        (Verdict("vulnerable", "polynomial", degree=3, hotspots=((0, 2),)), True),
        (Verdict("vulnerable", "exponential", hotspots=()), True),
    ],
)
def test_policy(verdict, refused):
    assert (catastrophic_problem("f", ".*.*", verdict) is not None) is refused


def test_hotspots_outside_the_pattern_are_not_quoted():
    message = catastrophic_problem("f", "ab", Verdict("vulnerable", "exponential", hotspots=((1, 9),)))
    assert message is not None and "the pattern" in message


# ------------------------------------------------------------------------------------- real checker
def spec(value: str, name: str | None = "^session$") -> RoutingRuleSpec:
    match = (
        {"type": "cookie", "regexName": name, "regexValue": value} if name else {"type": "path", "regexValue": value}
    )
    return RoutingRuleSpec.model_validate({"ruleset": "main", "match": match, "action": "proxy"})


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_the_planner_refuses_catastrophic_values(pattern):
    element, problem = render_rule(spec(pattern), Topology())
    assert element is None
    assert problem is not None and problem.reason == REASON
    assert problem.message.startswith(f"match.regexValue: /{pattern}/ can take exponential backtracking")


def test_a_catastrophic_name_pattern_is_refused_too():
    _, problem = render_rule(spec("^x$", name=r"^(_|_)*session$"), Topology())
    assert problem is not None and problem.reason == REASON and problem.message.startswith("match.regexName")


def test_admission_refuses_what_the_planner_refuses():
    obj = {"metadata": {"name": "r"}, "spec": {"ruleset": "main", "action": "proxy"}}
    obj["spec"]["match"] = {"type": "path", "regexValue": r"^/(a|a)*$"}
    review = review_rule(obj, None, Topology())
    assert not review.allowed
    assert review.problem is not None and review.problem.reason == REASON


def test_the_rule_is_stalled_and_nothing_is_published():
    rules = [
        RuleObject(
            "bad", "u1", {"ruleset": "main", "action": "proxy", "match": {"type": "path", "regexValue": "^(a+)+$"}}
        ),
        RuleObject("ok", "u2", {"ruleset": "main", "action": "classify", "classify": {"type": "FIRST_CELL"}}),
    ]
    plan = plan_rulesets(rules, Topology(), PublishedRules())
    assert plan.verdicts["bad"].problem is not None and plan.verdicts["bad"].problem.reason == REASON
    assert plan.verdicts["bad"].live is None
    assert "(a+)+" not in plan.data["main.json"]


def sample_patterns() -> list[str]:
    docs = yaml.safe_load_all((ROOT / "deploy" / "samples" / "routingrules.yaml").read_text())
    out = []
    for doc in docs:
        match = (doc or {}).get("spec", {}).get("match") or {}
        out += [p for p in (match.get("regexName"), match.get("regexValue")) if p]
    return out


def test_the_samples_and_gitlab_style_rules_are_safe():
    patterns = [*sample_patterns(), r"_gitlab_session(_[0-9a-f]+)?", r"^/(?<org>[a-z0-9-]+)/(?<project>[^/]+)/-/.*"]
    assert len(patterns) >= 6
    for pattern in patterns:
        assert render_rule(spec(pattern), Topology())[1] is None, pattern


def test_quadratic_is_accepted():
    # recheck calls this 2nd-degree polynomial; the router's value cap and engine bound it (ADR 0013)
    verdict = redos.verdict(r"^a*a*$")
    assert verdict.status in ("safe", "vulnerable")
    assert render_rule(spec(r"^\s*x\s*$"), Topology())[1] is None


def test_without_a_checker_patterns_are_accepted_as_unchecked():
    redos.configure(None)
    try:
        assert redos.verdict("^(a+)+$") == redos.UNCHECKED
        assert render_rule(spec("^(a+)+$"), Topology())[1] is None
    finally:
        redos.configure(redos.find_recheck())


def test_verdicts_are_cached_and_stable(real_checker):
    first = real_checker("^(a+)+$")
    assert real_checker("^(a+)+$") is first
