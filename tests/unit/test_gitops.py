"""Offline GitOps reviews (issue 14): validate, render and route without a cluster.

The claim under test is "the same code as admission and the operator": every refusal is compared with what
:mod:`cells_operator.admission` says for the same object, and every route with what the reference router's
``Ruleset.decide`` and the Topology Service's ``classify`` say.
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from cells_dataplane.classify import Snapshot, classify
from cells_dataplane.routing import RequestView, load_ruleset
from cells_formats.records import Topology, parse_topology_json
from cells_operator import cli, gitops
from cells_operator.admission import review_cell, review_rule
from cells_operator.gitops_cli import build_kubectl_parser, kubectl_main
from cells_operator.ranges import DEFAULT_SEQUENCE_SIZE as SIZE
from cells_operator.topology import CellObject, plan_topology
from tests.support.cells import cell_manifest as cell
from tests.support.rules import SAMPLE_SPECS

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "deploy" / "samples"


# ------------------------------------------------------------------------------------------- helpers
def rule(name: str, **spec) -> dict:
    return {"apiVersion": "cells.dev/v1alpha1", "kind": "RoutingRule", "metadata": {"name": name}, "spec": spec}


def catch_all(name: str = "catch-all", ruleset: str = "main") -> dict:
    return rule(name, ruleset=ruleset, priority=1000, action="classify", classify={"type": "FIRST_CELL"})


def stream(*docs: dict) -> str:
    return "---\n".join(yaml.safe_dump(d) for d in docs)


def run(argv: list[str], capsys, monkeypatch, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def review(
    *docs: dict, published: Topology | None = None, namespace: str = "ns", prune: bool = False
) -> gitops.ChangeReview:
    inputs = gitops.read_manifests(stream(*docs), "pr.yaml", namespace)
    given = {namespace: gitops.Published(topology=published)} if published is not None else {}
    return gitops.review_change(inputs, given, prune=prune)


def result(rev: gitops.ChangeReview, name: str) -> gitops.ObjectResult:
    return next(r for r in rev.results if r.name == name)


def as_stored(doc: dict, created: str = "2026-01-01T00:00:00Z") -> dict:
    """The object as the API server would serve it to the webhook (uid, creationTimestamp)."""
    meta = {**doc["metadata"], "uid": f"uid-{doc['metadata']['name']}", "creationTimestamp": created}
    return {**doc, "metadata": meta}


def records_of(*cells: dict) -> Topology:
    return plan_topology(Topology(), [CellObject.from_api(as_stored(c)) for c in cells]).records


# ------------------------------------------------------------------------------------ validate: samples
def test_the_shipped_samples_are_valid(capsys, monkeypatch):
    code, out, _ = run(["validate", "-f", str(SAMPLES), "-n", "cells"], capsys, monkeypatch)
    assert code == 0, out
    assert out.count(": ok (") == 13
    assert "Cell cells/legacy: ok (Registered): cell 1 (cell-1) is registered, Active and routable" in out
    assert "RoutingRule cells/catch-all: ok (Published): published at position 9 of ruleset 'session_token'" in out
    # the kustomization is not ours: named and skipped, with the way to check what it builds
    assert "kustomization.yaml#1: Kustomization (kustomize.config.k8s.io/v1beta1) is not a cells.dev object" in out
    assert "cell-2: Registered: registered cell 2 (cell-2) with sequence ranges [1000000000000, 1099999999999]" in out


def test_stdin_is_read_with_dash(capsys, monkeypatch):
    text = (SAMPLES / "cells.yaml").read_text()
    code, out, _ = run(["validate", "-f", "-", "-o", "json"], capsys, monkeypatch, stdin=text)
    report = json.loads(out)
    assert code == 0 and report["valid"] is True
    assert [o["source"] for o in report["objects"]] == ["<stdin>#1", "<stdin>#2", "<stdin>#3"]
    assert {o["namespace"] for o in report["objects"]} == {"default"}


# -------------------------------------------------------------- validate: same reasons and messages as admission
@pytest.mark.parametrize(
    ("new", "reason"),
    [
        (cell("b", 1), "DuplicateId"),
        (cell("b", 2, sessionPrefix="cell-1"), "DuplicateSessionPrefix"),
        (cell("b", 2, firstCell=True), "DuplicateFirstCell"),
        (cell("b", 2, sequenceRanges=[{"minval": 5, "maxval": SIZE + 5}]), "RangeOverlap"),
        (cell("b", 2, address="bad host:1"), "InvalidAddress"),
        (cell("b", 2, sessionPrefix="Cell_2"), "InvalidSessionPrefix"),
        (cell("b", 2, sequenceSize=10), "RangeTooSmall"),
        (cell("b", 2, sequenceRanges=[{"minval": 10, "maxval": 5}]), "InvalidRange"),
        (cell("b", 2, state="Draining", firstCell=True), "FirstCellNotActive"),
        (cell("b", "two"), "InvalidSpec"),
    ],
)
def test_cell_refusals_are_admissions(new, reason):
    a = cell("a", 1, firstCell=True)
    # admission: `a` is stored and published, `b` is being created
    verdict = review_cell(as_stored(new), None, [as_stored(a)], records_of(a))
    assert verdict.problem is not None and verdict.problem.reason == reason
    # offline, the same situation: `a` in the published records and in the input, `b` added by the change
    rev = review(a, new, published=records_of(a))
    offline = result(rev, "b")
    assert offline.reason == reason
    assert offline.refusal == verdict.message("Cell", "b")
    assert not offline.valid and result(rev, "a").valid


def test_new_cells_of_one_change_are_planned_together_as_the_operator_does():
    """Nothing published: the planner gives explicit ranges first pick, as in one reconcile of both."""
    a, b = cell("a", 1, firstCell=True), cell("b", 2, sequenceRanges=[{"minval": 5, "maxval": SIZE + 5}])
    rev = review(a, b)
    assert rev.valid
    records = rev.plans[0].topology.records
    assert records.record("a").sequence_ranges[0].minval == SIZE + 6
    assert (
        records
        == plan_topology(Topology(), [CellObject("a", "new:a", a["spec"]), CellObject("b", "new:b", b["spec"])]).records
    )
    duplicate = review(a, cell("c", 1))
    assert result(duplicate, "c").refusal == "Cell 'c' is refused (DuplicateId): id 1 is already registered by cell 'a'"


def test_cell_checks_against_published_records_id_immutable_and_retired_ranges():
    a, b = cell("a", 1, firstCell=True), cell("b", 2)
    published = records_of(a, b)
    # b's range, retired: b deleted (not in the input) and a new cell asks for exactly that range
    b_range = published.record("b").sequence_ranges[0]
    c = cell("c", 3, sequenceRanges=[{"minval": b_range.minval, "maxval": b_range.maxval}])
    rev = review(a, c, published=published, prune=True)
    assert result(rev, "c").refusal == (
        f"Cell 'c' is refused (RangeOverlap): sequenceRanges {b_range} overlaps retired range {b_range}"
    )
    # the deleted cell is reported, with what pruning does
    gone = next(r for r in rev.results if r.source == gitops.PUBLISHED)
    assert gone.name == "b" and gone.valid and "pruning deletes it" in gone.warnings[0]
    # id never changes once registered: as admission says on an update
    moved = cell("a", 7, firstCell=True)
    offline = result(review(moved, b, published=published), "a")
    verdict = review_cell(as_stored(moved), as_stored(a), [as_stored(a), as_stored(b)], published)
    assert offline.reason == "IdImmutable" and offline.refusal == verdict.message("Cell", "a")


GOOD_MATCH = {"type": "cookie", "regexName": "^s$", "regexValue": "^(?<cell_name>cell-\\d+)-"}


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"match": {**GOOD_MATCH, "regexValue": "^(?<x>a"}}, "InvalidPattern"),
        ({"match": {**GOOD_MATCH, "regexValue": "(?<=a)b(?i)"}}, None),  # reason decided by ecmaregex
        ({"match": {"type": "path", "regexName": "x", "regexValue": "^/"}}, "RegexNameNotAllowed"),
        ({"match": {"type": "header", "regexValue": "^/"}}, "MissingRegexName"),
        ({"classify": {"type": "SESSION_PREFIX", "value": "${cell}"}}, "UnknownInterpolation"),
        ({"classify": {"type": "SESSION_PREFIX", "value": "$cell_name"}}, "InvalidInterpolation"),
        ({"classify": {"type": "FIRST_CELL", "value": "x"}}, "ValueNotAllowed"),
        ({"classify": {"type": "CELL_ID", "value": "two"}, "match": None}, "InvalidCellId"),
        ({"ruleset": "Bad Name"}, "InvalidRuleset"),
        ({"action": "proxy", "classify": None, "proxy": {"address": "no pe"}}, "InvalidAddress"),
        ({"action": "jump"}, "InvalidSpec"),
    ],
)
def test_rule_refusals_are_admissions(spec, reason):
    base = {
        "ruleset": "main",
        "priority": 10,
        "match": GOOD_MATCH,
        "action": "classify",
        "classify": {"type": "SESSION_PREFIX", "value": "${cell_name}"},
    }
    merged = {k: v for k, v in {**base, **spec}.items() if v is not None}
    new = rule("r", **merged)
    a = cell("a", 1, firstCell=True)
    offline = result(review(a, new, catch_all()), "r")
    verdict = review_rule(as_stored(new), None, records_of(a))
    assert verdict.problem is not None
    assert reason is None or verdict.problem.reason == reason
    assert offline.reason == verdict.problem.reason
    assert offline.refusal == verdict.message("RoutingRule", "r")


def test_cell_refs_resolve_against_the_cells_of_the_same_change():
    a, b = cell("a", 1, firstCell=True), cell("b", 2, state="Offline")
    to_a = rule("to-a", ruleset="main", priority=1, action="proxy", proxy={"cellRef": "a"})
    to_b = rule("to-b", ruleset="main", priority=2, action="proxy", proxy={"cellRef": "b"})
    to_x = rule("to-x", ruleset="main", priority=3, action="proxy", proxy={"cellRef": "x"})
    rev = review(a, b, to_a, to_b, to_x, catch_all())
    assert result(rev, "to-a").valid
    assert result(rev, "to-b").refusal == (
        "RoutingRule 'to-b' is refused (CellNotRoutable): proxy.cellRef 'b' is Offline: not routable"
    )
    assert result(rev, "to-x").reason == "CellNotFound"
    assert not rev.valid


def test_a_ruleset_without_catch_all_is_valid_with_the_status_warning():
    r = rule(
        "only", ruleset="main", match={"type": "path", "regexValue": "^/x"}, action="proxy", proxy={"address": "h:1"}
    )
    rev = review(r)
    only = result(rev, "only")
    assert only.valid and rev.valid
    assert only.warnings == (
        "ruleset 'main' has no final rule without a match: a request matching no rule gets an error at the edge",
    )


def test_a_duplicate_object_is_reported_and_the_last_definition_wins():
    rev = review(cell("a", 1, firstCell=True), cell("a", 2, firstCell=True))
    first, last = rev.results[0], rev.results[1]
    assert first.reason == "DuplicateObject" and "pr.yaml#2" in (first.refusal or "")
    assert last.valid and last.message.startswith("cell 2 (cell-2) is registered")


def test_deleting_a_cell_that_rules_still_proxy_to_waits():
    a, b = cell("a", 1, firstCell=True), cell("b", 2)
    to_b = rule("to-b", ruleset="main", action="proxy", proxy={"cellRef": "b"})
    rev = review(a, to_b, published=records_of(a, b), prune=True)
    gone = next(r for r in rev.results if r.source == gitops.PUBLISHED)
    assert gone.reason == "DeletionBlocked"
    assert "deletion waits: RoutingRule 'to-b' proxies to it" in gone.warnings[0]
    assert rev.plans[0].topology.records.record("b") is not None  # still published
    assert result(rev, "to-b").valid


# ------------------------------------------------------------------------------------- validate: input
def test_unreadable_inputs_name_file_and_document_and_answer_2(tmp_path, capsys, monkeypatch):
    (tmp_path / "broken.yaml").write_text("apiVersion: v1\nkind: [\n")
    (tmp_path / "unknown.yaml").write_text(
        stream(
            {"apiVersion": "cells.dev/v1beta1", "kind": "Cell", "metadata": {"name": "x"}},
            {"apiVersion": "cells.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "y"}},
            {"apiVersion": "cells.dev/v1alpha1", "kind": "Cell", "metadata": {}},
            {"kind": "Cell"},
        )
        + "---\n- 1\n"
    )
    (tmp_path / "latin1.yaml").write_bytes(b"kind: \xe9\n")
    code, out, err = run(["validate", "-f", str(tmp_path), "-f", str(tmp_path / "missing.yaml")], capsys, monkeypatch)
    assert code == 2 and "Traceback" not in out + err
    lines = out.splitlines()
    assert f"{tmp_path}/broken.yaml#1: error: cannot parse YAML at line 3, column 1:" in lines[0]
    assert f"{tmp_path}/latin1.yaml: error: not UTF-8 text" in out
    u = f"{tmp_path}/unknown.yaml"
    assert (
        f"{u}#1: error: Cell cells.dev/v1beta1 is unknown to this cells-operator "
        "(it knows cells.dev/v1alpha1 Cell and RoutingRule)" in lines
    )
    assert f"{u}#2: error: Widget cells.dev/v1alpha1 is unknown to this cells-operator" in out
    assert f"{u}#3: error: Cell has no metadata.name" in lines
    assert f"{u}#4: error: not a Kubernetes object: no apiVersion" in lines
    assert f"{u}#5: error: not a Kubernetes object (a mapping with apiVersion and kind), but list" in lines
    assert f"{tmp_path}/missing.yaml: error: no such file or folder" in lines


def test_other_kinds_and_lists_in_kustomize_output(capsys, monkeypatch):
    listed = {"apiVersion": "v1", "kind": "List", "items": [cell("a", 1, firstCell=True)]}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}
    code, out, _ = run(["validate", "-f", "-", "-n", "prod"], capsys, monkeypatch, stdin=stream(deployment, listed))
    assert code == 0
    assert "<stdin>#1: Deployment (apps/v1) is not a cells.dev object: skipped" in out
    assert "<stdin>#2 items[0]: Cell prod/a: ok (Registered)" in out


def test_json_and_junit_reports(tmp_path, capsys, monkeypatch):
    junit = tmp_path / "report.xml"
    text = stream(cell("a", 1, firstCell=True), cell("b", 1))
    code, out, _ = run(["validate", "-f", "-", "-o", "json", "--junit", str(junit)], capsys, monkeypatch, stdin=text)
    assert code == 1
    report = json.loads(out)
    assert report["valid"] is False and report["readable"] is True
    b = report["objects"][1]
    assert b["refusal"] == "Cell 'b' is refused (DuplicateId): id 1 is already registered by cell 'a'"
    assert b["message"] == "id 1 is already registered by cell 'a'. The cell is not registered."
    assert report["changes"][0]["reason"] == "Registered"
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")
    failure = suite.find("testcase[@name='b']/failure")
    assert failure is not None and failure.get("type") == "DuplicateId"
    # unreadable input: an error test case, exit 2, and JSON that says so
    code, out, _ = run(["validate", "-f", "-", "-o", "json", "--junit", str(junit)], capsys, monkeypatch, stdin="a: [")
    assert code == 2 and json.loads(out)["readable"] is False
    assert ET.parse(junit).getroot().find("testsuite/testcase/error") is not None


# --------------------------------------------------------------------------------------------- records
def published_yaml(rev: gitops.ChangeReview) -> str:
    """What `kubectl get configmap ... -o yaml` gives after the operator published this review."""
    return gitops.render_yaml(rev.plans)


def test_records_as_topology_json_or_configmap_yaml_and_bare_records_need_one_namespace(tmp_path, capsys, monkeypatch):
    a = cell("a", 1, firstCell=True)
    (tmp_path / "a.yaml").write_text(stream(a))
    first = gitops.review_change(gitops.read_manifests(stream(a), "a.yaml", "ns"))
    (tmp_path / "published.yaml").write_text(published_yaml(first))
    cm = yaml.safe_load(published_yaml(first).split("---\n")[1])
    (tmp_path / "topology.json").write_text(cm["data"]["topology.json"])
    dup = tmp_path / "dup.yaml"
    dup.write_text(stream(cell("z", 1)))
    for records in ("published.yaml", "topology.json"):
        code, out, _ = run(
            ["validate", "-f", str(dup), "-n", "ns", "--records", str(tmp_path / records)], capsys, monkeypatch
        )
        assert code == 1 and "Cell 'z' is refused (DuplicateId): id 1 is already registered by cell 'a'" in out
    two = tmp_path / "two.yaml"
    two.write_text(stream({**cell("q", 5), "metadata": {"name": "q", "namespace": "other"}}, cell("z", 9)))
    code, out, _ = run(
        ["validate", "-f", str(two), "-n", "ns", "--records", str(tmp_path / "topology.json")], capsys, monkeypatch
    )
    assert code == 2 and "fit only an input of one namespace; the input has 2: ns, other" in out
    code, out, _ = run(["validate", "-f", str(dup), "--records", str(tmp_path / "published.yaml")], capsys, monkeypatch)
    assert code == 2 and "records of namespace 'ns' match no namespace of the input (default)" in out
    (tmp_path / "junk.json").write_text('{"schema_version": 9}')
    code, out, _ = run(["validate", "-f", str(dup), "--records", str(tmp_path / "junk.json")], capsys, monkeypatch)
    assert code == 2 and "schema_version 9 is not supported" in out


# ----------------------------------------------------------------------------------------------- render
def render(argv: list[str], capsys, monkeypatch, stdin: str = "") -> tuple[int, str, str]:
    return run(["render", *argv], capsys, monkeypatch, stdin)


def test_render_is_deterministic_and_idempotent_given_its_own_records(tmp_path, capsys, monkeypatch):
    args = ["-f", str(SAMPLES / "cells.yaml"), "-f", str(SAMPLES / "routingrules.yaml"), "-n", "cells"]
    code, first, _ = render(args, capsys, monkeypatch)
    assert code == 0
    assert render(args, capsys, monkeypatch)[1] == first
    docs = list(yaml.safe_load_all(first))
    assert [(d["metadata"]["name"], d["metadata"]["namespace"]) for d in docs] == [
        ("cells-topology", "cells"),
        ("cells-router-rules", "cells"),
    ]
    topology = parse_topology_json(docs[0]["data"]["topology.json"])
    assert topology.revision == 1 and [c.uid for c in topology.cells] == ["new:legacy", "new:cell-2", "new:cell-3"]
    assert docs[0]["metadata"]["annotations"]["cells.dev/revision"] == "1"
    assert docs[1]["metadata"]["annotations"]["rules.cells.dev/session_token"].startswith("sha256:")
    assert "config.toml: |\n" in first  # block scalars: a diff shows changed lines, not one escaped string
    # given what it rendered as the previous records, the same input changes nothing, byte for byte
    (tmp_path / "published.yaml").write_text(first)
    code, again, _ = render([*args, "--records", str(tmp_path / "published.yaml")], capsys, monkeypatch)
    assert code == 0 and again == first


def test_render_of_a_change_keeps_what_is_published_and_allocates_above_it(tmp_path, capsys, monkeypatch):
    base = [cell("a", 1, firstCell=True), cell("b", 2), catch_all()]
    code, before, _ = render(["-f", "-"], capsys, monkeypatch, stdin=stream(*base))
    (tmp_path / "published.yaml").write_text(before)
    change = [
        cell("a", 1, firstCell=True),
        cell("c", 3),  # b deleted (pruned), c new
        rule("pin", ruleset="main", priority=1, action="proxy", proxy={"cellRef": "a"}),
        rule("catch-all", ruleset="main", priority=999, action="classify", classify={"type": "FIRST_CELL"}),
    ]
    code, after, _ = render(
        ["-f", "-", "--prune", "--records", str(tmp_path / "published.yaml")],
        capsys,
        monkeypatch,
        stdin=stream(*change),
    )
    assert code == 0
    docs = list(yaml.safe_load_all(after))
    old = parse_topology_json(yaml.safe_load(before.split("---\n")[1])["data"]["topology.json"])
    new = parse_topology_json(docs[0]["data"]["topology.json"])
    assert new.revision == old.revision + 1
    assert new.record("a") == old.record("a")  # untouched, same uid
    assert new.record("b") is None and [r.cell_name for r in new.retired_ranges] == ["b"]
    assert new.record("c").uid == "new:c"
    assert new.record("c").sequence_ranges[0].minval == old.record("b").sequence_ranges[0].maxval + 1
    index = json.loads(docs[1]["data"]["cells-operator.index.json"])["main"]
    # the published rule keeps its uid; its priority changed, so one apply makes it generation 2
    assert [(e["name"], e["uid"], e["generation"]) for e in index] == [
        ("pin", "new:pin", 1),
        ("catch-all", "new:catch-all", 2),
    ]


def test_without_prune_what_the_input_does_not_declare_stays_published(tmp_path, capsys, monkeypatch):
    """Validating one new file against the cluster's records: the rest of the namespace is kept byte for byte."""
    args = ["-f", str(SAMPLES / "cells.yaml"), "-f", str(SAMPLES / "routingrules.yaml"), "-n", "cells"]
    code, before, _ = render(args, capsys, monkeypatch)
    (tmp_path / "published.yaml").write_text(before)
    records = ["--records", str(tmp_path / "published.yaml"), "-n", "cells"]
    extra = stream(
        cell("cell-4", 4), rule("pin", ruleset="session_token", priority=1, action="proxy", proxy={"cellRef": "cell-4"})
    )
    code, after, _ = render(["-f", "-", *records], capsys, monkeypatch, stdin=extra)
    assert code == 0
    old_docs, new_docs = list(yaml.safe_load_all(before)), list(yaml.safe_load_all(after))
    old_topology = parse_topology_json(old_docs[0]["data"]["topology.json"])
    new_topology = parse_topology_json(new_docs[0]["data"]["topology.json"])
    assert new_topology.cells[:3] == old_topology.cells and new_topology.revision == old_topology.revision + 1
    assert new_topology.cells[3].name == "cell-4" and not new_topology.retired_ranges
    old_rules = json.loads(old_docs[1]["data"]["session_token.json"])
    new_rules = json.loads(new_docs[1]["data"]["session_token.json"])
    assert (
        new_rules[0] == {"id": "pin", "action": "proxy", "proxy": {"address": "cell-4.cells.svc:8080"}}
        and new_rules[1:] == old_rules
    )
    index = json.loads(new_docs[1]["data"]["cells-operator.index.json"])["session_token"]
    assert [e["uid"] for e in index] == [
        "new:pin",
        "new:force-cell",
        "new:session-cookie",
        "new:path-cell-id",
        *(f"new:{name}" for name in SAMPLE_SPECS if name.startswith("token-")),
        "new:catch-all",
    ]
    # a new cell reusing a published id is refused as admission would, and the kept objects are named
    code, out, _ = run(["validate", "-f", "-", *records], capsys, monkeypatch, stdin=stream(cell("again", 2)))
    assert code == 1
    assert "Cell 'again' is refused (DuplicateId): id 2 is already registered by cell 'cell-2'" in out
    assert "(published) cells: 3 Cell(s) and 10 RoutingRule(s) are published but not in the input: kept" in out
    # nothing in the input changes nothing published
    code, same, _ = render(
        ["-f", "-", *records],
        capsys,
        monkeypatch,
        stdin=stream(
            cell(
                "legacy",
                1,
                firstCell=True,
                address="127.0.0.1:18001",
                sequenceRanges=[{"minval": 1, "maxval": 999999999999}],
            )
        ),
    )
    assert code == 0 and same == before


