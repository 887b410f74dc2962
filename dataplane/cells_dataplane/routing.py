"""Evaluate a router ruleset against a request (pure): first matching rule wins.

Patterns are evaluated with ECMAScript semantics by :mod:`cells_formats.ecmaregex` -- the same code
the operator validates with -- so what the operator accepted behaves here as it does at the edge.
Wherever RE2 can take a pattern's translation it evaluates it, in linear time, with the same answers
(:mod:`cells_dataplane.matching`, ADR 0013); :attr:`Ruleset.linear` says whether every pattern of a
ruleset is on RE2, and the router bounds the evaluation of the rest. Deciding tries only the rules a
request could match, found by :mod:`cells_dataplane.rule_index`, in ruleset order: first match unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cells_formats.ecmaregex import EcmaPattern, compile_pattern
from cells_formats.fields import address_problem, split_address
from cells_formats.router_format import (
    INTERPOLATION,  # one definition of ${name}: validated there, applied here
    RouterRule,
    parse_ruleset,
)

from .matching import LinearPattern, is_linear, linear
from .rule_index import RuleIndex
from .transforms import NotApplied, Phases, SpecProblem, parse_phases


@dataclass(frozen=True)
class RequestView:
    """What rules can match on: the path, headers (lower-case names) and cookies, in request order."""

    path: str
    headers: tuple[tuple[str, str], ...] = ()
    cookies: tuple[tuple[str, str], ...] = ()

    @classmethod
    def build(cls, path: str, headers: Iterable[tuple[str, str]]) -> RequestView:
        pairs = tuple((k.lower(), v) for k, v in headers)
        cookies = tuple(c for k, v in pairs if k == "cookie" for c in parse_cookie_header(v))
        return cls(path, pairs, cookies)


def parse_cookie_header(value: str) -> list[tuple[str, str]]:
    """Lenient ``Cookie`` parsing, as browsers send it (``a=1; b=2``); malformed parts are skipped."""
    out = []
    for part in value.split(";"):
        name, sep, val = part.strip().partition("=")
        if sep and name:
            if len(val) >= 2 and val[0] == val[-1] == '"':
                val = val[1:-1]
            out.append((name, val))
    return out


@dataclass(frozen=True)
class Decision:
    index: int
    action: str  # classify | proxy
    classify_type: str | None = None
    value: str | None = None
    address: str | None = None

    @property
    def type_label(self) -> str:
        return self.classify_type or "none"


@dataclass(frozen=True)
class CompiledRule:
    """A rule ready to evaluate: its patterns, its literal name, and (current dialect) its phases.

    ``phases`` is set for current-dialect rules: after the match, transform -> validate -> classify run,
    and a rule whose phases do not resolve does not apply (ADR 0014, decision 3). 2024-dialect rules
    keep that dialect's interpolation, where a group that did not participate interpolates as ``""``.
    """

    rule: RouterRule
    name_re: EcmaPattern | LinearPattern | None = None
    value_re: EcmaPattern | LinearPattern | None = None
    name: str | None = None  # literal header (lower-case) or cookie name
    phases: Phases | None = None

    @property
    def linear(self) -> bool:
        """Whether every pattern of this rule runs on the linear-time engine (transform patterns included)."""
        step_patterns = self.phases.patterns if self.phases is not None else ()
        return all(p is None or is_linear(p) for p in (self.name_re, self.value_re, *step_patterns))

    def groups(self, request: RequestView) -> dict[str, str | None] | None:
        """Named groups if the rule matches ``request``, else None."""
        m = self.rule.match
        if m is None:
            return {}
        assert self.value_re is not None
        if m.type == "path":
            hit = self.value_re.search(request.path)
            return dict(hit.named) if hit else None
        candidates = request.cookies if m.type == "cookie" else request.headers
        for name, value in candidates:
            from_name = self.name_groups(name)
            if from_name is None:
                continue
            value_hit = self.value_re.search(value)
            if value_hit is not None:
                return {**from_name, **value_hit.named}
        return None

    def name_groups(self, name: str) -> dict[str, str | None] | None:
        """The name pattern's groups (``{}`` for a literal name) if ``name`` is the rule's, else None."""
        if self.name is not None:
            return {} if name == self.name else None
        assert self.name_re is not None
        if not self.name_re.group_names:
            return {} if self.name_re.test(name) else None
        hit = self.name_re.search(name)
        return dict(hit.named) if hit is not None else None

    def applies(self, groups: Mapping[str, str | None]) -> tuple[bool, str | None]:
        """Whether the matched rule applies, and its classify value (phases, or 2024 interpolation)."""
        rule = self.rule
        if self.phases is not None:
            result = self.phases.apply(groups)
            if isinstance(result, NotApplied):
                return False, None
            return True, result.value
        value = rule.classify.value if rule.classify is not None else None
        return True, interpolate(value, groups) if value else None


def interpolate(template: str, groups: Mapping[str, str | None]) -> str:
    return INTERPOLATION.sub(lambda m: groups.get(m.group(1)) or "", template)


@dataclass
class Ruleset:
    rules: list[CompiledRule] = field(default_factory=list)
    source: bytes = b""  # the file it was loaded from: what an evaluation worker process loads again
    _index: RuleIndex | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def linear(self) -> bool:
        """Whether deciding takes time linear in the request, whatever the request (every pattern on RE2)."""
        return all(r.linear for r in self.rules)

    @property
    def index(self) -> RuleIndex:
        """The rules filed by the names and paths they need (built on first use, again if ``rules`` changed)."""
        index = self._index
        if index is None or not index.built_from(self.rules):
            index = self._index = RuleIndex(self.rules)
        return index

    def decide(self, request: RequestView) -> Decision | None:
        """match -> transform -> validate -> classify; the first rule that applies decides.

        Only the rules the index names as candidates are tried, in ruleset order: every rule it leaves out
        would have answered "no match" without running a pattern (:mod:`cells_dataplane.rule_index`), so
        the answer -- and whether a deferred pattern raises -- is that of :meth:`decide_linear_scan`.
        """
        rules = self.rules
        for index in self.index.candidates(request):
            decision = _decision(index, rules[index], request)
            if decision is not None:
                return decision
        return None

    def decide_linear_scan(self, request: RequestView) -> Decision | None:
        """The same decision, trying every rule in turn: the reference the indexed :meth:`decide` is held to."""
        for index, compiled in enumerate(self.rules):
            decision = _decision(index, compiled, request)
            if decision is not None:
                return decision
        return None


def _decision(index: int, compiled: CompiledRule, request: RequestView) -> Decision | None:
    """The rule's decision if it matches ``request`` and applies, else None (the next rule is tried)."""
    groups = compiled.groups(request)
    if groups is None:
        return None
    applies, value = compiled.applies(groups)
    if not applies:
        return None
    rule = compiled.rule
    if rule.action == "proxy":
        # No proxy section: the router's default upstream (address None here).
        return Decision(index, "proxy", address=rule.proxy.address if rule.proxy else None)
    assert rule.classify is not None
    return Decision(index, "classify", rule.classify.type, value)


