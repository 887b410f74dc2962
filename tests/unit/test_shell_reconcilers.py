"""The reconcilers, end to end against an in-memory API (tests/support/fake_kube.py): what each pass
writes, that a converged namespace costs no write, and what happens on each answer the API server can
give. The integration tier proves the same against a real kube-apiserver."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from cells_formats.router_format import Dialect
from cells_operator.base_config import BASE_CONFIG_NOT_FOUND
from cells_operator.cell_reconciler import PUBLISH_FAILED, RECORDS_TOO_LARGE, RECORDS_UNREADABLE
from cells_operator.config import FINALIZER, OperatorConfig
from cells_operator.kube import Conflict
from cells_operator.leader import NotLeader
from cells_operator.metrics import OperatorMetrics
from cells_operator.reconciler import NamespaceReconciler
from cells_operator.rule_reconciler import RouterConfigTooLarge
from cells_operator.rulesets import RuleObject
from tests.bench.configmap_limit import QUOTED_HELD_AT, typical_rules
from tests.support.cells import cell_manifest, ready_condition
from tests.support.fake_kube import MAX_CONFIGMAP_BYTES, FakeKube
from tests.support.rules import CATCH_ALL, SESSION, rule_manifest

NS = "ns"
CONFIG = OperatorConfig(report_concurrency=1, conflict_retries=4)
TOPOLOGY, ROUTER = CONFIG.topology_configmap, CONFIG.router_configmap


def add_cell(kube: FakeKube, name: str, id_: int, **spec) -> None:
    kube.add("cells", cell_manifest(name, id_, metadata={"namespace": NS}, **spec))


def add_rule(kube: FakeKube, name: str, spec: dict) -> None:
    kube.add("routingrules", {**rule_manifest(name, spec), "metadata": {"name": name, "namespace": NS}})


def proxy_to(cell: str, priority: int = 10) -> dict:
    return {"ruleset": "session_token", "priority": priority, "action": "proxy", "proxy": {"cellRef": cell}}


def reason(kube: FakeKube, plural: str, name: str) -> tuple[str, str]:
    ready = ready_condition(kube.get(plural, NS, name))
    return ready.get("status"), ready.get("reason")


def verbs(kube: FakeKube) -> list[tuple[str, str]]:
    out = list(kube.requests)
    kube.requests.clear()
    return out


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def reconcile(kube):
    return NamespaceReconciler(kube, CONFIG, OperatorMetrics())


def test_an_empty_namespace_creates_nothing(kube, reconcile):
    assert reconcile(NS) is False
    assert kube.requests == [] and kube.configmaps == {}


def test_new_cells_and_rules_are_published_then_reported_and_a_second_pass_writes_nothing(kube, reconcile):
    add_cell(kube, "cell-1", 1)
    add_cell(kube, "cell-2", 2)
    add_rule(kube, "to-cell-2", proxy_to("cell-2"))
    add_rule(kube, "catch-all", CATCH_ALL)
    assert reconcile(NS) is True
    requests = verbs(kube)
    # the records first, and only then does any Cell say Ready (a status never claims what is not published)
    assert requests[0] == ("write_configmap", TOPOLOGY)
    assert requests.index(("write_configmap", ROUTER)) > requests.index(("patch_status", "cells/cell-2"))
    for name in ("cell-1", "cell-2"):
        assert reason(kube, "cells", name) == ("True", "Registered")
        assert kube.get("cells", NS, name)["metadata"]["finalizers"] == [FINALIZER]
        assert kube.events_for(name) == [("Normal", "Registered")]
    for name in ("to-cell-2", "catch-all"):
        assert reason(kube, "routingrules", name) == ("True", "Published")
        assert kube.events_for(name) == []  # ADR 0015: the first publish is no Event
    assert reconcile(NS) is True
    assert verbs(kube) == []  # converged: not one write
    assert reconcile.metrics.registry.get_sample_value("cells_operator_api_writes_total") == len(requests)


def test_a_status_is_written_when_it_changes_only(kube, reconcile):
    add_cell(kube, "cell-1", 1)
    reconcile(NS)
    verbs(kube)
    kube.edit("cells", NS, "cell-1", lambda o: o["metadata"].setdefault("labels", {}).update(team="a"))
    reconcile(NS)
    assert verbs(kube) == []  # a label is no change to what is published or reported
    kube.edit("cells", NS, "cell-1", lambda o: o["spec"].update(state="Draining"))
    reconcile(NS)
    assert ("patch_status", "cells/cell-1") in verbs(kube)
    assert kube.get("cells", NS, "cell-1")["status"]["observedGeneration"] == 2


def test_a_conflict_on_the_records_is_replanned_in_the_same_pass(kube, reconcile):
    add_cell(kube, "cell-1", 1)
    reconcile(NS)
    add_cell(kube, "cell-2", 2)
    current = kube.read_configmap(NS, TOPOLOGY)
    # another replica rewrites the records between our read and our write
    kube.before_configmap_write.append(
        lambda: kube.put_configmap(NS, TOPOLOGY, current.data, {**current.annotations, "touched": "yes"})
    )
    reconcile(NS)
    assert (
        reconcile.metrics.registry.get_sample_value("cells_operator_publish_conflicts_total", {"output": "records"})
        == 1
    )
    assert reason(kube, "cells", "cell-2") == ("True", "Registered")
    assert kube.read_configmap(NS, TOPOLOGY).annotations["touched"] == "yes"  # theirs kept, ours merged over


def test_a_conflict_on_a_finalizer_fails_the_pass_and_the_next_pass_replans(kube, reconcile):
    """The finalizer patch carries the resourceVersion that was read: an edit in between is a 409, the
    pass fails (the loop retries it), and the next pass plans from a fresh read."""
    add_cell(kube, "cell-1", 1)
    stale = kube.list_objects("cells", NS)
    kube.edit("cells", NS, "cell-1", lambda o: o["metadata"].setdefault("labels", {}).update(team="a"))
    with pytest.raises(Conflict):
        reconcile.cells.reconcile(NS, stale, [])
    reconcile(NS)
    assert kube.get("cells", NS, "cell-1")["metadata"]["finalizers"] == [FINALIZER]
    assert reason(kube, "cells", "cell-1") == ("True", "Registered")


def test_deleting_a_cell_retires_it_then_releases_its_finalizer(kube, reconcile):
    add_cell(kube, "cell-1", 1)
    add_cell(kube, "cell-2", 2)
    reconcile(NS)
    kube.delete("cells", NS, "cell-2")
    reconcile(NS)
    assert kube.get("cells", NS, "cell-2") is None  # last finalizer removed: the API server deletes it
    topology = json.loads(kube.read_configmap(NS, TOPOLOGY).data["topology.json"])
    assert [c["name"] for c in topology["cells"]] == ["cell-1"]
    assert kube.events_for("cell-2")[-1] == ("Normal", "Deregistered")


def test_a_cell_a_rule_proxies_to_keeps_its_finalizer_until_the_rule_goes(kube, reconcile):
    add_cell(kube, "cell-1", 1)
    add_cell(kube, "cell-2", 2)
    add_rule(kube, "to-cell-2", proxy_to("cell-2"))
    reconcile(NS)
    kube.delete("cells", NS, "cell-2")
    reconcile(NS)
    blocked = kube.get("cells", NS, "cell-2")
    assert blocked["metadata"]["finalizers"] == [FINALIZER]
    assert reason(kube, "cells", "cell-2")[0] == "False"
    kube.delete("routingrules", NS, "to-cell-2")
    reconcile(NS)
    assert kube.get("cells", NS, "cell-2") is None


def test_a_namespace_being_deleted_releases_every_finalizer(kube, reconcile):
    """The namespace controller deleted the ConfigMaps; re-creating the records is refused (403 "being
    terminated"): nothing is left to protect, so the Cells must not hold the namespace."""
    add_cell(kube, "cell-1", 1)
    add_rule(kube, "catch-all", CATCH_ALL)
    reconcile(NS)
    kube.terminate_namespace(NS)
    assert kube.get("cells", NS, "cell-1")["metadata"]["deletionTimestamp"]
    verbs(kube)
    reconcile(NS)
    assert kube.get("cells", NS, "cell-1") is None
    assert verbs(kube) == [("write_configmap", TOPOLOGY), ("set_finalizers", "cells/cell-1")]
    assert kube.configmaps == {}  # nothing created in the dying namespace
    assert reconcile(NS) is False


def test_a_create_refused_while_a_cell_still_lives_is_an_error_not_a_release(kube, reconcile):
    add_cell(kube, "cell-1", 1)
    kube.terminating.add(NS)  # e.g. a Cell created just before its namespace was deleted
    with pytest.raises(ApiException) as exc:
        reconcile(NS)
    assert exc.value.status == 403
    assert kube.get("cells", NS, "cell-1").get("status") is None
    assert (
        reconcile.metrics.registry.get_sample_value(
            "controller_runtime_reconcile_errors_total", {"controller": "namespace"}
        )
        == 1
    )


def huge_base(size: int = MAX_CONFIGMAP_BYTES) -> str:
    """A valid base config.toml of exactly ``size`` bytes: it fits its own ConfigMap, not the records."""
    tail = "\n[server]\nport = 8080\n"
    return "# " + "x" * (size - len(tail) - 2) + tail


def stalled_reason(kube: FakeKube, name: str) -> tuple[str, str, str]:
    conds = {c["type"]: c for c in kube.get("cells", NS, name)["status"]["conditions"]}
    return conds["Ready"]["status"], conds["Stalled"]["status"], conds["Ready"]["reason"]


def test_oversized_records_stall_every_cell_and_the_last_published_records_stay(kube, caplog):
    """A base config.toml that fits its own ConfigMap but not the records (base plus cells): decided
    before writing (no 422, no request), the pass goes on, every Cell is Stalled with RecordsTooLarge and
    the size and the limit, one Warning per Cell and one log line on the transition, not on every pass."""
    config = OperatorConfig(report_concurrency=1, base_config_configmap="base")
    kube.put_configmap(NS, "base", {"config.toml": "[server]\nport = 8080\n"})
    add_cell(kube, "cell-1", 1)
    reconcile = NamespaceReconciler(kube, config, OperatorMetrics())
    reconcile(NS)
    published = kube.read_configmap(NS, TOPOLOGY)
    kube.put_configmap(NS, "base", {"config.toml": huge_base()})
    verbs(kube)

    caplog.clear()
    assert reconcile(NS) is True  # not an error to retry with backoff: a person must act
    assert kube.read_configmap(NS, TOPOLOGY) == published
    assert ("write_configmap", TOPOLOGY) not in verbs(kube)
    assert stalled_reason(kube, "cell-1") == ("False", "True", RECORDS_TOO_LARGE)
    message = ready_condition(kube.get("cells", NS, "cell-1"))["message"]
    assert "over the ConfigMap limit of 1,048,576 bytes" in message and "would be 1,04" in message
    assert "previously registered version stays published" in message
    assert kube.get("cells", NS, "cell-1")["status"]["registeredId"] == 1  # what is published, still
    assert kube.events_for("cell-1")[-1] == ("Warning", RECORDS_TOO_LARGE)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "records of ns not published" in warnings[0] and "1 MiB" in warnings[0]
    samples = reconcile.metrics.registry.get_sample_value
    assert samples("cells_operator_publish_failures_total", {"namespace": NS, "output": "records"}) == 1
    stalled = {"namespace": NS, "kind": "Cell", "reason": RECORDS_TOO_LARGE}
    assert samples("cells_operator_stalled_resources", stalled) == 1

    caplog.clear()
    reconcile(NS)  # the next pass: nothing new to say or write
    assert verbs(kube) == [] and [r for r in caplog.records if r.levelname == "WARNING"] == []

    kube.put_configmap(NS, "base", {"config.toml": "[server]\nport = 8080\n"})
    reconcile(NS)
    assert reason(kube, "cells", "cell-1") == ("True", "Registered")
    assert samples("cells_operator_stalled_resources", stalled) == 0


def test_a_new_cell_over_the_limit_is_not_registered_and_says_so(kube):
    config = OperatorConfig(report_concurrency=1, base_config_configmap="base")
    kube.put_configmap(NS, "base", {"config.toml": huge_base()})
    add_cell(kube, "cell-1", 1)
    NamespaceReconciler(kube, config, OperatorMetrics())(NS)
    assert kube.read_configmap(NS, TOPOLOGY).resource_version is None  # nothing was ever published
    assert stalled_reason(kube, "cell-1") == ("False", "True", RECORDS_TOO_LARGE)
    assert "not registered" in ready_condition(kube.get("cells", NS, "cell-1"))["message"]


def test_rules_are_rendered_against_the_records_that_stay_published(kube):
    """Held-back records are not what the data plane serves: a rule proxying to a Cell whose registration
    is held back is not published against an address that was never published."""
    config = OperatorConfig(report_concurrency=1, base_config_configmap="base")
    kube.put_configmap(NS, "base", {"config.toml": "[server]\nport = 8080\n"})
    add_cell(kube, "cell-1", 1)
    reconcile = NamespaceReconciler(kube, config, OperatorMetrics())
    reconcile(NS)
    kube.put_configmap(NS, "base", {"config.toml": huge_base()})
    add_cell(kube, "cell-2", 2)
    add_rule(kube, "to-cell-2", proxy_to("cell-2"))
    reconcile(NS)
    assert stalled_reason(kube, "cell-2") == ("False", "True", RECORDS_TOO_LARGE)
    assert reason(kube, "routingrules", "to-cell-2") == ("False", "CellNotFound")


def test_a_missing_base_config_stalls_every_cell_with_one_warning_and_publishes_nothing(kube):
    reconcile = NamespaceReconciler(kube, OperatorConfig(report_concurrency=1, base_config_configmap="base"))
    add_cell(kube, "cell-1", 1)
    with pytest.raises(RuntimeError, match="not published"):
        reconcile(NS)
    assert reason(kube, "cells", "cell-1") == ("False", BASE_CONFIG_NOT_FOUND)
    assert kube.events_for("cell-1") == [("Warning", BASE_CONFIG_NOT_FOUND)]
    verbs(kube)
    with pytest.raises(RuntimeError):
        reconcile(NS)
    assert verbs(kube) == []  # the same problem again: no status write, no second Warning
    assert kube.configmaps == {}  # nothing published


def test_unreadable_records_stall_the_cells(kube, reconcile):
    kube.put_configmap(NS, TOPOLOGY, {"topology.json": "{not json"})
    add_cell(kube, "cell-1", 1)
    with pytest.raises(RuntimeError):
        reconcile(NS)
    assert reason(kube, "cells", "cell-1") == ("False", RECORDS_UNREADABLE)
    assert kube.events_for("cell-1") == []
    assert kube.read_configmap(NS, TOPOLOGY).data == {"topology.json": "{not json"}  # left for a person


def test_endless_conflicts_leave_the_cells_reconciling(kube, reconcile):
    add_cell(kube, "cell-1", 1)
    for i in range(CONFIG.conflict_retries):
        kube.before_configmap_write.append(lambda i=i: kube.put_configmap(NS, TOPOLOGY, {}, {"other": str(i)}))
    with pytest.raises(RuntimeError):
        reconcile(NS)
    assert reason(kube, "cells", "cell-1") == ("False", PUBLISH_FAILED)
    cell = kube.get("cells", NS, "cell-1")
    assert {c["type"]: c["status"] for c in cell["status"]["conditions"]}["Reconciling"] == "True"
    assert "finalizers" not in cell["metadata"]  # nothing was published for it: nothing to protect yet


def test_a_rule_edited_into_a_problem_warns_once_and_keeps_its_last_valid_version(kube, reconcile):
    add_cell(kube, "cell-1", 1)
    add_rule(kube, "to-cell-1", proxy_to("cell-1"))
    add_rule(kube, "catch-all", CATCH_ALL)
    reconcile(NS)
    router_before = kube.read_configmap(NS, ROUTER).data
    kube.edit("routingrules", NS, "to-cell-1", lambda o: o["spec"]["proxy"].update(cellRef="nowhere"))
    with_problem = []
    for _ in range(2):
        reconcile(NS)
        with_problem.append(kube.events_for("to-cell-1"))
    status = kube.get("routingrules", NS, "to-cell-1")["status"]
    assert status["liveGeneration"] == 1 and status["observedGeneration"] == 2
    assert reason(kube, "routingrules", "to-cell-1")[0] == "False"
    assert len(with_problem[0]) == 1 and with_problem[0][0][0] == "Warning" and with_problem[1] == with_problem[0]
    assert kube.read_configmap(NS, ROUTER).data == router_before


def test_a_replica_without_the_lease_writes_nothing_and_it_is_no_error(kube, reconcile):
    add_cell(kube, "cell-1", 1)
    kube.fence = lambda: False
    with pytest.raises(NotLeader):
        reconcile(NS)
    assert kube.requests == []
    assert (
        reconcile.metrics.registry.get_sample_value(
            "controller_runtime_reconcile_errors_total", {"controller": "namespace"}
        )
        is None
    )


def add_typical(kube: FakeKube, rule: RuleObject) -> None:
    """One of tests/bench/configmap_limit.py's typical rules, with its name and uid."""
    kube.add(
        "routingrules",
        {
            **rule_manifest(rule.name, dict(rule.spec)),
            "metadata": {"name": rule.name, "namespace": NS, "uid": rule.uid},
        },
    )


def test_a_ruleset_over_the_limit_keeps_its_last_valid_version_and_stalls_the_new_rules(kube, reconcile, caplog):
    """Issue 15: the router ConfigMap's size limit. 50 typical rules fewer than the first that would not
    fit (tests/bench/configmap_limit.py) are published; 100 more are held back whole -- nothing truncated,
    the published version stays, the new rules are Stalled with RulesetTooLarge and one Warning each, and
    it is logged once."""
    add_cell(kube, "cell-1", 1, firstCell=True)
    fitting = QUOTED_HELD_AT - 50
    for rule in typical_rules(fitting):
        add_typical(kube, rule)
    reconcile(NS)
    published = kube.read_configmap(NS, ROUTER)
    for rule in typical_rules(fitting + 100)[fitting:]:
        add_typical(kube, rule)
    first, last, kept = (f"session-cookie-{i:05}" for i in (fitting, fitting + 99, fitting - 1))
    caplog.clear()
    reconcile(NS)
    assert kube.read_configmap(NS, ROUTER) == published
    assert reason(kube, "routingrules", first) == ("False", "RulesetTooLarge")
    stalled = {c["type"]: c["status"] for c in kube.get("routingrules", NS, last)["status"]["conditions"]}
    assert stalled["Stalled"] == "True" and stalled["Ready"] == "False"
    message = ready_condition(kube.get("routingrules", NS, last))["message"]
    assert "router ConfigMap would be 1,0" in message and "over the ConfigMap limit of 1,000,000 bytes" in message
    assert reason(kube, "routingrules", kept) == ("True", "Published")  # unchanged rules stay
    assert kube.events_for(first) == [("Warning", "RulesetTooLarge")]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "100 rule(s) are Stalled (RulesetTooLarge)" in warnings[0]

    caplog.clear()
    verbs(kube)
    reconcile(NS)  # the next pass: nothing new to write or say
    assert verbs(kube) == [] and [r for r in caplog.records if r.levelname == "WARNING"] == []


def test_others_annotations_leaving_no_room_fail_the_router_publish_without_a_request(kube, reconcile):
    """The rulesets keep under their own limit, but others' annotations count towards the API server's
    256 KiB: then nothing is sent (it would be a 422), and the pass fails loudly to be retried."""
    add_rule(kube, "catch-all", CATCH_ALL)
    reconcile(NS)
    current = kube.read_configmap(NS, ROUTER)
    kube.put_configmap(NS, ROUTER, current.data, {"theirs": "x" * (256 * 1024 - 10)}, labels=current.labels)
    verbs(kube)
    with pytest.raises(RouterConfigTooLarge, match="256 KiB"):
        reconcile(NS)
    assert ("write_configmap", ROUTER) not in verbs(kube)


def test_the_configured_dialect_is_what_the_reconciler_publishes():
    """``--router-dialect 2024`` reaches the planner through the configuration (no process-wide setting):
    the same rules are published with ids (current dialect, the default) or without (2024)."""
    published = {}
    for dialect in Dialect:
        kube = FakeKube()
        add_cell(kube, "cell-1", 1)
        add_rule(kube, "to-cell-1", proxy_to("cell-1"))
        add_rule(kube, "catch-all", CATCH_ALL)
        config = OperatorConfig(report_concurrency=1, router_dialect=dialect)
        assert NamespaceReconciler(kube, config, OperatorMetrics())(NS) is True
        published[dialect] = json.loads(kube.configmaps[(NS, ROUTER)]["data"]["session_token.json"])
    assert [rule.get("id") for rule in published[Dialect.CURRENT]] == ["to-cell-1", "catch-all"]
    assert [rule.get("id") for rule in published[Dialect.V2024]] == [None, None]


def in_burst(age: float | None):
    """A NamespaceReconciler whose passes run ``age`` seconds into a burst (None: after a quiet period)."""
    return lambda namespace: age


def condition(kube: FakeKube, name: str, type_: str) -> str | None:
    conds = (kube.get("routingrules", NS, name).get("status") or {}).get("conditions") or []
    return next((c["status"] for c in conds if c["type"] == type_), None)


def test_a_pass_in_a_burst_publishes_but_holds_the_first_status_of_rules_still_without_their_catch_all(kube):
    """ADR 0015: their RulesetComplete=False would be rewritten as soon as the burst brings the catch-all."""
    reconcile = NamespaceReconciler(kube, CONFIG, OperatorMetrics(), burst_age=in_burst(1.5))
    add_cell(kube, "cell-1", 1, firstCell=True)
    add_rule(kube, "r1", {**SESSION, "priority": 1})
    add_rule(kube, "r2", {**SESSION, "priority": 2})
    reconcile(NS)
    requests = verbs(kube)
    assert ("write_configmap", ROUTER) in requests  # routing keeps pace with the burst
    assert json.loads(kube.configmaps[(NS, ROUTER)]["data"]["session_token.json"])  # both rules are routed
    assert ("patch_status", "cells/cell-1") in requests  # a Cell's outcome is final: written at once
    assert not [r for r in requests if r[1].startswith(("routingrules/", "r1:", "r2:"))]
    add_rule(kube, "zz-catch-all", CATCH_ALL)
    reconcile.burst_age = in_burst(None)  # the burst is over: the pass after it
    reconcile(NS)
    requests = verbs(kube)
    assert sorted(r for r in requests if r[0] == "patch_status") == [
        ("patch_status", f"routingrules/{n}") for n in ("r1", "r2", "zz-catch-all")
    ]
    assert not [r for r in requests if r[0] == "post_event"]  # no NoCatchAll Warning for a transient state
    for name in ("r1", "r2", "zz-catch-all"):
        assert reason(kube, "routingrules", name) == ("True", "Published")
        assert condition(kube, name, "RulesetComplete") == "True"
    reconcile(NS)
    assert verbs(kube) == []


def test_the_hold_ends_after_incomplete_defer_seconds_and_outside_a_burst(kube):
    config = OperatorConfig(report_concurrency=1, incomplete_defer_seconds=30.0)
    for age in (30.0, None):
        kube = FakeKube()
        add_cell(kube, "cell-1", 1, firstCell=True)
        add_rule(kube, "r1", SESSION)
        NamespaceReconciler(kube, config, OperatorMetrics(), burst_age=in_burst(age))(NS)
        assert reason(kube, "routingrules", "r1") == ("True", "Published")
        assert condition(kube, "r1", "RulesetComplete") == "False"  # the truth, once it is no longer transient
        assert kube.events_for("r1") == [("Warning", "NoCatchAll")]


def test_a_burst_holds_neither_a_problem_nor_a_change_of_a_rule_that_already_reports(kube):
    reconcile = NamespaceReconciler(kube, CONFIG, OperatorMetrics())
    add_cell(kube, "cell-1", 1, firstCell=True)
    add_rule(kube, "r1", SESSION)
    add_rule(kube, "zz-catch-all", CATCH_ALL)
    reconcile(NS)
    verbs(kube)
    reconcile.burst_age = in_burst(1.0)
    kube.delete("routingrules", NS, "zz-catch-all")
    add_rule(kube, "broken", {**SESSION, "priority": 5, "action": "proxy"})  # proxy without a target
    reconcile(NS)
    assert condition(kube, "r1", "RulesetComplete") == "False"  # a rule that reports: written at once
    assert kube.events_for("r1") == [("Warning", "NoCatchAll")]
    assert reason(kube, "routingrules", "broken")[0] == "False"  # a problem is never held