def test_render_prints_what_is_published_and_exits_1_when_something_is_invalid(capsys, monkeypatch):
    code, out, err = render(["-f", "-"], capsys, monkeypatch, stdin=stream(cell("a", 1), cell("b", 1)))
    assert code == 1
    assert "Cell 'b' is refused (DuplicateId)" in err
    topology = parse_topology_json(next(yaml.safe_load_all(out))["data"]["topology.json"])
    assert [c.name for c in topology.cells] == ["a"]
    assert render(["-f", "-"], capsys, monkeypatch, stdin="kind: [")[0] == 2


def test_render_uses_uids_and_timestamps_when_the_input_has_them():
    """`kubectl get cells,routingrules -o yaml` output renders exactly (the integration test relies on it)."""
    b = {**cell("b", 2), "metadata": {"name": "b", "uid": "u-b", "creationTimestamp": "2026-01-01T00:00:00Z"}}
    a = {**cell("a", 3), "metadata": {"name": "a", "uid": "u-a", "creationTimestamp": "2026-01-01T00:00:01Z"}}
    rev = review({"apiVersion": "v1", "kind": "List", "items": [a, b]})
    records = rev.plans[0].topology.records
    # created first, allocated first; uids from the objects
    assert [(c.name, c.uid) for c in records.cells] == [("b", "u-b"), ("a", "u-a")]
    assert records.record("b").sequence_ranges[0].minval < records.record("a").sequence_ranges[0].minval


