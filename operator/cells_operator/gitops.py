"""Offline review of a GitOps change: load manifests, validate them, render what the operator would publish.

A pull request that changes Cells or RoutingRules should say, before anything is applied, whether the
change is valid and what it does to the published records and router rules. The operator's core is pure,
so this module answers both with *the same code* the operator runs:

- Cells go through :func:`cells_operator.topology.plan_topology` (which admission runs too, ADR 0007), on
  the previously published records and the namespace's Cells as the input declares them;
- RoutingRules go through :func:`cells_operator.rulesets.plan_rulesets` (``parse_rule_spec`` and
  ``render_rule``, which admission runs too) against the records just planned;
- the ConfigMaps are rendered by ``render_records`` / the rulesets plan, with the annotations of
  ``records_annotations`` / ``ruleset_annotations``, merged as ``publish_configmap`` merges them;
- every message is the admission refusal (:meth:`cells_operator.admission.Review.message`) or the status
  condition (``desired_status`` of the reconcilers), never a re-worded copy.

What cannot be known offline is made explicit instead of guessed silently:
- a new object's ``uid`` is assigned by the API server: it is rendered as ``new:<name>``; an object the
  previous records already know by name keeps its recorded uid (same name, same object);
- a new rule's ``generation`` is 1; a published rule whose rendered element changes gets its published
  generation plus one (one apply of one merged pull request);
- new cells that need an allocation are ordered as the operator orders cells created in the same second
  (explicit ranges first, then by name), unless the input carries ``creationTimestamp``.
A published Cell or RoutingRule that the input does not declare is kept as published (its spec is rebuilt
from its record or rendered element), so one new file can be checked against a cluster's records; with
``prune`` it is deleted instead, as Argo CD and Flux prune, a Cell through its finalizer path (blocked while
rules still proxy to it). A kept proxy rule keeps its published address: the ``cellRef`` it was rendered
from is not in the router ConfigMap.

Everything here is pure: text in, data out. The CLI (:mod:`cells_operator.gitops_cli`) reads files, stdin
and the cluster, and prints.
"""

from __future__ import annotations

import datetime
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from cells_formats.records import TOPOLOGY_JSON, CellRecord, RecordsError, Topology, parse_topology_json, render_records
from cells_formats.router_format import Dialect

from . import cell_reconciler, rule_reconciler
from . import conditions as cond
from .admission import Review
from .cell import GROUP, VERSION, Problem
from .cell import KIND as CELL
from .config import MANAGED_BY, MANAGED_BY_LABEL, OperatorConfig
from .publish import merge_annotations
from .rule import KIND as RULE
from .rule import parse_rule_spec, render_rule, spec_of_element
from .rulesets import INDEX_KEY, LiveRule, PublishedRules, RulesError, RulesPlan, parse_published, plan_rulesets
from .topology import CellObject, Change, TopologyPlan, plan_topology

API_VERSION = f"{GROUP}/{VERSION}"
KINDS = (CELL, RULE)
NEW_UID_PREFIX = "new:"
# kube.Kube.write_configmap labels every ConfigMap it writes so; tests/integration/test_render.py
# compares render's labels with the published ones, so a drift fails there.
CONFIGMAP_LABELS = {MANAGED_BY_LABEL: MANAGED_BY, "app.kubernetes.io/part-of": "cells"}
DEFAULT_NAMESPACE = "default"


# ------------------------------------------------------------------------------------------------ input
@dataclass(frozen=True)
class Notice:
    """Something about one document of the input: ``source`` is ``file#document`` (1-based)."""

    source: str
    message: str


class InputError(ValueError):
    """Input that cannot be read at all (exit code 2). Carries every notice, not just the first."""

    def __init__(self, notices: Sequence[Notice]):
        super().__init__("; ".join(f"{n.source}: {n.message}" for n in notices))
        self.notices = tuple(notices)


