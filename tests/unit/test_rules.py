"""RoutingRule validation, rendering, ordering and the last-valid-version policy, without a cluster."""

import json

import pytest

from cells_formats.fields import CellState, SequenceRange
from cells_formats.records import CellRecord, Topology
from cells_operator.rule import Dialect, RoutingRuleSpec, render_rule
from cells_operator.rulesets import INDEX_KEY, PublishedRules, RuleObject, parse_published, plan_rulesets
from tests.support.rules import CATCH_ALL, FORCE, SESSION


def rec(name, id_, state=CellState.ACTIVE, address=None):
    return CellRecord(
        name=name,
        uid=name,
        id=id_,
        address=address or f"{name}:443",
        session_prefix=f"cell-{id_}",
        state=state,
        sequence_ranges=(SequenceRange(minval=id_ * 10, maxval=id_ * 10 + 9),),
    )


TOPO = Topology(cells=(rec("cell-1", 1), rec("cell-2", 2), rec("gone", 3, state=CellState.OFFLINE)))


def render(spec, topology=TOPO, **kwargs):
    return render_rule(RoutingRuleSpec.model_validate(spec), topology, **kwargs)


def reason(spec, topology=TOPO):
    element, problem = render(spec, topology)
    assert (element is None) != (problem is None)
    return problem.reason if problem else None


def test_session_rule_renders_in_router_format():
    """The 2024 dialect, on request (ADR 0014): snake_case match fields, no id."""
    element, problem = render(SESSION, dialect=Dialect.V2024)
    assert problem is None
    assert element == {
        "match": {
            "type": "cookie",
            "regex_name": "^_gitlab_session(_[0-9a-f]+)?$",
            "regex_value": r"^(?<cell_name>cell-\d+)-.*",
        },
        "action": "classify",
        "classify": {"type": "SESSION_PREFIX", "value": "${cell_name}"},
    }


def test_catch_all_and_proxy_rendering():
    assert render(CATCH_ALL)[0] == {"action": "classify", "classify": {"type": "FIRST_CELL"}}
    proxy = {"ruleset": "passthrough", "action": "proxy", "proxy": {"cellRef": "cell-2"}}
    assert render(proxy)[0] == {"action": "proxy", "proxy": {"address": "cell-2:443"}}
    literal = {"ruleset": "passthrough", "action": "proxy", "proxy": {"address": "[::1]:8080"}}
    assert render(literal)[0] == {"action": "proxy", "proxy": {"address": "[::1]:8080"}}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"match": {"type": "cookie", "regexValue": "x"}}, "MissingRegexName"),
        ({"match": {"type": "header", "regexName": "(", "regexValue": "x"}}, "InvalidPattern"),
        ({"match": {"type": "cookie", "regexName": "a", "regexValue": "[z-a]"}}, "InvalidPattern"),
        ({"match": {"type": "path", "regexName": "a", "regexValue": "/x"}}, "RegexNameNotAllowed"),
        ({"match": {"type": "path", "regexValue": "((a)|b)+"}}, "UnsupportedPattern"),
        ({"classify": {"type": "SESSION_PREFIX", "value": "${nope}"}}, "UnknownInterpolation"),
        ({"classify": {"type": "SESSION_PREFIX", "value": "$cell_name"}}, "InvalidInterpolation"),
        ({"classify": {"type": "SESSION_PREFIX"}}, "MissingValue"),
        ({"classify": {"type": "FIRST_CELL", "value": "x"}}, "ValueNotAllowed"),
        ({"classify": {"type": "CELL_ID", "value": "two"}}, "InvalidCellId"),
        ({"classify": None}, "MissingClassify"),
        ({"proxy": {"address": "a:1"}}, "ConflictingAction"),
        ({"ruleset": "Bad Name"}, "InvalidRuleset"),
    ],
)
def test_invalid_classify_rules(change, expected):
    assert reason({**SESSION, **change}) == expected


def test_literal_cell_id_ok():
    assert reason({**SESSION, "classify": {"type": "CELL_ID", "value": "2"}}) is None


@pytest.mark.parametrize(
    ("proxy", "expected"),
    [
        ({"cellRef": "nope"}, "CellNotFound"),
        ({"cellRef": "gone"}, "CellNotRoutable"),
        ({"cellRef": "cell-1", "address": "a:1"}, "InvalidProxy"),
        ({"address": "host:0"}, "InvalidAddress"),
        ({"address": "fe80::1"}, "InvalidAddress"),
    ],
)
def test_invalid_proxy_rules(proxy, expected):
    assert reason({"ruleset": "passthrough", "action": "proxy", "proxy": proxy}) == expected


def rule(name, spec, generation=1):
    return RuleObject(name=name, uid=f"uid-{name}", spec=spec, generation=generation)


def ruleset(plan, name="session_token"):
    return json.loads(plan.data[f"{name}.json"])