def _bounded(pattern: str) -> EcmaPattern | LinearPattern:
    """A transform step's pattern on the same engines as the match's (RE2 where it can, ADR 0013)."""
    return linear(compile_pattern(pattern))


def compile_rule(rule: RouterRule) -> CompiledRule:
    """One rule, compiled; raises ``ValueError`` for what the router cannot evaluate."""
    if rule.action == "classify" and rule.classify is None:
        raise ValueError("rule action classify without its section")
    m = rule.match
    name_re = value_re = None
    name = None
    if m is not None:
        name_re = linear(compile_pattern(m.name_pattern)) if m.name_pattern is not None else None
        name = m.name.lower() if m.name is not None and m.type == "header" else m.name
        if m.type != "path" and name_re is None and name is None:
            raise ValueError(f"{m.type} match without a name or name pattern")
        value_re = linear(compile_pattern(m.value_pattern))
    phases = None
    if rule.dialect == "current":
        group_names = [*(name_re.group_names if name_re else ()), *(value_re.group_names if value_re else ())]
        value = rule.classify.value if rule.classify is not None else None
        parsed = parse_phases(rule.transform, rule.validate_, value, group_names, compile_pattern=_bounded)
        if isinstance(parsed, SpecProblem):
            where = f"rule {rule.id!r}" if rule.id else "rule"
            raise ValueError(f"{where}: {parsed.reason}: {parsed.message}")
        phases = parsed
    return CompiledRule(rule, name_re, value_re, name, phases)


def compile_rules(rules: list[RouterRule]) -> Ruleset:
    return Ruleset([compile_rule(rule) for rule in rules])


SCHEMES = ("auto", "http", "https")


@functools.lru_cache(maxsize=4096)  # per request on the hot path; addresses are few
def upstream_base(address: str, scheme: str = "auto") -> str:
    """The URL prefix the router sends a request for ``address`` to (ADR 0010).

    Upstream's cells are bare hostnames (``cell-2.gitlab.example``) reached over HTTPS; local setups write
    ``host:port`` and speak plain HTTP. So ``auto`` means https (port 443) for an address without a port
    and http for one with a port; ``http`` or ``https`` force the scheme, and an address without a port
    then gets that scheme's default port (80 or 443).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"upstream scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    if problem := address_problem(address):
        raise ValueError(problem)
    host, port = split_address(address)
    if scheme == "auto":
        scheme = "https" if port is None else "http"
    return f"{scheme}://{host}" if port is None else f"{scheme}://{host}:{port}"


def load_ruleset(raw: bytes | str) -> Ruleset:
    """Parse and compile a ``<ruleset>.json``; any problem raises (the caller keeps the last good one)."""
    ruleset = compile_rules(parse_ruleset(raw))
    ruleset.source = raw.encode() if isinstance(raw, str) else bytes(raw)
    return ruleset


_WORKER_RULESETS: dict[bytes, Ruleset] = {}


def decide_in_worker(source: bytes, request: RequestView) -> Decision | None:
    """:meth:`Ruleset.decide` in an evaluation worker process (the router kills it past its deadline)."""
    ruleset = _WORKER_RULESETS.get(source)
    if ruleset is None:
        _WORKER_RULESETS.clear()
        ruleset = _WORKER_RULESETS[source] = load_ruleset(source)
    return ruleset.decide(request)


def oversized_header(headers: Iterable[tuple[str, str]], cap: int) -> str | None:
    """The name of the first header whose value is longer than ``cap`` characters (cookies included), or None."""
    for name, value in headers:
        if len(value) > cap:
            return name
    return None
