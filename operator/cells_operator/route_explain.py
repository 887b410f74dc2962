"""Explain offline how the reference router routes one request: which rule, which classify request, which cell.

A reviewer of a routing change wants to ask "where does ``/api/v4/cells/3/x`` with this session cookie go
now?" without a cluster. The decision is made by the reference router's own evaluation
(:meth:`cells_dataplane.routing.Ruleset.decide` on a ruleset parsed by ``load_ruleset``/``compile_rules``,
the request built by ``RequestView.build``) and answered by the Topology Service's own classification
(:func:`cells_dataplane.classify.classify`), so the explanation cannot disagree with the data plane. This
module only adds the *why*: the groups the winning rule captured, and for every earlier rule why it did not
match.

Pure: the CLI (:mod:`cells_operator.gitops_cli`) reads the files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cells_dataplane.classify import Snapshot, classify
from cells_dataplane.routable_token import Failure, decode_base64_text, decode_routable_token
from cells_dataplane.routing import CompiledRule, RequestView, Ruleset, compile_rules
from cells_dataplane.transforms import Applied, NotApplied
from cells_formats.records import Topology
from cells_formats.router_format import parse_ruleset

from .gitops import ANY_NAMESPACE, InputError, Notice, objects, read_published, yaml_documents
from .rulesets import INDEX_KEY, RULESET_SUFFIX

# A v1 routable token anywhere in a header value: [prefix]payload.01.<length><crc> (ADR 0014).
TOKEN_IN_TEXT = re.compile(r"[0-9A-Za-z_-]{27,360}\.01\.[0-9a-z]{2}[0-9a-z]{7}(?![0-9a-z])")


@dataclass(frozen=True)
class Rules:
    """One ruleset as the router loads it, with each position's RoutingRule name when known."""

    name: str
    ruleset: Ruleset
    rule_names: tuple[str | None, ...]

    def label(self, index: int) -> str:
        name = self.rule_names[index] if index < len(self.rule_names) else None
        return f"position {index} (rule {name!r})" if name else f"position {index}"


def read_rules(text: str, origin: str, ruleset: str | None = None, namespace: str | None = None) -> Rules:
    """``--rules``: a ``<ruleset>.json`` as the router reads it, or the router ConfigMap as YAML (from
    ``render`` or ``kubectl get -o yaml``), which also names each rule. Raises :class:`InputError`."""
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, list):
        return Rules(ruleset or origin.rsplit("/", 1)[-1].removesuffix(RULESET_SUFFIX), _compile(text, origin), ())
    docs, error = yaml_documents(text, origin)
    if error is not None:
        raise InputError([error])
    candidates = []
    for _, cm in objects(docs, origin):
        if not isinstance(cm, dict) or cm.get("kind") != "ConfigMap":
            continue
        data = cm.get("data") or {}
        if INDEX_KEY not in data:
            continue
        ns = (cm.get("metadata") or {}).get("namespace") or ""
        if namespace and ns and ns != namespace:
            continue
        for key in sorted(data):
            if key.endswith(RULESET_SUFFIX) and key != INDEX_KEY:
                candidates.append((ns, key.removesuffix(RULESET_SUFFIX), data, key))
    if ruleset is not None:
        candidates = [c for c in candidates if c[1] == ruleset]
    if len(candidates) != 1:
        found = ", ".join(f"{ns}/{name}" if ns else name for ns, name, _, _ in candidates) or "none"
        raise InputError(
            [
                Notice(
                    origin,
                    "expected exactly one ruleset (a <ruleset>.json, or the router ConfigMap: choose with "
                    f"--ruleset and --namespace); found {found}",
                )
            ]
        )
    _, name, data, key = candidates[0]
    compiled = _compile(str(data[key]), f"{origin} {key}")
    try:
        index = json.loads(data[INDEX_KEY]).get(name) or []
        names = tuple(str(entry.get("name")) for entry in index)
    except (ValueError, AttributeError, TypeError) as exc:
        raise InputError([Notice(origin, f"{INDEX_KEY} is not valid cells-operator output: {exc}")]) from exc
    return Rules(name, compiled, names)


def _compile(text: str, origin: str) -> Ruleset:
    try:
        return compile_rules(parse_ruleset(text))
    except ValueError as exc:  # JSON, the router's format model, or a pattern: the router refuses it too
        raise InputError([Notice(origin, f"not a ruleset the router loads: {exc}")]) from exc