@dataclass(frozen=True)
class Manifest:
    """One Cell or RoutingRule of the input, with where it came from."""

    source: str
    kind: str
    namespace: str
    name: str
    obj: dict[str, Any]


@dataclass
class Inputs:
    manifests: list[Manifest] = field(default_factory=list)
    skipped: list[Notice] = field(default_factory=list)  # objects of other kinds: not ours, left alone
    errors: list[Notice] = field(default_factory=list)  # unreadable: the whole run answers 2

    def extend(self, other: Inputs) -> None:
        self.manifests += other.manifests
        self.skipped += other.skipped
        self.errors += other.errors

    @property
    def namespaces(self) -> list[str]:
        return sorted({m.namespace for m in self.manifests})


def yaml_documents(text: str, origin: str) -> tuple[list[tuple[int, Any]], Notice | None]:
    """Every document of a YAML (or JSON) stream, or a notice naming the first one that does not parse."""
    docs: list[tuple[int, Any]] = []
    try:
        for index, doc in enumerate(yaml.safe_load_all(text), start=1):
            docs.append((index, doc))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return docs, Notice(f"{origin}#{len(docs) + 1}", f"cannot parse YAML{where}: {problem}")
    return docs, None


def _timestamp(value: Any) -> str:
    """creationTimestamp as the API serves it: YAML may have turned an unquoted one into a datetime."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value) if value else ""


def objects(docs: Iterable[tuple[int, Any]], origin: str) -> Iterable[tuple[str, Any]]:
    """(source, object) for every document, with ``kind: List`` (``kubectl get -o yaml``) expanded."""
    for index, doc in docs:
        if doc is None:
            continue  # an empty document (a trailing ---)
        source = f"{origin}#{index}"
        if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
            for item_index, item in enumerate(doc["items"]):
                yield f"{source} items[{item_index}]", item
        else:
            yield source, doc


def read_manifests(text: str, origin: str, default_namespace: str = DEFAULT_NAMESPACE) -> Inputs:
    """The Cells and RoutingRules of one file (or stdin); other kinds are skipped with a notice."""
    out = Inputs()
    docs, error = yaml_documents(text, origin)
    if error is not None:
        out.errors.append(error)
    for source, obj in objects(docs, origin):
        if not isinstance(obj, dict):
            out.errors.append(
                Notice(
                    source, f"not a Kubernetes object (a mapping with apiVersion and kind), but {type(obj).__name__}"
                )
            )
            continue
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not api_version or not kind:
            missing = " and ".join(k for k in ("apiVersion", "kind") if not obj.get(k))
            out.errors.append(Notice(source, f"not a Kubernetes object: no {missing}"))
            continue
        group = str(api_version).rpartition("/")[0]
        if group != GROUP:
            hint = ""
            if kind == "Kustomization":
                hint = "; to check what it builds, pipe `kubectl kustomize DIR` into `-f -`"
            out.skipped.append(Notice(source, f"{kind} ({api_version}) is not a {GROUP} object: skipped{hint}"))
            continue
        if api_version != API_VERSION or kind not in KINDS:
            out.errors.append(
                Notice(
                    source,
                    f"{kind} {api_version} is unknown to this cells-operator "
                    f"(it knows {API_VERSION} {' and '.join(KINDS)})",
                )
            )
            continue
        meta = obj.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
            out.errors.append(Notice(source, f"{kind} has no metadata.name"))
            continue
        if not isinstance(obj.get("spec", {}), dict):
            out.errors.append(Notice(source, f"{kind} {meta['name']!r}: spec is not a mapping"))
            continue
        namespace = meta.get("namespace") or default_namespace
        meta = {**meta, "namespace": namespace}
        if "creationTimestamp" in meta:
            meta["creationTimestamp"] = _timestamp(meta["creationTimestamp"])
        out.manifests.append(Manifest(source, kind, namespace, meta["name"], {**obj, "metadata": meta}))
    return out


# --------------------------------------------------------------------------------- published (before)
@dataclass
class Published:
    """What one namespace has published before the change (``--records`` or ``--from-cluster``).

    ``None`` means that ConfigMap does not exist: the operator then publishes only if there is something
    to publish, as it does on a cluster."""

    topology: Topology | None = None
    topology_annotations: dict[str, str] = field(default_factory=dict)
    router: PublishedRules | None = None
    router_annotations: dict[str, str] = field(default_factory=dict)

    def merge(self, other: Published) -> None:
        if other.topology is not None:
            self.topology, self.topology_annotations = other.topology, other.topology_annotations
        if other.router is not None:
            self.router, self.router_annotations = other.router, other.router_annotations


ANY_NAMESPACE = ""  # a bare topology.json says nothing about its namespace


def published_from_configmap(cm: Mapping[str, Any], source: str) -> Published:
    """The records and/or router rules in a ConfigMap, told apart by their keys."""
    data = cm.get("data") or {}
    annotations = dict((cm.get("metadata") or {}).get("annotations") or {})
    out = Published()
    if not isinstance(data, dict):
        raise InputError([Notice(source, "ConfigMap data is not a mapping")])
    try:
        if TOPOLOGY_JSON in data:
            out.topology, out.topology_annotations = parse_topology_json(str(data[TOPOLOGY_JSON])), annotations
        if INDEX_KEY in data:
            out.router, out.router_annotations = parse_published({k: str(v) for k, v in data.items()}), annotations
    except (RecordsError, RulesError) as exc:
        raise InputError([Notice(source, str(exc))]) from exc
    if out.topology is None and out.router is None:
        name = (cm.get("metadata") or {}).get("name", "?")
        raise InputError(
            [
                Notice(
                    source,
                    f"ConfigMap {name!r} holds neither {TOPOLOGY_JSON} nor {INDEX_KEY}: not cells-operator output",
                )
            ]
        )
    return out


def read_published(text: str, origin: str) -> dict[str, Published]:
    """``--records``: a published ``topology.json``, or ConfigMap YAML (several documents, a List).

    Keyed by namespace; a bare ``topology.json`` (or a ConfigMap without a namespace) is under
    :data:`ANY_NAMESPACE`."""
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "kind" not in doc:
        try:
            return {ANY_NAMESPACE: Published(topology=parse_topology_json(text))}
        except RecordsError as exc:
            raise InputError([Notice(origin, str(exc))]) from exc
    docs, error = yaml_documents(text, origin)
    if error is not None:
        raise InputError([error])
    out: dict[str, Published] = {}
    notices: list[Notice] = []
    for source, obj in objects(docs, origin):
        if not isinstance(obj, dict) or obj.get("kind") != "ConfigMap":
            kind = obj.get("kind") if isinstance(obj, dict) else type(obj).__name__
            notices.append(Notice(source, f"expected a ConfigMap or a topology.json, found {kind}"))
            continue
        try:
            published = published_from_configmap(obj, source)
        except InputError as exc:
            notices += exc.notices
            continue
        namespace = (obj.get("metadata") or {}).get("namespace") or ANY_NAMESPACE
        out.setdefault(namespace, Published()).merge(published)
    if notices:
        raise InputError(notices)
    if not out:
        raise InputError([Notice(origin, "no records in it: expected a topology.json or cells-operator ConfigMaps")])
    return out


def published_for(
    namespaces: Sequence[str], given: Mapping[str, Published], origin: str = "--records"
) -> dict[str, Published]:
    """Each input namespace's previous state; a namespace-less one fits only an input of one namespace."""
    out = {ns: Published() for ns in namespaces}
    for ns, published in given.items():
        if ns == ANY_NAMESPACE:
            if len(namespaces) != 1:
                raise InputError(
                    [
                        Notice(
                            origin,
                            "records without a namespace (a bare topology.json) fit only an input of one namespace; "
                            f"the input has {len(namespaces)}: {', '.join(namespaces) or 'none'}. "
                            "Give the records as ConfigMap YAML with metadata.namespace",
                        )
                    ]
                )
            out[namespaces[0]].merge(published)
        elif ns in out:
            out[ns].merge(published)
        else:  # records nobody uses would silently turn into "nothing published yet"
            raise InputError(
                [
                    Notice(
                        origin,
                        f"records of namespace {ns!r} match no namespace of the input "
                        f"({', '.join(namespaces) or 'none'}); objects without a namespace take -n",
                    )
                ]
            )
    return out


