"""The ``RoutingRule`` resource: its spec as a frozen model, validation, and one rule in the router's format.

A rule is rendered into the HTTP router's rules format (:mod:`cells_formats.router_format`), in the
dialect the operator is configured with (``OperatorConfig.router_dialect``, ADR 0014 decision 11).
Current dialect::

    {"id": "token-private-token",
     "match": {"type": "header", "name": "private-token", "regexValue": "...(?<payload>...)..."},
     "transform": {"type": "routable-token-payload", "input": ["${payload}", "${payload_length}"],
                   "output": "decoded"},
     "validate": {"exist": ["${decoded.c}"]},
     "action": "classify", "classify": {"type": "CELL_ID", "value": "${decoded.c}"}}
    {"id": "session-cookie", "match": {"type": "cookie", "regexName": "...", "regexValue": "..."}, ...}
    {"id": "to-cell", "action": "proxy", "proxy": {"address": "host:port"}}

2024 dialect: ``match.regex_name`` / ``regex_value``, no id, no transform or validate.

Validation is everything the edge would otherwise find out the hard way: ECMAScript patterns that a
JavaScript engine rejects, patterns with catastrophic backtracking (:mod:`cells_operator.redos`),
interpolations of groups the match does not define, transforms the router cannot run (checked by the
router's own :func:`cells_dataplane.transforms.parse_phases`), what the chosen dialect cannot express,
proxies to cells that do not exist or are not routable, non-integer literal cell ids. Admission
(:mod:`cells_operator.admission`) and the planner (:mod:`cells_operator.rulesets`) both call
:func:`render_rule`, so they refuse alike, with the same CamelCase reasons.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonDict

from cells_dataplane.transforms import (
    MAX_STEPS,
    OUTPUT_NAME,
    SpecProblem,
    check_template,
    parse_phases,
    render_transform,
)
from cells_formats.ecmaregex import PatternError, UnsupportedPattern, compile_pattern
from cells_formats.fields import address_problem
from cells_formats.records import Topology
from cells_formats.router_format import DIALECT_ENV, INTERPOLATION, Dialect, RouterRule

from . import redos
from .cell import Problem

PLURAL = "routingrules"
KIND = "RoutingRule"
RULESET_NAME = re.compile(r"^[a-z0-9]([-_a-z0-9]{0,61}[a-z0-9])?$")
RULE_ID = re.compile(r"[A-Za-z0-9]([-_.A-Za-z0-9]{0,251}[A-Za-z0-9])?")
FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110), which cookie names are too
# Problems that depend on the Cells rather than on the rule itself: they pass with time (the Cell
# registers, or becomes routable again), so admission never refuses a rule for them.
TOPOLOGY_DEPENDENT = frozenset({"CellNotFound", "CellNotRoutable"})


class MatchType(StrEnum):
    COOKIE = "cookie"
    HEADER = "header"
    PATH = "path"


class Action(StrEnum):
    CLASSIFY = "classify"
    PROXY = "proxy"


class ClassifyType(StrEnum):
    SESSION_PREFIX = "SESSION_PREFIX"
    CELL_ID = "CELL_ID"
    FIRST_CELL = "FIRST_CELL"


# Schema only (json_schema_extra, ADR 0017): what the API server refuses on top of the model. The model
# parses such input on purpose, so the planner and admission name the problem with their own reasons.
CONFLICTING_NAME: JsonDict = {
    "rule": "!(has(self.name) && has(self.regexName))",
    "message": "(ConflictingName) match takes one of name (literal) and regexName (pattern), not both",
    "fieldPath": ".name",
}


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)


class MatchSpec(_Spec):
    type: MatchType = Field(description="Match a cookie, a header, or the request path.")
    name: str | None = Field(
        None,
        description="Literal header or cookie name (headers compare case-insensitively and are published "
        "lower-case, cookies exactly). Use this or regexName; not for path matches.",
        json_schema_extra={"pattern": f"^{FIELD_NAME.pattern}$", "maxLength": 256},
    )
    regex_name: str | None = Field(
        None,
        description="ECMAScript pattern over header or cookie names. Use this or name; not for path matches.",
    )
    regex_value: str = Field(
        description="ECMAScript pattern over the header value, cookie value or path; its named groups are "
        "available as ${group} to transform inputs, validate.exist and classify.value."
    )


class TransformStepSpec(_Spec):
    type: str = Field(description="routable-token-payload, routable-json or decode-base64-match.")
    input: list[str] = Field(
        description="Template strings: ${group} (a named group of the match) or ${output.key} (a key of an "
        "earlier step's output). routable-token-payload takes the payload and optionally its length field; "
        "the others take one value.",
        json_schema_extra={"minItems": 1, "maxItems": 2},
    )
    output: str = Field(
        description="Name under which this step's keys are available as ${output.key}.",
        json_schema_extra={"pattern": f"^{OUTPUT_NAME.pattern}$"},
    )
    regex_value: str | None = Field(
        None,
        description="decode-base64-match only: ECMAScript pattern searched in the decoded text; its named "
        "groups become this step's output keys.",
    )


class ValidateSpec(_Spec):
    exist: list[str] = Field(
        description="Templates that must resolve to a non-empty value, else the rule does not apply and the "
        "router continues with the next rule.",
        json_schema_extra={"minItems": 1},
    )


class ClassifySpec(_Spec):
    type: ClassifyType = Field(description="What classify.value is: a session prefix, a cell id, or none (first cell).")
    value: str | None = Field(
        None,
        description="The value to classify (not for FIRST_CELL); may interpolate ${group} and ${output.key}.",
    )


class ProxySpec(_Spec):
    cell_ref: str | None = Field(None, description="Name of a Cell in this namespace; its address is used.")
    address: str | None = Field(
        None, description="A literal address: hostname, IPv4 or [IPv6], each with an optional :port."
    )


class RoutingRuleSpec(_Spec):
    id: str | None = Field(
        None,
        description="The published rule's id (current dialect only); defaults to the resource's name. Unique "
        "within a ruleset.",
        json_schema_extra={"pattern": f"^{RULE_ID.pattern}$", "maxLength": 253},
    )
    ruleset: str = Field(
        description="Name of the rule list this rule belongs to (a router loads one ruleset; ConfigMap key "
        "<ruleset>.json).",
        json_schema_extra={"pattern": RULESET_NAME.pattern, "maxLength": 63},
    )
    priority: int = Field(100, description="Lower runs first; ties are broken by name.")
    match: MatchSpec | None = Field(
        None,
        description="What the rule matches. Omitted, the rule matches every request (catch-all).",
        json_schema_extra={"x-kubernetes-validations": [CONFLICTING_NAME]},
    )
    transform: list[TransformStepSpec] | None = Field(
        None,
        description="Decoding of what the match captured: steps run in order (current dialect only); one "
        "step is published as an object (GitLab's current shape), several as an array (ADR 0014).",
        json_schema_extra={"minItems": 1, "maxItems": MAX_STEPS},
    )
    validate_: ValidateSpec | None = Field(
        None,
        alias="validate",
        description="Values that must exist for the rule to apply (current dialect only).",
    )
    action: Action = Field(description="classify asks the Topology Service; proxy sends the request straight on.")
    classify: ClassifySpec | None = Field(None, description="How action classify asks the Topology Service.")
    proxy: ProxySpec | None = Field(
        None,
        description="Where action proxy sends the request: cellRef or address. Omitted (or empty), the rule is "
        'published as {"action": "proxy"} and goes to the router\'s default upstream.',
    )


def parse_rule_spec(spec: dict[str, Any]) -> tuple[RoutingRuleSpec | None, Problem | None]:
    try:
        return RoutingRuleSpec.model_validate(spec), None
    except ValidationError as exc:
        parts = [f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return None, Problem("InvalidSpec", "; ".join(parts))


def _pattern_problem(field: str, pattern: str) -> tuple[Problem | None, tuple[str, ...]]:
    try:
        compiled = compile_pattern(pattern)
    except UnsupportedPattern as exc:
        return Problem("UnsupportedPattern", f"{field}: {exc}"), ()
    except PatternError as exc:
        return Problem("InvalidPattern", f"{field}: {exc}"), ()
    # Valid and evaluable: now whether a hostile input can make it backtrack for ever (ADR 0013).
    if message := redos.catastrophic_problem(field, pattern, redos.verdict(pattern)):
        return Problem(redos.REASON, message), ()
    return None, compiled.group_names


def _checked_pattern(pattern: str) -> Any:
    """Compiler for a transform step's ``regexValue``: the match patterns' checks, raising on a problem."""
    problem, _ = _pattern_problem("transform regexValue", pattern)
    if problem is not None:
        raise _StepPatternProblem(problem)
    return compile_pattern(pattern)


class _StepPatternProblem(Exception):
    """Carries a step pattern's problem out of ``parse_phases`` (which turns a PatternError into its own)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


