"""What a verdict writes given the previous status (ADR 0015): status only when its content changes,
Events only on transitions. Pure decisions, no cluster: the integration tests prove the shell."""

from __future__ import annotations

import pytest

from cells_formats.records import CellRecord, Topology
from cells_operator import cell_reconciler, rule_reconciler
from cells_operator.actions import WriteStatus
from cells_operator.cell import Problem
from cells_operator.rulesets import LiveRule, PublishedRules, RuleObject, RuleVerdict, parse_published, plan_rulesets
from cells_operator.topology import CellVerdict
from tests.support.cells import first_cell_record
from tests.support.rules import CATCH_ALL, SESSION

CELL = first_cell_record()
TOPO = Topology(cells=(CELL,))


def stored(status: dict | None) -> dict:
    """The status as the API server keeps it after the merge patch (a None value removes the key)."""
    return {k: v for k, v in (status or {}).items() if v is not None}


def live(generation: int = 1, ruleset: str = "rs") -> LiveRule:
    return LiveRule("r", "uid-r", generation, 10, ruleset, {"action": "proxy"})


def verdict(
    generation: int | None = 1,
    problem: Problem | None = None,
    position: int = 0,
    content_hash: str = "sha256:a",
    catch_all: bool = True,
    last: bool = False,
) -> RuleVerdict:
    published = live(generation) if generation is not None else None
    return RuleVerdict(
        "r",
        "rs",
        published,
        problem,
        position if published else None,
        content_hash if published else None,
        catch_all,
        last,
    )


def reasons(events) -> list[tuple[str, bool]]:
    return [(e.reason, e.warning) for e in events]


BAD = Problem("InvalidPattern", "regexValue: unbalanced parenthesis")


def test_first_publish_writes_the_status_and_posts_no_event():
    status, events = rule_reconciler.report(verdict(), 1, None)
    assert status is not None and status["liveGeneration"] == 1 and status["contentHash"] == "sha256:a"
    assert {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}["Ready"] == ("True", "Published")
    assert events == []  # the Ready condition (and its lastTransitionTime) says it


def test_same_verdict_again_writes_nothing():
    first, _ = rule_reconciler.report(verdict(), 1, None)
    assert rule_reconciler.report(verdict(), 1, stored(first)) == (None, [])