# -------------------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class ObjectResult:
    """The verdict on one Cell or RoutingRule, in the words of admission and of the status conditions."""

    source: str
    kind: str
    namespace: str
    name: str
    reason: str  # the Ready condition's reason (Registered, Published, or the problem's reason)
    message: str  # the Ready condition's message, as `kubectl describe` will show it
    refusal: str | None = None  # admission's message when the object is invalid
    warnings: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return self.refusal is None

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "valid": self.valid,
            "reason": self.reason,
            "message": self.message,
            "refusal": self.refusal,
            "warnings": list(self.warnings),
        }


@dataclass
class NamespacePlan:
    namespace: str
    topology: TopologyPlan
    rules: RulesPlan
    previous_revision: int
    results: list[ObjectResult]
    configmaps: list[dict[str, Any]]
    notes: list[Notice] = field(default_factory=list)

    @property
    def changes(self) -> list[Change]:
        return self.topology.changes


def _ready(status: Mapping[str, Any]) -> Mapping[str, Any]:
    return cond.condition(status, cond.READY) or {}


def _duplicates(manifests: Sequence[Manifest]) -> tuple[list[Manifest], list[ObjectResult]]:
    """The last definition of each kind/name wins (as ``kubectl apply`` of the stream would leave it);
    every earlier one is reported."""
    last: dict[tuple[str, str], Manifest] = {}
    for m in manifests:
        last[(m.kind, m.name)] = m
    kept = list(last.values())
    results = []
    for m in manifests:
        winner = last[(m.kind, m.name)]
        if winner is not m:
            problem = Problem(
                "DuplicateObject",
                f"{m.kind} {m.name!r} is defined again at {winner.source}, which replaces this definition",
            )
            results.append(
                ObjectResult(
                    m.source,
                    m.kind,
                    m.namespace,
                    m.name,
                    problem.reason,
                    problem.message,
                    Review(problem).message(m.kind, m.name),
                )
            )
    return kept, results