Rendered = tuple[dict[str, Any] | None, Problem | None]


def render_rule(
    spec: RoutingRuleSpec, topology: Topology, *, name: str | None = None, dialect: Dialect = Dialect.CURRENT
) -> Rendered:
    """The rule in the router's format, or why it cannot be published (never both).

    ``name`` is the resource's name (the default ``id``); ``dialect`` is the operator's
    setting (``OperatorConfig.router_dialect``), passed by every caller: the core reads no environment.
    """
    if problem := _ruleset_problem(spec) or _id_problem(spec) or _dialect_problem(spec, dialect):
        return None, problem
    element: dict[str, Any] = {}
    rule_id = spec.id or name
    if dialect is Dialect.CURRENT and rule_id:
        element["id"] = rule_id
    groups: tuple[str, ...] = ()
    if spec.match is not None:
        match, found = _render_match(spec.match, dialect)
        if isinstance(match, Problem):
            return None, match
        element["match"], groups = match, found
    phases = _render_phases(spec, groups)
    if isinstance(phases, Problem):
        return None, phases
    element.update(phases)
    element["action"] = spec.action.value
    tail = _render_classify(spec, bool(phases)) if spec.action is Action.CLASSIFY else _render_proxy(spec, topology)
    if isinstance(tail, Problem):
        return None, tail
    element.update(tail)
    return _checked(element), None


