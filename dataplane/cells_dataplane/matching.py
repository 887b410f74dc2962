"""Linear-time matching of routing patterns where the pattern allows it (ADR 0013).

:mod:`cells_formats.ecmaregex` translates an ECMAScript pattern into a Python ``re`` pattern evaluated
over UTF-16 code units. Python's ``re`` backtracks: a pattern such as ``^(a+)+$`` takes exponential time.
RE2 (``google-re2``) matches in time linear in the input and, for the first (leftmost) match and its
groups, prefers alternatives and repetitions in the same order as a backtracking engine. So every pattern
whose translation RE2 accepts is evaluated by RE2; the rest (lookarounds, backreferences, counted
repetitions above RE2's limit of 1,000) fall back to the ECMAScript evaluator, which the router bounds
with a deadline.

Two details keep RE2 exact:

- **Dialect**: the translation's ``\\uXXXX`` escapes become ``\\x{XXXX}``, ``\\Z`` (absolute end) becomes
  ``\\z``, and the spelled-out ASCII word boundary becomes RE2's own ``\\b`` (also ASCII; RE2's ``\\B``
  matches inside a multi-byte character, so ``\\B`` stays with the fallback).
- **UTF-16**: ECMAScript without the ``u`` flag sees code units; RE2 sees code points. Each surrogate code
  unit is mapped to its own private-use code point (U+F0000 + offset), which no pattern eligible for RE2
  can name: patterns that mention any code point from U+D800 up are left to the fallback. Negated classes
  and ``.`` match a mapped unit exactly as they match the surrogate in JavaScript.

The differential test (``tests/unit/test_hostile_matching.py``) runs the ECMAScript differential corpus
through this module and Node.js and compares index, text and groups.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Protocol

import re2  # type: ignore[import-untyped]  # google-re2 ships no annotations: _Re2Pattern types what we use

from cells_formats.ecmaregex import _WORD_BOUNDARY, EcmaMatch, EcmaPattern, from_code_units, to_code_units

_SURROGATES = re.compile("[\ud800-\udfff]")
_SURROGATE_SHIFT = 0xF0000 - 0xD800
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.max_mem = 8 << 20  # per pattern; a bigger program is left to the fallback
_RE2_OPTIONS.log_errors = False  # a pattern RE2 refuses is expected: it goes to the fallback


class _Re2Match(Protocol):
    def group(self, group: int | str, /) -> str | None: ...
    def start(self) -> int: ...


class _Re2Pattern(Protocol):
    """The part of a compiled ``re2`` pattern this module uses."""

    @property
    def groups(self) -> int: ...
    def search(self, text: str, /) -> _Re2Match | None: ...


def _map_surrogates(units: str) -> str:
    if not _SURROGATES.search(units):
        return units
    return _SURROGATES.sub(lambda m: chr(ord(m.group()) + _SURROGATE_SHIFT), units)


def _unmap(text: str) -> str:
    return "".join(chr(ord(c) - _SURROGATE_SHIFT) if 0xF0000 <= ord(c) < 0xF0800 else c for c in text)


def re2_dialect(python: str) -> str | None:
    """The RE2 spelling of a translated pattern, or None if it names code points RE2 must not see."""
    # RE2's \B also matches between the bytes of one UTF-8 character: \B stays a lookaround (fallback).
    python = python.replace(_WORD_BOUNDARY, "\\b")
    out: list[str] = []
    i = 0
    while i < len(python):
        c = python[i]
        if ord(c) >= 0xD800:
            return None
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = python[i + 1 : i + 2]
        if nxt in ("u", "U"):
            width = 4 if nxt == "u" else 8
            digits = python[i + 2 : i + 2 + width]
            if int(digits, 16) >= 0xD800:
                return None
            out.append(f"\\x{{{digits}}}")
            i += 2 + width
            continue
        if nxt == "x":
            out.append(python[i : i + 4])
            i += 4
            continue
        if nxt == "Z":
            out.append("\\z")
        else:
            out.append(c + nxt)
        i += 2
    return "".join(out)


@dataclass(frozen=True)
class LinearPattern:
    """An :class:`EcmaPattern` evaluated by RE2: the same ``test``/``search`` answers, in linear time."""

    ecma: EcmaPattern
    _re2: _Re2Pattern = field(compare=False, repr=False)
    linear: bool = True

    @property
    def source(self) -> str:
        return self.ecma.source

    @property
    def group_names(self) -> tuple[str, ...]:
        return self.ecma.group_names

    def test(self, text: str) -> bool:
        return self._re2.search(_map_surrogates(to_code_units(text))) is not None

    def search(self, text: str) -> EcmaMatch | None:
        units = _map_surrogates(to_code_units(text))
        m = self._re2.search(units)
        if m is None:
            return None
        ecma = self.ecma

        def decode(s: str | None) -> str | None:
            return None if s is None else from_code_units(_unmap(s))

        groups = tuple(decode(m.group(i + 1)) for i in range(ecma.group_count))
        named = {name: decode(m.group(py)) for name, py in ecma._names_to_python}
        text0 = decode(m.group(0))
        assert text0 is not None
        return EcmaMatch(index=m.start(), text=text0, groups=groups, named=named)


def linear(ecma: EcmaPattern) -> LinearPattern | EcmaPattern:
    """RE2 for ``ecma`` when its translation allows it, else ``ecma`` itself (the bounded fallback)."""
    dialect = re2_dialect(ecma.python)
    if dialect is None:
        return ecma
    try:
        compiled: _Re2Pattern = re2.compile(dialect, _RE2_OPTIONS)
    except re2.error:
        return ecma
    if compiled.groups < ecma.group_count:
        return ecma
    return LinearPattern(ecma, compiled)


def is_linear(pattern: object) -> bool:
    return bool(getattr(pattern, "linear", False))


class NeedsBacktracking(Exception):
    """A pattern off RE2 would have to run: the decision belongs in an evaluation worker (ADR 0013)."""


@dataclass(frozen=True)
class Deferred:
    """A pattern off RE2, standing in for it on the event loop: using it raises :class:`NeedsBacktracking`.

    A ruleset whose fallback patterns are replaced by this decides on the event loop every request that no
    backtracking pattern has to see (for example one without the cookie a rule's name pattern selects), with
    the same first-match answer, and hands the others to a worker process.
    """

    pattern: EcmaPattern

    @property
    def source(self) -> str:
        return self.pattern.source

    @property
    def group_names(self) -> tuple[str, ...]:
        return self.pattern.group_names

    linear = False

    def test(self, text: str) -> bool:
        raise NeedsBacktracking(self.pattern.source)

    def search(self, text: str) -> EcmaMatch | None:
        raise NeedsBacktracking(self.pattern.source)


def deferred(pattern):
    """``pattern`` itself if it runs on RE2 (or is absent), else a :class:`Deferred` standing in for it."""
    return pattern if pattern is None or is_linear(pattern) else Deferred(pattern)


# What :func:`required_prefix` reads as itself: ASCII characters that are literals outside a class in an
# ECMAScript pattern without flags, and the escapes of syntax characters (identity escapes, Annex B).
_PREFIX_LITERALS = frozenset(string.ascii_letters + string.digits + "_-/:=,;@%&~!'\"<># ")
_ESCAPED_LITERALS = frozenset("./-$^*+?()[]{}|\\")
_QUANTIFIERS = frozenset("?*+{")


def required_prefix(source: str) -> str:
    """A literal that every string the ECMAScript pattern ``source`` matches starts with ("" if none is known).

    The rule index (:mod:`cells_dataplane.rule_index`) skips a rule whose name or path pattern requires a
    prefix that no name or path of the request has, so the answer may be shorter than the pattern's real
    prefix, never longer or different. Read conservatively: only a pattern anchored by ``^`` (without flags,
    ``^`` is the start of the input and nothing else), without any ``|`` (a top-level alternative would
    escape the anchor; a ``|`` anywhere is refused rather than parsed), then a run of plain ASCII literals;
    a quantifier after the run (``?*+{``) may repeat its last character zero times, so that one is dropped.
    ASCII only, so the prefix is the same in code units (what the engines see) and in characters.
    """
    if not source.startswith("^") or "|" in source:
        return ""
    out: list[str] = []
    i = 1
    while i < len(source):
        c = source[i]
        if c in _PREFIX_LITERALS:
            out.append(c)
            i += 1
        elif c == "\\" and i + 1 < len(source) and source[i + 1] in _ESCAPED_LITERALS:
            out.append(source[i + 1])
            i += 2
        else:
            break
    if out and i < len(source) and source[i] in _QUANTIFIERS:
        out.pop()
    return "".join(out)