def _rule_generation(
    meta: Mapping[str, Any], spec: Mapping[str, Any], old: Any, topology: Topology, dialect: Dialect
) -> int:
    """The generation the API server will give the rule: the input's, else predicted (see module docs)."""
    if meta.get("generation"):
        return int(meta["generation"])
    if old is None:
        return 1
    parsed, _ = parse_rule_spec(dict(spec))
    element = render_rule(parsed, topology, name=meta.get("name"), dialect=dialect)[0] if parsed is not None else None
    same = (
        parsed is not None
        and element == old.element
        and parsed.priority == old.priority
        and parsed.ruleset == old.ruleset
    )
    return old.generation if same else old.generation + 1


PUBLISHED = "(published)"  # the source of a result about a published object the input does not declare


def _spec_of_record(record: CellRecord) -> dict[str, Any]:
    """A spec that plans to exactly this record (its ranges are kept: they are the record's already).

    Field names, not aliases: CellSpec populates by name, so every field the two models share carries over."""
    return record.model_dump(mode="json", exclude={"name", "uid", "sequence_ranges"})


def _spec_of_live(live: LiveRule) -> dict[str, Any]:
    """A RoutingRule spec that renders to exactly this published element (a cellRef is already an address)."""
    return spec_of_element(live.ruleset, live.priority, live.element)