# ------------------------------------------------------------------------------------------------- route
@pytest.fixture
def rendered(tmp_path, capsys, monkeypatch) -> Path:
    args = ["-f", str(SAMPLES / "cells.yaml"), "-f", str(SAMPLES / "routingrules.yaml"), "-n", "cells"]
    code, out, _ = render(args, capsys, monkeypatch)
    assert code == 0
    path = tmp_path / "rendered.yaml"
    path.write_text(out)
    return path


def route(rendered: Path, capsys, monkeypatch, *extra: str) -> tuple[int, str]:
    code, out, _ = run(["route", "--rules", str(rendered), "--records", str(rendered), *extra], capsys, monkeypatch)
    return code, out


def test_route_explains_the_session_cookie_match(rendered, capsys, monkeypatch):
    code, out = route(rendered, capsys, monkeypatch, "--cookie", "_gitlab_session=cell-2-abcdef", "/dashboard")
    assert code == 0
    assert out.splitlines() == [
        "request path '/dashboard', ruleset 'session_token'",
        "  position 0 (rule 'force-cell'): no match: no cookie whose name matches regexName ^force-cell$ "
        "(cookies sent: _gitlab_session)",
        "  position 1 (rule 'session-cookie'): MATCH, action classify",
        "    captured groups: cell_name='cell-2'",
        '  classify request: POST /v1/classify {"type": "SESSION_PREFIX", "value": "cell-2"}',
        '  Topology Service answer: 200 {"action": "PROXY", "proxy": {"address": "127.0.0.1:18002"}}',
        "=> cell 'cell-2' (id 2) answers, at 127.0.0.1:18002",
    ]


