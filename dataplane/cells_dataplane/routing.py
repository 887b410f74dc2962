"""Evaluate a router ruleset against a request (pure): first matching rule wins.

Patterns are evaluated with ECMAScript semantics by :mod:`cells_operator.ecmaregex` -- the same code
the operator validates with -- so what the operator accepted behaves here as it does at the edge.
Wherever RE2 can take a pattern's translation it evaluates it, in linear time, with the same answers
(:mod:`cells_dataplane.matching`, ADR 0013); :attr:`Ruleset.linear` says whether every pattern of a
ruleset is on RE2, and the router bounds the evaluation of the rest.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cells_operator.cell import address_problem, split_address
from cells_operator.ecmaregex import EcmaPattern, compile_pattern
from cells_operator.router_format import RouterRule, parse_ruleset
from cells_operator.rule import INTERPOLATION  # one definition of ${name}: validated there, applied here

from .matching import LinearPattern, is_linear, linear


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
    rule: RouterRule
    name_re: EcmaPattern | LinearPattern | None = None
    value_re: EcmaPattern | LinearPattern | None = None

    @property
    def linear(self) -> bool:
        """Whether every pattern of this rule runs on the linear-time engine."""
        return all(p is None or is_linear(p) for p in (self.name_re, self.value_re))

    def groups(self, request: RequestView) -> dict[str, str | None] | None:
        """Named groups if the rule matches ``request``, else None."""
        m = self.rule.match
        if m is None:
            return {}
        assert self.value_re is not None
        if m.type == "path":
            hit = self.value_re.search(request.path)
            return dict(hit.named) if hit else None
        assert self.name_re is not None
        candidates = request.cookies if m.type == "cookie" else request.headers
        name_groups = bool(self.name_re.group_names)
        for name, value in candidates:
            if not name_groups:
                if not self.name_re.test(name):
                    continue
                value_hit = self.value_re.search(value)
                if value_hit is not None:
                    return dict(value_hit.named)
                continue
            name_hit = self.name_re.search(name)
            if name_hit is None:
                continue
            value_hit = self.value_re.search(value)
            if value_hit is not None:
                return {**name_hit.named, **value_hit.named}
        return None


def interpolate(template: str, groups: Mapping[str, str | None]) -> str:
    return INTERPOLATION.sub(lambda m: groups.get(m.group(1)) or "", template)


@dataclass
class Ruleset:
    rules: list[CompiledRule] = field(default_factory=list)
    source: bytes = b""  # the file it was loaded from: what an evaluation worker process loads again

    @property
    def linear(self) -> bool:
        """Whether deciding takes time linear in the request, whatever the request (every pattern on RE2)."""
        return all(r.linear for r in self.rules)

    def decide(self, request: RequestView) -> Decision | None:
        for index, compiled in enumerate(self.rules):
            groups = compiled.groups(request)
            if groups is None:
                continue
            rule = compiled.rule
            if rule.action == "proxy":
                # No proxy section: the router's default upstream (address None here).
                return Decision(index, "proxy", address=rule.proxy.address if rule.proxy else None)
            assert rule.classify is not None
            value = interpolate(rule.classify.value, groups) if rule.classify.value else None
            return Decision(index, "classify", rule.classify.type, value)
        return None


def compile_rules(rules: list[RouterRule]) -> Ruleset:
    compiled = []
    for rule in rules:
        if rule.action == "classify" and rule.classify is None:
            raise ValueError("rule action classify without its section")
        m = rule.match
        if m is None:
            compiled.append(CompiledRule(rule))
            continue
        name_re = linear(compile_pattern(m.regex_name)) if m.regex_name is not None else None
        if m.type != "path" and name_re is None:
            raise ValueError(f"{m.type} match without regex_name")
        compiled.append(CompiledRule(rule, name_re, linear(compile_pattern(m.regex_value))))
    return Ruleset(compiled)


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