def plan_namespace(
    namespace: str,
    manifests: Sequence[Manifest],
    published: Published,
    config: OperatorConfig | None = None,
    prune: bool = False,
) -> NamespacePlan:
    """Plan one namespace exactly as a reconcile pass would, and render its ConfigMaps.

    Published objects the input does not declare are kept as published, unless ``prune``: then they are
    deleted, as Argo CD and Flux prune what a sync no longer declares (Cells through their finalizer)."""
    config = config or OperatorConfig()
    manifests, results = _duplicates([m for m in manifests if m.namespace == namespace])
    cells = [m for m in manifests if m.kind == CELL]
    rules = [m for m in manifests if m.kind == RULE]
    previous = published.topology or Topology()

    cell_objs: dict[str, dict[str, Any]] = {}
    for m in cells:
        meta = m.obj["metadata"]
        record = previous.record(m.name)
        uid = meta.get("uid") or (record.uid if record is not None else NEW_UID_PREFIX + m.name)
        cell_objs[m.name] = {**m.obj, "metadata": {**meta, "uid": uid}}
    planned = [CellObject.from_api(o) for o in cell_objs.values()]
    absent = [c for c in previous.cells if c.name not in cell_objs]
    gone = absent if prune else []
    kept = [] if prune else absent
    # Pruned: the Cell is deleted, through its finalizer. Kept: its Cell is as published.
    planned += [CellObject(c.name, c.uid, {}, deleting=True) for c in gone]
    planned += [CellObject(c.name, c.uid, _spec_of_record(c)) for c in kept]
    blockers = cell_reconciler.deletion_blockers([m.obj for m in rules])
    topology_plan = plan_topology(previous, planned, blockers)
    records = topology_plan.records

    for m in cells:
        verdict = topology_plan.verdicts[m.name]
        generation = int(m.obj["metadata"].get("generation") or 1)
        ready = _ready(cell_reconciler.desired_status(verdict, generation, None))
        refusal = Review(verdict.problem).message(CELL, m.name) if verdict.problem is not None else None
        results.append(ObjectResult(m.source, CELL, namespace, m.name, ready["reason"], ready["message"], refusal))
    for record in kept:
        verdict = topology_plan.verdicts[record.name]
        if verdict.problem is not None or verdict.record != record:  # the change disturbs a published cell
            problem = verdict.problem or Problem("Changed", "its published record would change")
            results.append(
                ObjectResult(
                    PUBLISHED,
                    CELL,
                    namespace,
                    record.name,
                    problem.reason,
                    problem.message,
                    Review(problem).message(CELL, record.name),
                )
            )
    for record in gone:
        verdict = topology_plan.verdicts[record.name]
        if verdict.problem is not None:
            warning = f"the input no longer declares it, and {verdict.problem.message}"
        else:
            ranges = ", ".join(str(r) for r in record.sequence_ranges)
            warning = (
                f"the input no longer declares it: pruning deletes it, its ranges {ranges} are retired "
                "and never handed out again"
            )
        reason = verdict.problem.reason if verdict.problem is not None else "Deleted"
        results.append(
            ObjectResult(
                PUBLISHED, CELL, namespace, record.name, reason, warning, None, (f"Cell {record.name!r}: {warning}",)
            )
        )

    previous_rules = published.router or PublishedRules()
    by_name = {live.name: live for live in previous_rules.live.values()}
    rule_objs = []
    for m in rules:
        meta = m.obj["metadata"]
        old = by_name.get(m.name)
        uid = meta.get("uid") or (old.uid if old is not None else NEW_UID_PREFIX + m.name)
        generation = _rule_generation(meta, m.obj.get("spec") or {}, old, records, config.router_dialect)
        rule_objs.append({**m.obj, "metadata": {**meta, "uid": uid, "generation": generation}})
    declared = {m.name for m in rules}
    kept_rules = [] if prune else [live for live in previous_rules.live.values() if live.name not in declared]
    kept_objs = [
        {"metadata": {"name": live.name, "uid": live.uid, "generation": live.generation}, "spec": _spec_of_live(live)}
        for live in kept_rules
    ]
    rules_plan = plan_rulesets(
        [rule_reconciler.rule_object(o) for o in rule_objs + kept_objs],
        records,
        previous_rules,
        dialect=config.router_dialect,
    )
    for live in kept_rules:
        rule_verdict = rules_plan.verdicts[live.name]
        if rule_verdict.problem is not None or rule_verdict.live != live:
            problem = rule_verdict.problem or Problem("Changed", "its published element would change")
            results.append(
                ObjectResult(
                    PUBLISHED,
                    RULE,
                    namespace,
                    live.name,
                    problem.reason,
                    problem.message,
                    Review(problem).message(RULE, live.name),
                )
            )
    for m, obj in zip(rules, rule_objs, strict=True):
        rule_verdict = rules_plan.verdicts[m.name]
        status = rule_reconciler.desired_status(rule_verdict, obj["metadata"]["generation"], None)
        ready = _ready(status)
        complete = cond.condition(status, rule_reconciler.RULESET_COMPLETE) or {}
        warnings = (complete["message"],) if complete.get("status") == "False" and rule_verdict.last_in_ruleset else ()
        refusal = Review(rule_verdict.problem).message(RULE, m.name) if rule_verdict.problem is not None else None
        results.append(
            ObjectResult(m.source, RULE, namespace, m.name, ready["reason"], ready["message"], refusal, warnings)
        )
    notes = []
    if kept or kept_rules:
        notes.append(
            Notice(
                f"{PUBLISHED} {namespace}",
                f"{len(kept)} Cell(s) and {len(kept_rules)} RoutingRule(s) are published but not in the input: "
                "kept as published (--prune deletes them, as a GitOps sync with pruning would)",
            )
        )

    configmaps = []
    # As the reconcilers: a ConfigMap is written when there is something for it, or it exists already.
    if cells or published.topology is not None:
        data = render_records(records)
        annotations = merge_annotations(
            published.topology_annotations, dict(cell_reconciler.records_annotations(records, data))
        )
        configmaps.append(configmap(namespace, config.topology_configmap, data, annotations))
    if rules or published.router is not None:
        annotations = merge_annotations(
            published.router_annotations,
            rule_reconciler.ruleset_annotations(rules_plan, published.router_annotations),
        )
        configmaps.append(configmap(namespace, config.router_configmap, rules_plan.data, annotations))
    return NamespacePlan(namespace, topology_plan, rules_plan, previous.revision, results, configmaps, notes)