def test_route_json_and_an_unknown_cell(rendered, capsys, monkeypatch):
    code, out = route(rendered, capsys, monkeypatch, "--cookie", "force-cell=cell-9", "-o", "json", "/x?y=1")
    assert code == 1
    e = json.loads(out)
    assert e["path"] == "/x" and e["match"] == {
        "position": 0,
        "rule": "position 0 (rule 'force-cell')",
        "action": "classify",
        "groups": {"cell_name": "cell-9"},
        "decoded": [],
        "tokens": [],
    }
    assert e["classify"] == {
        "request": {"type": "SESSION_PREFIX", "value": "cell-9"},
        "status": 404,
        "answer": {"code": 5, "message": 'cell not found: "cell-9"', "details": []},
    }
    assert e["routed"] is False and "the router answers 502" in e["outcome"]


def test_route_with_no_matching_rule_says_why_each_rule_did_not_match(tmp_path, capsys, monkeypatch):
    rules = [
        {
            "match": {"type": "header", "regex_name": "^x-cell$", "regex_value": "^(?<id>\\d+)$"},
            "action": "classify",
            "classify": {"type": "CELL_ID", "value": "${id}"},
        },
        {"match": {"type": "path", "regex_value": "^/static/"}, "action": "proxy", "proxy": {"address": "cdn:80"}},
    ]
    (tmp_path / "main.json").write_text(json.dumps(rules))
    (tmp_path / "topology.json").write_text('{"schema_version": 1, "revision": 0, "cells": [], "retired_ranges": []}')
    args = ["route", "--rules", str(tmp_path / "main.json"), "--records", str(tmp_path / "topology.json")]
    code, out, _ = run([*args, "--header", "X-Cell: abc", "/x"], capsys, monkeypatch)
    assert code == 1
    assert out.splitlines()[1:] == [
        "  position 0: no match: header x-cell='abc': the value does not match regex_value ^(?<id>\\d+)$",
        "  position 1: no match: path '/x' does not match regex_value ^/static/",
        "=> no rule matches: the router answers 502 (no routing rule matched this request)",
    ]
    code, out, _ = run([*args, "/static/app.js"], capsys, monkeypatch)
    assert code == 0 and out.endswith("=> proxied to cdn:80 without classification\n")
    code, out, _ = run([*args, "--cookie", "novalue", "/"], capsys, monkeypatch)
    assert code == 2 and "--cookie 'novalue': expected NAME=VALUE" in out
    code, out, _ = run(
        ["route", "--rules", str(tmp_path / "topology.json"), "--records", "x", "/"], capsys, monkeypatch
    )
    assert code == 2 and "Traceback" not in out