def _ruleset_problem(spec: RoutingRuleSpec) -> Problem | None:
    if RULESET_NAME.match(spec.ruleset):
        return None
    return Problem("InvalidRuleset", f"ruleset {spec.ruleset!r} must be lowercase letters, digits, '-' or '_'")


def _id_problem(spec: RoutingRuleSpec) -> Problem | None:
    if spec.id is None or RULE_ID.fullmatch(spec.id):
        return None
    return Problem(
        "InvalidId", f"id {spec.id!r} must be 1-253 letters, digits, '-', '_' or '.', starting and ending alphanumeric"
    )


def _dialect_problem(spec: RoutingRuleSpec, dialect: Dialect) -> Problem | None:
    """What the 2024 dialect cannot express (a literal ``name`` it can: as an anchored ``regex_name``)."""
    if dialect is not Dialect.V2024:
        return None
    missing = [f for f, v in (("transform", spec.transform), ("validate", spec.validate_)) if v is not None]
    if not missing:
        return None
    return Problem(
        "NotInDialect",
        f"{' and '.join(missing)}: the 2024 router dialect has no such field; publish the current dialect "
        f"({DIALECT_ENV}=current, cells-operator run --router-dialect current) or remove it",
    )


def _render_match(m: MatchSpec, dialect: Dialect) -> tuple[dict[str, Any] | Problem, tuple[str, ...]]:
    """``match`` in the dialect's spelling and the named groups its patterns define."""
    if problem := _name_problem(m):
        return problem, ()
    groups: tuple[str, ...] = ()
    if m.regex_name:
        problem, groups = _pattern_problem("match.regexName", m.regex_name)
        if problem:
            return problem, ()
    problem, value_groups = _pattern_problem("match.regexValue", m.regex_value)
    if problem:
        return problem, ()
    name = m.name.lower() if m.name is not None and m.type is MatchType.HEADER else m.name
    if dialect is Dialect.V2024:
        out = {"type": m.type.value, "regex_value": m.regex_value}
        regex_name = m.regex_name or (f"^{_escape(name)}$" if name is not None else None)
        if regex_name:
            out["regex_name"] = regex_name
        return out, groups + value_groups
    out = {"type": m.type.value, "regexValue": m.regex_value}
    if name is not None:
        out["name"] = name
    if m.regex_name:
        out["regexName"] = m.regex_name
    return out, groups + value_groups


def _name_problem(m: MatchSpec) -> Problem | None:
    if m.type is MatchType.PATH:
        if m.regex_name is not None:
            return Problem("RegexNameNotAllowed", "match.regexName is not used for path matches: remove it")
        if m.name is not None:
            return Problem("NameNotAllowed", "match.name is not used for path matches: remove it")
        return None
    if m.name is not None and m.regex_name is not None:
        return Problem("ConflictingName", "match takes one of name (literal) and regexName (pattern), not both")
    if m.name is None and not m.regex_name:
        return Problem("MissingRegexName", f"match.name or match.regexName is required for {m.type.value} matches")
    if m.name is not None and not FIELD_NAME.fullmatch(m.name):
        return Problem("InvalidName", f"match.name {m.name!r} is not a {m.type.value} name (an HTTP token)")
    return None


def _escape(literal: str) -> str:
    """A header or cookie name as an ECMAScript pattern (HTTP tokens only hold these metacharacters)."""
    return re.sub(r"([\^$.|*+])", r"\\\1", literal)


