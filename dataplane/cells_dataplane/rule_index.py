"""Which rules of a ruleset a request could match, found without trying every rule (issue 15, ADR 0013).

Deciding tries rules top to bottom; at 1,000 rules a request that only the catch-all matches used to run
every rule's name pattern against every cookie: milliseconds per request. Most routing rules name what
they look at literally -- a header or cookie name, or a pattern anchored on a literal prefix such as
``^_gitlab_session`` or ``^/api/v4/`` -- and a rule cannot match a request that has no such name or path.
So each rule is filed under what it needs (a literal name; else a literal prefix its name pattern, or its
path pattern, requires, :func:`cells_dataplane.matching.required_prefix`), and a request's names and path
look up the rules it could match in a few dictionary reads.

First match stays exact because the index only ever *skips* a rule whose evaluation would certainly
have returned "no match" without running anything observable: the rule is still evaluated by its own
:meth:`CompiledRule.groups`, in the original order, whenever it is a candidate. A rule the index cannot
file -- no match (catch-all), an unanchored pattern, or a pattern standing in for one off RE2
(:class:`cells_dataplane.matching.Deferred`, whose use raises ``NeedsBacktracking``) -- is a candidate for
every request, so a deferred pattern raises exactly when the rule-by-rule loop would have reached it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cells_formats.ecmaregex import EcmaPattern
from cells_formats.router_format import RouterRule

from .matching import LinearPattern, required_prefix


class CompiledRule(Protocol):
    """What the index reads of a :class:`cells_dataplane.routing.CompiledRule` (routing imports this module)."""

    @property
    def rule(self) -> RouterRule: ...
    @property
    def name(self) -> str | None: ...
    @property
    def name_re(self) -> object: ...
    @property
    def value_re(self) -> object: ...


class RequestView(Protocol):
    """What the index reads of a :class:`cells_dataplane.routing.RequestView`."""

    @property
    def path(self) -> str: ...
    @property
    def headers(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def cookies(self) -> tuple[tuple[str, str], ...]: ...


@dataclass
class _KeyIndex:
    """Rules filed under an exact key or a literal prefix of the key (a header or cookie name, or a path)."""

    exact: dict[str, list[int]] = field(default_factory=dict)
    by_prefix: dict[str, list[int]] = field(default_factory=dict)
    lengths: list[int] = field(default_factory=list)  # the distinct prefix lengths, ascending

    def __bool__(self) -> bool:
        return bool(self.exact or self.by_prefix)

    def add(self, rule: int, *, exact: str | None = None, prefix: str | None = None) -> None:
        if exact is not None:
            self.exact.setdefault(exact, []).append(rule)
        if prefix is not None:
            self.by_prefix.setdefault(prefix, []).append(rule)
            self.lengths = sorted({*self.lengths, len(prefix)})

    def collect(self, keys: Iterable[str], into: set[int]) -> None:
        """Add to ``into`` the rules filed under any of ``keys`` or under a prefix of one of them."""
        exact, by_prefix, lengths = self.exact, self.by_prefix, self.lengths
        for key in keys:
            if (found := exact.get(key)) is not None:
                into.update(found)
            size = len(key)
            for length in lengths:
                if length > size:
                    break
                if (found := by_prefix.get(key[:length])) is not None:
                    into.update(found)


def _evaluable_prefix(pattern: object) -> str:
    """The literal prefix ``pattern`` requires, if evaluating it can only answer (never raise); else ""."""
    if isinstance(pattern, LinearPattern | EcmaPattern):
        return required_prefix(pattern.source)
    return ""  # Deferred (or anything else): the rule stays a candidate, its pattern runs where it did


class RuleIndex:
    """The candidate rules of a request, in ruleset order; built once per ruleset (the rules are not edited)."""

    def __init__(self, rules: Sequence[CompiledRule]):
        self.rules = rules
        self.count = len(rules)
        self.cookie, self.header, self.path = _KeyIndex(), _KeyIndex(), _KeyIndex()
        always: list[int] = []
        for number, compiled in enumerate(rules):
            if not self._file(number, compiled):
                always.append(number)
        self.always: tuple[int, ...] = tuple(always)

    def _file(self, number: int, compiled: CompiledRule) -> bool:
        """File the rule under what a request must contain for it to match; False if nothing is known."""
        match = compiled.rule.match
        if match is None:
            return False
        if match.type == "path":
            prefix = _evaluable_prefix(compiled.value_re)
            if prefix:
                self.path.add(number, prefix=prefix)
            return bool(prefix)
        keys = self.cookie if match.type == "cookie" else self.header
        if compiled.name is not None:
            keys.add(number, exact=compiled.name)
            return True
        prefix = _evaluable_prefix(compiled.name_re)
        if prefix:
            keys.add(number, prefix=prefix)
        return bool(prefix)

    def built_from(self, rules: Sequence[CompiledRule]) -> bool:
        return rules is self.rules and len(rules) == self.count

    def candidates(self, request: RequestView) -> Iterable[int]:
        """Numbers of the rules ``request`` could match, ascending: every other rule answers "no match"."""
        hits: set[int] = set()
        if self.cookie:
            self.cookie.collect((name for name, _ in request.cookies), hits)
        if self.header:
            self.header.collect((name for name, _ in request.headers), hits)
        if self.path:
            self.path.collect((request.path,), hits)
        if not hits:
            return self.always
        return _merge(self.always, sorted(hits))


def _merge(always: tuple[int, ...], hits: list[int]) -> Iterator[int]:
    """Both ascending lists as one, lazily: deciding usually stops at the first candidate that applies."""
    if not always:
        return iter(hits)
    return heapq.merge(always, hits)