def test_route_decides_as_the_reference_router_for_many_requests(rendered, capsys, monkeypatch):
    """The explanation's rule and cell are the router's own ``decide`` and the Topology Service's ``classify``."""
    docs = list(yaml.safe_load_all(rendered.read_text()))
    ruleset = load_ruleset(docs[1]["data"]["session_token.json"])
    snapshot = Snapshot(parse_topology_json(docs[0]["data"]["topology.json"]))
    requests = [
        ("/", []),
        ("/api/v4/cells/2/x", []),
        ("/api/v4/cells/7/x", []),
        ("/api/v4/cells/3/x", [("force_cell", "2")]),
        ("/y", [("_gitlab_session_ab12", "cell-3-zz")]),
        ("/y", [("_gitlab_session", "nope")]),
        ("/y", [("other", "1"), ("force_cell", "x")]),
    ]
    for path, cookies in requests:
        flags = [f for n, v in cookies for f in ("--cookie", f"{n}={v}")]
        code, out = route(rendered, capsys, monkeypatch, "-o", "json", *flags, path)
        e = json.loads(out)
        header = [("cookie", "; ".join(f"{n}={v}" for n, v in cookies))] if cookies else []
        decision = ruleset.decide(RequestView.build(path, header))
        assert decision is not None and e["match"]["position"] == decision.index, (path, cookies)
        body = {"type": decision.classify_type, **({"value": decision.value} if decision.value is not None else {})}
        answer = classify(snapshot, body)
        assert e["classify"]["status"] == answer.status and e["classify"]["answer"] == answer.body
        assert code == (0 if answer.cell is not None else 1)