def _render_phases(spec: RoutingRuleSpec, groups: tuple[str, ...]) -> dict[str, Any] | Problem:
    """``transform`` and ``validate`` as published, checked with the router's own parser (ADR 0014)."""
    if spec.transform is None and spec.validate_ is None:
        return {}
    transform = _raw_transform(spec.transform)
    validate = spec.validate_.model_dump(by_alias=True) if spec.validate_ is not None else None
    value = spec.classify.value if spec.action is Action.CLASSIFY and spec.classify is not None else None
    try:
        parsed = parse_phases(transform, validate, value, groups, compile_pattern=_checked_pattern)
    except _StepPatternProblem as exc:
        return exc.problem
    if isinstance(parsed, SpecProblem):
        return Problem(parsed.reason, parsed.message)
    out: dict[str, Any] = {}
    if parsed.steps:
        out["transform"] = render_transform(parsed.steps)
    if validate is not None:
        out["validate"] = validate
    return out


def _raw_transform(transform: list[TransformStepSpec] | None) -> Any:
    if transform is None:
        return None
    return [step.model_dump(by_alias=True, exclude_none=True) for step in transform]


def _render_classify(spec: RoutingRuleSpec, checked: bool) -> dict[str, Any] | Problem:
    """``classify``; ``checked``: the value's templates were already checked with the rule's phases."""
    if spec.classify is None:
        return Problem("MissingClassify", "action classify needs a classify section")
    if spec.proxy is not None:
        return Problem("ConflictingAction", "action classify cannot have a proxy section")
    c = spec.classify
    if c.type is ClassifyType.FIRST_CELL:
        if c.value:
            return Problem("ValueNotAllowed", "classify type FIRST_CELL takes no value")
        return {"classify": {"type": c.type.value}}
    if not c.value:
        return Problem("MissingValue", f"classify type {c.type.value} needs a value")
    if not checked and (problem := check_template("classify.value", c.value, _groups_of(spec), {})):
        return Problem(problem.reason, problem.message)
    names = INTERPOLATION.findall(c.value)
    if c.type is ClassifyType.CELL_ID and not names and not re.fullmatch(r"[1-9][0-9]*", c.value):
        return Problem("InvalidCellId", f"classify.value {c.value!r} must be an integer cell id")
    return {"classify": {"type": c.type.value, "value": c.value}}


def _groups_of(spec: RoutingRuleSpec) -> tuple[str, ...]:
    """Named groups of an already-checked match (its patterns compile)."""
    m = spec.match
    if m is None:
        return ()
    patterns = [p for p in (m.regex_name, m.regex_value) if p]
    return tuple(name for p in patterns for name in compile_pattern(p).group_names)


def _render_proxy(spec: RoutingRuleSpec, topology: Topology) -> dict[str, Any] | Problem:
    if spec.classify is not None:
        return Problem("ConflictingAction", "action proxy cannot have a classify section")
    p = spec.proxy or ProxySpec()
    if p.cell_ref and p.address:
        return Problem("InvalidProxy", "proxy takes one of cellRef and address, not both")
    if not p.cell_ref and not p.address:
        return {}  # valid upstream: {"action": "proxy"} goes to the router's default upstream
    if p.address:
        if problem := address_problem(p.address):
            return Problem("InvalidAddress", f"proxy.{problem}")
        return {"proxy": {"address": p.address}}
    record = topology.record(p.cell_ref or "")
    if record is None:
        return Problem("CellNotFound", f"proxy.cellRef {p.cell_ref!r} names no registered Cell in this namespace")
    if not record.routable:
        return Problem("CellNotRoutable", f"proxy.cellRef {p.cell_ref!r} is {record.state.value}: not routable")
    return {"proxy": {"address": record.address}}


def _checked(element: dict[str, Any]) -> dict[str, Any]:
    """Round-trip through the router's format model: what we publish is what the router parses."""
    return RouterRule.model_validate(element).to_json()


def spec_of_element(ruleset: str, priority: int, element: dict[str, Any]) -> dict[str, Any]:
    """A RoutingRule spec that renders to exactly this published element, in either dialect.

    The inverse of :func:`render_rule` for ``cells-operator render`` (objects published but not declared);
    a ``cellRef`` is already an address, a 2024 ``regex_name`` stays a pattern.
    """
    spec: dict[str, Any] = {"ruleset": ruleset, "priority": priority, "action": element["action"]}
    if "id" in element:
        spec["id"] = element["id"]
    if "match" in element:
        m = element["match"]
        spec["match"] = {"type": m["type"], "regexValue": m.get("regexValue", m.get("regex_value"))}
        for published, field in (("name", "name"), ("regexName", "regexName"), ("regex_name", "regexName")):
            if published in m:
                spec["match"][field] = m[published]
    if "transform" in element:
        steps = element["transform"]
        spec["transform"] = [steps] if isinstance(steps, dict) else steps
    for key in ("validate", "classify"):
        if key in element:
            spec[key] = element[key]
    if "proxy" in element:
        spec["proxy"] = {"address": element["proxy"]["address"]}
    return spec
