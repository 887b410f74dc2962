"""Property-based tests (hypothesis) of the pure core: arbitrary Cells and RoutingRules never crash the
planners, renderers or validators; accepted output always parses; allocation invariants always hold."""

from __future__ import annotations

import itertools
import json
import tomllib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cells_dataplane.routing import load_ruleset
from cells_formats.records import Topology, parse_topology_json, render_config_toml, render_topology_json
from cells_formats.router_format import parse_ruleset
from cells_operator.admission import review_cell
from cells_operator.rulesets import RuleObject, parse_published, plan_rulesets
from cells_operator.topology import CellObject, plan_topology

SMALL = 1_000
ids = st.integers(min_value=-2, max_value=12)
values = st.one_of(st.none(), st.integers(-5, 2**64), st.text(max_size=8), st.booleans())
range_spec = st.fixed_dictionaries({"minval": st.integers(-5, 60 * SMALL), "maxval": st.integers(-5, 60 * SMALL)})
cell_spec = st.fixed_dictionaries(
    {"id": st.one_of(ids, values)},
    optional={
        "address": st.sampled_from(["a:1", "b.example:443", "[::1]:80", "bad", "x:99999", "10.0.0.1:8080"]),
        "sessionPrefix": st.sampled_from(["cell-1", "cell-2", "Bad_Prefix", "x", ""]),
        "sequenceRanges": st.lists(range_spec, max_size=3),
        "sequenceSize": st.sampled_from([1, SMALL, 10**11, 2**62, 0]),
        "skipRangeValidation": st.booleans(),
        "state": st.sampled_from(["Active", "Draining", "Offline", "Gone"]),
        "firstCell": st.booleans(),
        "ring": st.one_of(st.none(), st.integers(0, 5)),
    },
)
cells = st.lists(
    st.tuples(st.sampled_from(list("abcdefgh")), cell_spec, st.booleans(), st.sampled_from(["1", "2", "3"])),
    max_size=8,
    unique_by=lambda t: t[0],
)


def as_objects(drawn) -> list[CellObject]:
    return [CellObject(name=n, uid=f"uid-{n}", spec=s, deleting=d, created=c) for n, s, d, c in drawn]


def invariants(topology: Topology) -> None:
    live = [r for c in topology.cells for r in c.sequence_ranges]
    everything = sorted(live + [r.as_range() for r in topology.retired_ranges], key=lambda r: r.minval)
    for a, b in itertools.pairwise(everything):
        assert a.maxval < b.minval, f"overlap {a} {b}"
    for r in everything:
        assert r.problem() is None
    assert len({c.id for c in topology.cells}) == len(topology.cells)
    assert len({c.session_prefix for c in topology.cells}) == len(topology.cells)
    assert sum(c.first_cell for c in topology.cells) <= 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=cells, second=cells)
def test_planning_never_crashes_and_keeps_invariants(first, second):
    plan1 = plan_topology(Topology(), as_objects(first))
    invariants(plan1.records)
    plan2 = plan_topology(plan1.records, as_objects(second))
    invariants(plan2.records)
    # allocated ranges never move or shrink; retired ranges never come back
    for before in plan1.records.cells:
        after = plan2.records.record(before.name)
        if after is not None and after.uid == before.uid:
            assert set(before.sequence_ranges) <= set(after.sequence_ranges)
    assert set(plan1.records.retired_ranges) <= set(plan2.records.retired_ranges)
    # accepted output always parses, in both formats
    assert parse_topology_json(render_topology_json(plan2.records)) == plan2.records
    toml = tomllib.loads(render_config_toml(plan2.records))
    assert len(toml.get("cells", [])) == len(plan2.records.cells)  # every state stays in the record
    # planning is deterministic and idempotent
    again = plan_topology(plan2.records, as_objects(second))
    assert again.records == plan2.records