def test_unchanged_conditions_keep_their_transition_time_and_compare_equal():
    first, _ = rule_reconciler.report(verdict(), 1, None)
    old = stored(first)
    for c in old["conditions"]:
        c["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    assert rule_reconciler.report(verdict(), 1, old) == (None, [])


def test_a_ruleset_hash_changed_by_other_rules_alone_rewrites_nothing():
    first, _ = rule_reconciler.report(verdict(content_hash="sha256:a"), 1, None)
    assert rule_reconciler.report(verdict(content_hash="sha256:b"), 1, stored(first)) == (None, [])
    assert rule_reconciler.desired_status(verdict(content_hash="sha256:b"), 1, stored(first))["contentHash"] == (
        "sha256:a"
    )


def test_a_new_position_is_written_with_the_current_hash_and_no_event():
    first, _ = rule_reconciler.report(verdict(position=0, content_hash="sha256:a"), 1, None)
    status, events = rule_reconciler.report(verdict(position=1, content_hash="sha256:b"), 1, stored(first))
    assert status is not None and status["position"] == 1 and status["contentHash"] == "sha256:b"
    assert events == []


def test_a_new_generation_published_is_an_event():
    first, _ = rule_reconciler.report(verdict(generation=1), 1, None)
    status, events = rule_reconciler.report(verdict(generation=2, content_hash="sha256:b"), 2, stored(first))
    assert status is not None and status["liveGeneration"] == 2 and status["contentHash"] == "sha256:b"
    assert reasons(events) == [("Published", False)]
    assert "generation 2 published at position 0 of ruleset 'rs', replacing generation 1" in events[0].message


def test_a_problem_is_a_warning_once():
    status, events = rule_reconciler.report(verdict(generation=None, problem=BAD), 1, None)
    assert status is not None and status["liveGeneration"] is None
    assert reasons(events) == [("InvalidPattern", True)]
    assert rule_reconciler.report(verdict(generation=None, problem=BAD), 1, stored(status)) == (None, [])


def test_edit_into_a_problem_keeps_the_last_valid_version_then_the_fix_is_published():
    first, _ = rule_reconciler.report(verdict(generation=1), 1, None)
    held, events = rule_reconciler.report(verdict(generation=1, problem=BAD), 2, stored(first))
    assert held is not None and held["liveGeneration"] == 1 and held["observedGeneration"] == 2
    assert reasons(events) == [("InvalidPattern", True)]
    fixed, events = rule_reconciler.report(verdict(generation=3, content_hash="sha256:c"), 3, stored(held))
    assert fixed is not None and fixed["liveGeneration"] == 3
    assert reasons(events) == [("Published", False)]


def test_recovery_at_the_same_generation_is_an_event():
    not_routable = Problem("CellNotRoutable", "cell 'cell-2' is Offline")
    first, _ = rule_reconciler.report(verdict(), 1, None)
    held, events = rule_reconciler.report(verdict(problem=not_routable), 1, stored(first))
    assert reasons(events) == [("CellNotRoutable", True)]
    back, events = rule_reconciler.report(verdict(), 1, stored(held))
    assert back is not None and reasons(events) == [("Published", False)]
    assert "again (was CellNotRoutable)" in events[0].message


def test_a_never_valid_rule_fixed_is_an_event():
    bad, _ = rule_reconciler.report(verdict(generation=None, problem=BAD), 1, None)
    fixed, events = rule_reconciler.report(verdict(generation=2), 2, stored(bad))
    assert fixed is not None and reasons(events) == [("Published", False)]


def test_no_catch_all_warns_on_the_last_rule_when_it_is_lost_only():
    first, _ = rule_reconciler.report(verdict(catch_all=True), 1, None)
    status, events = rule_reconciler.report(verdict(catch_all=False, last=True), 1, stored(first))
    assert status is not None and reasons(events) == [("NoCatchAll", True)]
    again, _ = rule_reconciler.report(verdict(catch_all=False, last=True), 1, stored(status))
    assert again is None
    # not the last rule: its condition flips (the truth changed), but the Event is for the last one only
    status, events = rule_reconciler.report(verdict(catch_all=False, last=False), 1, stored(first))
    assert status is not None and events == []


def passes(bursts: list[list[RuleObject]]) -> dict[str, int]:
    """Reconcile passes over a growing set of rules, as the shell does: status writes per rule."""
    writes: dict[str, int] = {}
    statuses: dict[str, dict] = {}
    published = PublishedRules()
    for rules in bursts:
        plan = plan_rulesets(rules, TOPO, published)
        published = parse_published(plan.data)
        for obj in rules:
            status, _ = rule_reconciler.report(plan.verdicts[obj.name], obj.generation, statuses.get(obj.name))
            if status is not None:
                statuses[obj.name] = stored(status)
                writes[obj.name] = writes.get(obj.name, 0) + 1
    return writes


def burst(n: int, catch_all_first: bool) -> list[RuleObject]:
    rules = [RuleObject(f"r{i:03}", f"uid-{i}", {**SESSION, "priority": i}) for i in range(n)]
    catch_all = RuleObject("zz-catch-all", "uid-zz", CATCH_ALL)
    return [catch_all, *rules] if catch_all_first else [*rules, catch_all]


def test_a_burst_seen_in_three_passes_writes_each_status_once():
    rules = burst(30, catch_all_first=True)
    writes = passes([rules[:10], rules[:20], rules])
    # The catch-all (priority 1000) moves down as rules are added before it: its position is rewritten
    # in every pass, because it really changed. Every other rule keeps its position: one write each.
    assert writes == {obj.name: (3 if obj.name == "zz-catch-all" else 1) for obj in rules}


def test_rules_published_before_their_catch_all_arrives_are_written_twice():
    # The known remaining cost (ADR 0015): RulesetComplete=False was true when they were published.
    rules = burst(30, catch_all_first=False)
    writes = passes([rules[:10], rules[:20], rules])
    assert writes == {obj.name: (2 if i < 20 else 1) for i, obj in enumerate(rules)}


def passes_in_a_burst(bursts: list[list[RuleObject]], in_burst: list[bool]) -> dict[str, int]:
    """As :func:`passes`, through ``plan_report``, each pass marked as running in a burst or not."""
    writes: dict[str, int] = {}
    statuses: dict[str, dict] = {}
    published = PublishedRules()
    for rules, bursting in zip(bursts, in_burst, strict=True):
        plan = plan_rulesets(rules, TOPO, published)
        published = parse_published(plan.data)
        for obj in rules:
            manifest = {"metadata": {"name": obj.name, "generation": 1}, "status": statuses.get(obj.name)}
            for action in rule_reconciler.plan_report(manifest, plan.verdicts[obj.name], bursting):
                if isinstance(action, WriteStatus):
                    statuses[obj.name] = stored(action.status)
                    writes[obj.name] = writes.get(obj.name, 0) + 1
    return writes


def test_a_burst_whose_catch_all_comes_last_writes_each_status_once_when_its_passes_hold_the_first_status():
    # ADR 0015: passes during the burst publish the rules but hold their first status while the ruleset has
    # no catch-all; the pass after the burst writes each once, RulesetComplete=True.
    rules = burst(30, catch_all_first=False)
    writes = passes_in_a_burst([rules[:10], rules[:20], rules], [True, True, False])
    assert writes == {obj.name: 1 for obj in rules}


def test_a_burst_into_a_complete_ruleset_is_reported_while_it_arrives():
    rules = burst(30, catch_all_first=True)
    writes = passes_in_a_burst([rules[:10], rules[:20], rules], [True, True, False])
    assert writes == {obj.name: (3 if obj.name == "zz-catch-all" else 1) for obj in rules}
    assert passes_in_a_burst([rules[:10]], [True]) == {obj.name: 1 for obj in rules[:10]}


def test_a_burst_holds_only_the_first_status_of_a_published_rule_without_a_catch_all():
    incomplete = verdict(catch_all=False)
    assert rule_reconciler.deferred({"metadata": {"name": "r"}}, incomplete)
    assert rule_reconciler.plan_report({"metadata": {"name": "r"}}, incomplete, in_burst=True) == []
    assert rule_reconciler.plan_report({"metadata": {"name": "r"}}, incomplete, in_burst=False)  # after the burst
    assert not rule_reconciler.deferred({"metadata": {"name": "r"}}, verdict())  # complete: written at once
    problem = verdict(1, BAD, catch_all=False)  # its last valid version stays published
    assert not rule_reconciler.deferred({"metadata": {"name": "r"}}, problem)  # a problem: written at once
    reported = stored(rule_reconciler.report(verdict(), 1, None)[0])
    assert not rule_reconciler.deferred({"metadata": {"name": "r"}, "status": reported}, incomplete)


def cell_verdict(problem: Problem | None = None, record: CellRecord | None = CELL) -> CellVerdict:
    return CellVerdict("cell-1", record, problem)


def test_cell_registered_writes_its_status_once_and_events_only_for_problems():
    first, events = cell_reconciler.report(cell_verdict(), 1, None)
    assert first is not None and events == []  # "Registered" comes from the records change, not from here
    assert cell_reconciler.report(cell_verdict(), 1, stored(first)) == (None, [])


@pytest.mark.parametrize("record", [CELL, None])
def test_cell_problem_is_a_warning_on_its_first_report_only(record):
    problem = Problem("DuplicateId", "id 1 is already registered by cell 'a'")
    status, events = cell_reconciler.report(cell_verdict(problem, record), 1, None)
    assert status is not None and reasons(events) == [("DuplicateId", True)]
    assert cell_reconciler.report(cell_verdict(problem, record), 1, stored(status)) == (None, [])
