"""The ``RoutingRule`` resource: its spec as a frozen model, validation, and one rule in the router's format.

A rule is rendered into the HTTP router's own rules format::

    {"match": {"type": "cookie", "regex_name": "...", "regex_value": "..."},
     "action": "classify", "classify": {"type": "SESSION_PREFIX", "value": "${cell_name}"}}
    {"action": "proxy", "proxy": {"address": "host:port"}}
    {"action": "proxy"}                       (the router's default upstream)

Validation is everything the edge would otherwise find out the hard way: ECMAScript patterns that a
JavaScript engine rejects, patterns with catastrophic backtracking (:mod:`cells_operator.redos`),
interpolations of groups the match does not define, proxies to cells that do not exist or are not
routable, non-integer literal cell ids.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from . import redos
from .cell import Problem, address_problem
from .ecmaregex import PatternError, UnsupportedPattern, compile_pattern
from .router_format import RouterRule
from .topology import Topology

PLURAL = "routingrules"
KIND = "RoutingRule"
INTERPOLATION = re.compile(r"\$\{([^}]*)\}")
RULESET_NAME = re.compile(r"^[a-z0-9]([-_a-z0-9]{0,61}[a-z0-9])?$")
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


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)


class MatchSpec(_Spec):
    type: MatchType
    regex_name: str | None = None
    regex_value: str


class ClassifySpec(_Spec):
    type: ClassifyType
    value: str | None = None


class ProxySpec(_Spec):
    cell_ref: str | None = None
    address: str | None = None


class RoutingRuleSpec(_Spec):
    ruleset: str
    priority: int = 100
    match: MatchSpec | None = None
    action: Action
    classify: ClassifySpec | None = None
    proxy: ProxySpec | None = None


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


def render_rule(spec: RoutingRuleSpec, topology: Topology) -> tuple[dict[str, Any] | None, Problem | None]:
    """The rule in the router's format, or why it cannot be published (never both)."""
    if not RULESET_NAME.match(spec.ruleset):
        return None, Problem(
            "InvalidRuleset", f"ruleset {spec.ruleset!r} must be lowercase letters, digits, '-' or '_'"
        )
    element: dict[str, Any] = {}
    groups: tuple[str, ...] = ()
    if spec.match is not None:
        m = spec.match
        if m.type is MatchType.PATH and m.regex_name is not None:
            return None, Problem("RegexNameNotAllowed", "match.regexName is not used for path matches: remove it")
        if m.type is not MatchType.PATH and not m.regex_name:
            return None, Problem("MissingRegexName", f"match.regexName is required for {m.type.value} matches")
        if m.regex_name:
            problem, name_groups = _pattern_problem("match.regexName", m.regex_name)
            if problem:
                return None, problem
            groups += name_groups
        problem, value_groups = _pattern_problem("match.regexValue", m.regex_value)
        if problem:
            return None, problem
        groups += value_groups
        element["match"] = {"type": m.type.value, "regex_value": m.regex_value}
        if m.regex_name:
            element["match"]["regex_name"] = m.regex_name
    element["action"] = spec.action.value

    if spec.action is Action.CLASSIFY:
        if spec.classify is None:
            return None, Problem("MissingClassify", "action classify needs a classify section")
        if spec.proxy is not None:
            return None, Problem("ConflictingAction", "action classify cannot have a proxy section")
        c = spec.classify
        if c.type is ClassifyType.FIRST_CELL:
            if c.value:
                return None, Problem("ValueNotAllowed", "classify type FIRST_CELL takes no value")
            element["classify"] = {"type": c.type.value}
            return _checked(element), None
        if not c.value:
            return None, Problem("MissingValue", f"classify type {c.type.value} needs a value")
        names = INTERPOLATION.findall(c.value)
        if "$" in INTERPOLATION.sub("", c.value):
            return None, Problem(
                "InvalidInterpolation", f"classify.value {c.value!r}: write interpolations as ${{name}}"
            )
        unknown = [n for n in names if n not in groups]
        if unknown:
            known = ", ".join(groups) or "none"
            return None, Problem(
                "UnknownInterpolation",
                f"classify.value interpolates ${{{unknown[0]}}}, which is not a named group of the match "
                f"(named groups: {known})",
            )
        if c.type is ClassifyType.CELL_ID and not names and not re.fullmatch(r"[1-9][0-9]*", c.value):
            return None, Problem("InvalidCellId", f"classify.value {c.value!r} must be an integer cell id")
        element["classify"] = {"type": c.type.value, "value": c.value}
        return _checked(element), None

    if spec.classify is not None:
        return None, Problem("ConflictingAction", "action proxy cannot have a classify section")
    p = spec.proxy or ProxySpec()
    if p.cell_ref and p.address:
        return None, Problem("InvalidProxy", "proxy takes one of cellRef and address, not both")
    if not p.cell_ref and not p.address:
        # Valid upstream: {"action": "proxy"} goes to the router's default upstream.
        return _checked(element), None
    if p.address:
        if problem := address_problem(p.address):
            return None, Problem("InvalidAddress", f"proxy.{problem}")
        element["proxy"] = {"address": p.address}
        return _checked(element), None
    record = topology.record(p.cell_ref or "")
    if record is None:
        return None, Problem("CellNotFound", f"proxy.cellRef {p.cell_ref!r} names no registered Cell in this namespace")
    if not record.routable:
        return None, Problem("CellNotRoutable", f"proxy.cellRef {p.cell_ref!r} is {record.state.value}: not routable")
    element["proxy"] = {"address": record.address}
    return _checked(element), None


def _checked(element: dict[str, Any]) -> dict[str, Any]:
    """Round-trip through the router's format model: what we publish is what the router parses."""
    return RouterRule.model_validate(element).to_json()