# ------------------------------------------------------------------------------------- help and plugin
@pytest.mark.parametrize("command", ["validate", "render", "route"])
def test_every_command_has_help_with_an_example(command, capsys):
    for parser in (cli.build_parser(), build_kubectl_parser()):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([command, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out and f"{parser.prog} {command} " in out


def test_the_kubectl_plugin_entry_point(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO((SAMPLES / "cells.yaml").read_text()))
    assert kubectl_main(["validate", "-f", "-"]) == 0
    assert "Cell default/legacy: ok" in capsys.readouterr().out
    scripts = (ROOT / "pyproject.toml").read_text()
    assert 'kubectl-cells = "cells_operator.gitops_cli:kubectl_main"' in scripts


def test_each_namespace_is_its_own_topology(capsys, monkeypatch):
    prod = {**cell("a", 1, firstCell=True), "metadata": {"name": "a", "namespace": "prod"}}
    staging = {**cell("a", 1, firstCell=True), "metadata": {"name": "a", "namespace": "staging"}}
    code, out, _ = render(["-f", "-"], capsys, monkeypatch, stdin=stream(staging, prod))
    assert code == 0  # the same id in two namespaces is no conflict
    docs = list(yaml.safe_load_all(out))
    assert [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs] == [
        ("prod", "cells-topology"),
        ("staging", "cells-topology"),
    ]
    assert (
        render(["-f", "-", "--topology-configmap", "records"], capsys, monkeypatch, stdin=stream(prod))[1].count(
            "name: records\n"
        )
        == 1
    )


def test_stdin_is_read_once_and_an_empty_input_says_so(capsys, monkeypatch):
    code, out, _ = run(["validate", "-f", "-", "--records", "-"], capsys, monkeypatch, stdin=stream(cell("a", 1)))
    assert code == 2 and "cannot both read stdin" in out
    code, out, _ = run(["validate", "-f", "-"], capsys, monkeypatch, stdin="")
    assert code == 0 and "no Cell or RoutingRule in the input" in out


def test_a_kept_published_object_the_planner_would_not_keep_is_reported():
    """A published record that no longer passes the checks (here an address the current code refuses) is named:
    the operator would stall its Cell too, and render must not pretend it stays as it is."""
    a = cell("a", 1, firstCell=True)
    published = records_of(a)
    broken = published.model_copy(update={"cells": (published.cells[0].model_copy(update={"address": "bad host:1"}),)})
    rev = review(cell("b", 2), published=broken)
    kept = next(r for r in rev.results if r.source == gitops.PUBLISHED)
    assert kept.name == "a" and kept.reason == "InvalidAddress"
    assert (kept.refusal or "").startswith("Cell 'a' is refused (InvalidAddress): address 'bad host:1'")
    assert not rev.valid