def configmap(namespace: str, name: str, data: Mapping[str, str], annotations: Mapping[str, str]) -> dict[str, Any]:
    """A ConfigMap as the operator writes it (``kube.Kube.write_configmap``)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(CONFIGMAP_LABELS)}
    if annotations:
        metadata["annotations"] = dict(sorted(annotations.items()))
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": dict(sorted(data.items()))}


@dataclass
class ChangeReview:
    """Everything validate and render say about one input."""

    plans: list[NamespacePlan]
    skipped: list[Notice]

    @property
    def results(self) -> list[ObjectResult]:
        return [r for p in self.plans for r in p.results]

    @property
    def valid(self) -> bool:
        return all(r.valid for r in self.results)


def review_change(
    inputs: Inputs,
    published: Mapping[str, Published] | None = None,
    config: OperatorConfig | None = None,
    prune: bool = False,
) -> ChangeReview:
    """Plan every namespace of the input. ``published`` is keyed by namespace (see :func:`published_for`).

    Raises :class:`InputError` when any of the input is unreadable: a partial verdict would be a wrong one.
    """
    if inputs.errors:
        raise InputError(inputs.errors)
    published = published or {}
    plans = [
        plan_namespace(ns, inputs.manifests, published.get(ns) or Published(), config, prune)
        for ns in inputs.namespaces
    ]
    return ChangeReview(plans, list(inputs.skipped))


# ------------------------------------------------------------------------------------------------ output
class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, so a diff of rendered ConfigMaps is a diff of their lines."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str)


def render_yaml(plans: Sequence[NamespacePlan]) -> str:
    """Every ConfigMap of every namespace, in namespace order: the text a pull request's diff shows."""
    docs = [cm for plan in sorted(plans, key=lambda p: p.namespace) for cm in plan.configmaps]
    return "".join(
        "---\n" + yaml.dump(doc, Dumper=_LiteralDumper, sort_keys=False, allow_unicode=True, width=100_000)
        for doc in docs
    )