def read_records(text: str, origin: str, namespace: str | None = None) -> Topology:
    """``--records`` for route: a ``topology.json`` or the records ConfigMap (YAML)."""
    published = read_published(text, origin)
    with_topology = {ns: p.topology for ns, p in published.items() if p.topology is not None}
    if namespace:
        with_topology = {ns: t for ns, t in with_topology.items() if ns in (namespace, ANY_NAMESPACE)}
    if len(with_topology) != 1:
        found = ", ".join(ns or "(no namespace)" for ns in with_topology) or "none"
        raise InputError(
            [Notice(origin, f"expected the records of one namespace (choose with --namespace); found {found}")]
        )
    return next(iter(with_topology.values()))


@dataclass(frozen=True)
class Skipped:
    index: int
    label: str
    why: str


@dataclass
class Explanation:
    """How the router routes the request, step by step."""

    path: str
    ruleset: str
    skipped: list[Skipped] = field(default_factory=list)
    index: int | None = None
    label: str | None = None
    action: str | None = None
    groups: dict[str, str | None] = field(default_factory=dict)
    decoded: list[dict[str, Any]] = field(default_factory=list)
    token_checks: list[str] = field(default_factory=list)
    classify_request: dict[str, Any] | None = None
    answer_status: int | None = None
    answer: dict[str, Any] | None = None
    cell: dict[str, Any] | None = None
    address: str | None = None
    outcome: str = ""

    @property
    def routed(self) -> bool:
        return self.address is not None

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ruleset": self.ruleset,
            "routed": self.routed,
            "skipped": [{"position": s.index, "rule": s.label, "why": s.why} for s in self.skipped],
            "match": None
            if self.index is None
            else {
                "position": self.index,
                "rule": self.label,
                "action": self.action,
                "groups": self.groups,
                "decoded": self.decoded,
                "tokens": self.token_checks,
            },
            "classify": None
            if self.classify_request is None
            else {"request": self.classify_request, "status": self.answer_status, "answer": self.answer},
            "cell": self.cell,
            "address": self.address,
            "outcome": self.outcome,
        }


def _why_not(compiled: CompiledRule, request: RequestView) -> str:
    """Why a rule did not decide (only called for rules ``decide`` passed over)."""
    groups = compiled.groups(request)
    if groups is not None:  # matched, but its transform, validate or classify value did not resolve
        assert compiled.phases is not None
        result = compiled.phases.apply(groups)
        assert isinstance(result, NotApplied)
        return f"matched, but does not apply: {result.phase} {result.reason}: {result.detail}"
    m = compiled.rule.match
    assert m is not None and compiled.value_re is not None  # a rule without match always matches
    value_field, name_field = ("regex_value", "regex_name") if m.dialect == "2024" else ("regexValue", "regexName")
    if m.type == "path":
        return f"path {request.path!r} does not match {value_field} {m.value_pattern}"
    what = "cookie" if m.type == "cookie" else "header"
    candidates = request.cookies if m.type == "cookie" else request.headers
    named = [(n, v) for n, v in candidates if compiled.name_groups(n) is not None]
    if not named:
        sent = ", ".join(sorted({n for n, _ in candidates})) or "none"
        wanted = (
            f"named {compiled.name}"
            if compiled.name is not None
            else f"whose name matches {name_field} {m.name_pattern}"
        )
        return f"no {what} {wanted} ({what}s sent: {sent})"
    values = "; ".join(f"{n}={v!r}" for n, v in named)
    return f"{what} {values}: the value does not match {value_field} {m.value_pattern}"


def _decoded(compiled: CompiledRule, groups: dict[str, str | None]) -> list[dict[str, Any]]:
    """What each transform step of the deciding rule decoded (for the explanation)."""
    if compiled.phases is None:
        return []
    result = compiled.phases.apply(groups)
    steps = result.steps if isinstance(result, Applied) else ()
    return [{"type": s.step.type.value, "output": s.step.output, "keys": dict(s.output)} for s in steps]


def _token_checks(compiled: CompiledRule, request: RequestView) -> list[str]:
    """For a rule decoding routable tokens: whether the token's CRC is intact (the router does not check it,
    ADR 0014 decision 5; the cell does, so a corrupt token reaches its cell and is refused there)."""
    m, value_re = compiled.rule.match, compiled.value_re  # a rule with a match has its value pattern
    if m is None or value_re is None or compiled.phases is None or m.type == "path":
        return []
    if not any(s.type.value == "routable-token-payload" for s in compiled.phases.steps):
        return []
    out = []
    candidates = request.cookies if m.type == "cookie" else request.headers
    for name, value in candidates:
        if compiled.name_groups(name) is None or value_re.search(value) is None:
            continue
        for token in TOKEN_IN_TEXT.findall(_credential_text(value)):
            decoded = decode_routable_token(token)
            state = "intact" if not isinstance(decoded, Failure) else f"{decoded.reason.value}: {decoded.detail}"
            out.append(f"{name}: token CRC {state}")
    return out