patterns = st.one_of(
    st.sampled_from([r"^(?<cell_name>cell-\d+)-.*", r"^(?<n>\d+)$", "(", "[z-a]", r"((a)|b)+", "", ".*"]),
    st.text(alphabet="ab()[]?*+{}^$|\\<>-nd", max_size=10),
)
rule_spec = st.fixed_dictionaries(
    {"ruleset": st.sampled_from(["s", "t", "Bad"]), "action": st.sampled_from(["classify", "proxy", "nope"])},
    optional={
        "priority": st.integers(-3, 3),
        "match": st.fixed_dictionaries(
            {"type": st.sampled_from(["cookie", "header", "path", "query"]), "regexValue": patterns},
            optional={"regexName": patterns},
        ),
        "classify": st.fixed_dictionaries(
            {"type": st.sampled_from(["SESSION_PREFIX", "CELL_ID", "FIRST_CELL", "X"])},
            optional={"value": st.sampled_from(["${cell_name}", "${n}", "${x}", "2", "two", "$x", ""])},
        ),
        "proxy": st.fixed_dictionaries(
            {}, optional={"cellRef": st.sampled_from(["c1", "c2", "zz"]), "address": st.sampled_from(["a:1", "bad"])}
        ),
    },
)
rules = st.lists(st.tuples(st.sampled_from(list("pqrstuvw")), rule_spec), max_size=8, unique_by=lambda t: t[0])
TOPOLOGY = plan_topology(
    Topology(),
    [
        CellObject("c1", "u1", {"id": 1, "address": "a:1", "firstCell": True}),
        CellObject("c2", "u2", {"id": 2, "address": "b:2", "state": "Offline"}),
    ],
).records


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=rules, second=rules)
def test_compiling_rules_never_crashes_and_output_always_loads(first, second):
    objs1 = [RuleObject(n, f"uid-{n}", s, 1) for n, s in first]
    plan1 = plan_rulesets(objs1, TOPOLOGY, parse_published({}))
    objs2 = [RuleObject(n, f"uid-{n}", s, 2) for n, s in second]
    plan2 = plan_rulesets(objs2, TOPOLOGY, parse_published(plan1.data))
    for plan in (plan1, plan2):
        for key, text in plan.data.items():
            if key.endswith(".json") and key != "cells-operator.index.json":
                parse_ruleset(text)  # the router's format model accepts it
                load_ruleset(text)  # and the router compiles every pattern
        parse_published(plan.data)
        index = json.loads(plan.data.get("cells-operator.index.json", "{}"))
        for verdict in plan.verdicts.values():
            assert (verdict.live is None) == (verdict.position is None)
            if verdict.live is not None:  # its position is where the published index has this rule
                assert verdict.ruleset is not None and verdict.position is not None
                assert index[verdict.ruleset][verdict.position]["uid"] == verdict.live.uid
    # a rule that stays invalid keeps exactly its previously published element
    for name, _ in second:
        v2 = plan2.verdicts[name]
        v1 = plan1.verdicts.get(name)
        if v2.problem is not None and v2.live is not None and v1 is not None and v1.live is not None:
            assert v2.live.element == v1.live.element
    json.dumps([v.__dict__ for v in plan2.verdicts.values()], default=str)


def as_api(name: str, spec: dict, created: str, uid: str | None = None) -> dict:
    meta = {"name": name, "uid": uid or f"uid-{name}", "creationTimestamp": created, "generation": 1}
    return {"metadata": meta, "spec": spec}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(existing=cells, candidate=cell_spec, name=st.sampled_from(list("abcdefghij")))
def test_admission_and_the_status_path_never_disagree_on_a_create(existing, candidate, name):
    """What the webhook admits, the status path registers; what it refuses, the status path would have
    stalled with the same reason -- whatever the namespace held already."""
    existing = [e for e in existing if e[0] != name and not e[2]]
    records = plan_topology(Topology(), as_objects(existing)).records
    stored = [as_api(n, s, c) for n, s, _, c in existing]
    review = review_cell(as_api(name, candidate, "9", uid=""), None, stored, records)
    created = CellObject(name=name, uid="uid-new", spec=candidate, created="9")
    verdict = plan_topology(records, [*as_objects(existing), created]).verdicts[name]
    assert (review.problem.reason if review.problem else None) == (verdict.problem.reason if verdict.problem else None)