def test_order_is_priority_then_name_and_output_deterministic():
    rules = [
        rule("z-catch", CATCH_ALL),
        rule("b-session", SESSION),
        rule("a-force", FORCE),
        rule("a-session", {**SESSION, "priority": 20}),
    ]
    plan = plan_rulesets(rules, TOPO, PublishedRules())
    order = [r.name for r in sorted(plan.verdicts.values(), key=lambda v: v.position)]
    assert order == ["a-force", "a-session", "b-session", "z-catch"]
    assert plan_rulesets(list(reversed(rules)), TOPO, PublishedRules()).data == plan.data
    assert all(v.catch_all for v in plan.verdicts.values())
    assert plan.hashes["session_token"].startswith("sha256:")


def test_missing_catch_all_is_published_but_flagged():
    plan = plan_rulesets([rule("s", SESSION), rule("f", FORCE)], TOPO, PublishedRules())
    assert len(ruleset(plan)) == 2
    assert not plan.verdicts["s"].catch_all and plan.verdicts["s"].last_in_ruleset
    assert not plan.verdicts["f"].last_in_ruleset


def test_invalid_rule_never_enters_and_last_valid_version_stays():
    plan1 = plan_rulesets([rule("s", SESSION), rule("c", CATCH_ALL)], TOPO, PublishedRules())
    published = parse_published(plan1.data)
    broken = {**SESSION, "match": {**SESSION["match"], "regexValue": "(?<cell_name>unclosed"}}
    plan2 = plan_rulesets([rule("s", broken, generation=2), rule("c", CATCH_ALL)], TOPO, published)
    assert plan2.data == plan1.data  # generation 1 stays published byte for byte
    v = plan2.verdicts["s"]
    assert v.problem.reason == "InvalidPattern" and v.live.generation == 1 and v.position == 0
    # a rule that never was valid is simply absent
    plan3 = plan_rulesets([rule("new", broken), rule("c", CATCH_ALL)], TOPO, published)
    assert plan3.verdicts["new"].live is None
    assert ruleset(plan3) == [{"id": "c", "action": "classify", "classify": {"type": "FIRST_CELL"}}]


def test_cell_changes_flow_into_proxy_rules():
    proxy = {"ruleset": "passthrough", "action": "proxy", "proxy": {"cellRef": "cell-2"}}
    plan1 = plan_rulesets([rule("p", proxy)], TOPO, PublishedRules())
    moved = Topology(cells=(rec("cell-1", 1), rec("cell-2", 2, address="new:1")))
    plan2 = plan_rulesets([rule("p", proxy)], moved, parse_published(plan1.data))
    assert ruleset(plan2, "passthrough")[0]["proxy"]["address"] == "new:1"
    offline = Topology(cells=(rec("cell-1", 1), rec("cell-2", 2, state=CellState.OFFLINE, address="new:1")))
    plan3 = plan_rulesets([rule("p", proxy)], offline, parse_published(plan2.data))
    assert plan3.verdicts["p"].problem.reason == "CellNotRoutable"
    assert ruleset(plan3, "passthrough")[0]["proxy"]["address"] == "new:1"  # last valid kept


def test_deleted_rule_leaves_and_empty_ruleset_key_goes():
    plan1 = plan_rulesets([rule("s", SESSION), rule("p", {**CATCH_ALL, "ruleset": "other"})], TOPO, PublishedRules())
    plan2 = plan_rulesets([rule("s", SESSION)], TOPO, parse_published(plan1.data))
    assert "other.json" not in plan2.data and "session_token.json" in plan2.data
    assert set(json.loads(plan2.data[INDEX_KEY])) == {"session_token"}


def test_too_large_change_keeps_previous_version_whole():
    small = [rule(f"r{i:03}", {**SESSION, "priority": i}) for i in range(5)] + [rule("zz", CATCH_ALL)]
    plan1 = plan_rulesets(small, TOPO, PublishedRules(), limit=20_000)
    assert not plan1.too_large
    big = small + [rule(f"x{i:03}", {**SESSION, "priority": 100 + i}) for i in range(100)]
    plan2 = plan_rulesets(big, TOPO, parse_published(plan1.data), limit=20_000)
    assert plan2.too_large == ["session_token"]
    assert plan2.data == plan1.data
    assert plan2.verdicts["x000"].problem.reason == "RulesetTooLarge"
    assert plan2.verdicts["r000"].problem is None  # unchanged rules stay Ready


def test_first_publish_too_large_publishes_nothing_for_that_ruleset():
    big = [rule(f"x{i:03}", {**SESSION, "priority": i}) for i in range(100)]
    plan = plan_rulesets(big, TOPO, PublishedRules(), limit=5_000)
    assert "session_token.json" not in plan.data
    assert all(v.problem.reason == "RulesetTooLarge" for v in plan.verdicts.values())


def test_unreadable_published_output_raises():
    from cells_operator.rulesets import RulesError

    with pytest.raises(RulesError):
        parse_published({INDEX_KEY: '{"s": [{"name": "a"}]}', "s.json": "[]"})