def _credential_text(value: str) -> str:
    """The header value, with a Basic credential decoded (the token is its password)."""
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "basic":
        decoded = decode_base64_text(rest.strip())
        return decoded if isinstance(decoded, str) else value
    return value


def _cell(topology: Topology, address: str) -> dict[str, Any] | None:
    record = next((c for c in topology.cells if c.address == address and c.routable), None)
    if record is None:
        return None
    return {"name": record.name, "id": record.id, "session_prefix": record.session_prefix, "address": record.address}


def explain(
    rules: Rules,
    topology: Topology,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    cookies: Sequence[tuple[str, str]] = (),
) -> Explanation:
    """Route ``path`` with ``headers`` and ``cookies`` (sent as one ``Cookie`` header, as a browser does)."""
    path = path.partition("?")[0]  # the router matches request.path, which has no query string
    pairs = list(headers)
    if cookies:
        pairs.append(("Cookie", "; ".join(f"{n}={v}" for n, v in cookies)))
    request = RequestView.build(path, pairs)
    out = Explanation(path, rules.name)
    decision = rules.ruleset.decide(request)
    stop = decision.index if decision is not None else len(rules.ruleset.rules)
    for index in range(stop):
        out.skipped.append(Skipped(index, rules.label(index), _why_not(rules.ruleset.rules[index], request)))
    if decision is None:
        out.outcome = "no rule matches: the router answers 502 (no routing rule matched this request)"
        if not rules.ruleset.rules:
            out.outcome = "the ruleset is empty: the router answers 502 (no routing rule matched this request)"
        return out
    out.index, out.label, out.action = decision.index, rules.label(decision.index), decision.action
    winner = rules.ruleset.rules[decision.index]
    out.groups = dict(winner.groups(request) or {})
    out.decoded = _decoded(winner, out.groups)
    out.token_checks = _token_checks(winner, request)
    if decision.action == "proxy":
        assert decision.address is not None
        out.address, out.cell = decision.address, _cell(topology, decision.address)
        out.outcome = f"proxied to {decision.address} without classification"
        return out
    body: dict[str, Any] = {"type": decision.classify_type}
    if decision.value is not None:  # as the router sends it: FIRST_CELL has no value
        body["value"] = decision.value
    answer = classify(Snapshot(topology), body)
    out.classify_request, out.answer_status, out.answer = body, answer.status, answer.body
    if answer.cell is not None:
        out.address = answer.cell.address
        out.cell = _cell(topology, answer.cell.address)
        out.outcome = f"cell {answer.cell.name!r} (id {answer.cell.id}) answers, at {answer.cell.address}"
    else:
        what = f"{decision.classify_type} {decision.value or ''}".strip()
        out.outcome = (
            f"the Topology Service answers {answer.status} ({answer.body.get('message')}): "
            f"the router answers 502 (cell not found: {what})"
        )
    return out


def human(explanation: Explanation) -> str:
    e = explanation
    lines = [f"request path {e.path!r}, ruleset {e.ruleset!r}"]
    lines += [f"  {s.label}: no match: {s.why}" for s in e.skipped]
    if e.index is not None:
        lines.append(f"  {e.label}: MATCH, action {e.action}")
        if e.groups:
            captured = ", ".join(f"{k}={v!r}" for k, v in e.groups.items())
            lines.append(f"    captured groups: {captured}")
        for step in e.decoded:
            keys = ", ".join(f"{k}={v}" for k, v in step["keys"].items()) or "nothing"
            lines.append(f"    transform {step['type']} -> {step['output']}: {keys}")
        lines += [f"    {check}" for check in e.token_checks]
    if e.classify_request is not None:
        lines.append(f"  classify request: POST /v1/classify {json.dumps(e.classify_request, sort_keys=True)}")
        lines.append(f"  Topology Service answer: {e.answer_status} {json.dumps(e.answer, sort_keys=True)}")
    lines.append(f"=> {e.outcome}")
    return "\n".join(lines) + "\n"


def parse_pairs(values: Sequence[str] | None, flag: str) -> list[tuple[str, str]]:
    """``NAME=VALUE`` flags; raises ValueError naming the flag when one has no ``=``."""
    out = []
    for value in values or ():
        name, sep, rest = value.partition("=")
        if not sep or not name:
            raise ValueError(f"{flag} {value!r}: expected NAME=VALUE")
        out.append((name, rest))
    return out