def human_report(result: ChangeReview, *, show_changes: bool = True) -> str:
    lines = []
    for r in result.results:
        head = f"{r.source}: {r.kind} {r.namespace}/{r.name}"
        if r.refusal is not None:
            lines.append(f"{head}: INVALID: {r.refusal}")
        elif r.source == PUBLISHED:
            lines.append(f"{head}: {r.reason}")
        else:
            lines.append(f"{head}: ok ({r.reason}): {r.message}")
        lines += [f"    warning: {w}" for w in r.warnings]
    for notice in result.skipped + [n for p in result.plans for n in p.notes]:
        lines.append(f"{notice.source}: {notice.message}")
    if show_changes:
        for plan in result.plans:
            if plan.changes:
                after = plan.topology.records.revision
                lines.append(f"records of namespace {plan.namespace}: revision {plan.previous_revision} -> {after}")
                lines += [f"    {c.name}: {c.reason}: {c.message}" for c in plan.changes]
    invalid = [r for r in result.results if not r.valid]
    counted = [r for r in result.results if r.source != PUBLISHED]
    if not counted:
        lines.append("no Cell or RoutingRule in the input")
    if invalid:
        lines.append(f"INVALID: {len(invalid)} of {len(counted)} objects")
    else:
        lines.append(f"valid: {len(counted)} objects in {len(result.plans)} namespace(s)")
    return "\n".join(lines) + "\n"


def errors_report(error: InputError) -> str:
    return "".join(f"{n.source}: error: {n.message}\n" for n in error.notices)


def json_report(result: ChangeReview | None, error: InputError | None = None) -> dict[str, Any]:
    if error is not None:
        return {
            "valid": False,
            "readable": False,
            "errors": [{"source": n.source, "message": n.message} for n in error.notices],
            "objects": [],
            "skipped": [],
            "notes": [],
            "changes": [],
        }
    assert result is not None
    return {
        "valid": result.valid,
        "readable": True,
        "errors": [],
        "objects": [r.as_json() for r in result.results],
        "skipped": [{"source": n.source, "message": n.message} for n in result.skipped],
        "notes": [{"source": n.source, "message": n.message} for p in result.plans for n in p.notes],
        "changes": [
            {"namespace": p.namespace, "cell": c.name, "reason": c.reason, "message": c.message}
            for p in result.plans
            for c in p.changes
        ],
    }


def junit_report(result: ChangeReview | None, error: InputError | None = None) -> str:
    """JUnit XML for CI test reports: one test case per object, one error case per unreadable document."""
    suite = ET.Element("testsuite", name="cells-operator validate")
    failures = errors = tests = 0
    for notice in error.notices if error is not None else ():
        tests += 1
        errors += 1
        case = ET.SubElement(suite, "testcase", classname="input", name=notice.source)
        ET.SubElement(case, "error", message=notice.message, type="UnreadableInput").text = notice.message
    for r in result.results if result is not None else ():
        tests += 1
        case = ET.SubElement(
            suite, "testcase", classname=f"{r.kind}.{r.namespace}", name=r.name, file=r.source.partition("#")[0]
        )
        if r.refusal is not None:
            failures += 1
            ET.SubElement(case, "failure", message=r.refusal, type=r.reason).text = f"{r.source}\n{r.refusal}"
        elif r.warnings:
            ET.SubElement(case, "system-out").text = "\n".join(f"warning: {w}" for w in r.warnings)
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
