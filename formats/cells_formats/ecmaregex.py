"""ECMAScript regular expressions, validated and evaluated from Python.

The HTTP router runs at the edge in a JavaScript engine, so routing patterns are ECMAScript regular
expressions (no flags, with the web-compatibility grammar of Annex B), not Python ones: named groups are
``(?<name>...)``, ``$`` matches only at the very end, ``.`` excludes four line terminators, ``\\d`` and
``\\w`` are ASCII, ``\\s`` includes Unicode spaces, strings are UTF-16, a backreference to a group that
has not matched matches the empty string, and many stray characters are literals rather than errors.

This module parses a pattern by the ECMAScript grammar -- rejecting exactly what a JavaScript engine
rejects, with the same kind of message -- and translates it into an equivalent Python ``re`` pattern.
A few valid ECMAScript constructs cannot be translated faithfully to ``re``; those are rejected as
:class:`UnsupportedPattern` (never published) rather than evaluated differently. A differential test
runs the same patterns and inputs through Node.js and through :func:`compile_pattern` and compares.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

# JavaScript's WhiteSpace and LineTerminator code points: what \s matches.
_JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_JS_SPACE_CLASS = "\\t\\n\\x0b\\x0c\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
_DOT = "[^\\n\\r\\u2028\\u2029]"
_W = "[A-Za-z0-9_]"
_WORD_BOUNDARY = f"(?:(?<={_W})(?!{_W})|(?<!{_W})(?={_W}))"
_NOT_WORD_BOUNDARY = f"(?:(?<={_W})(?={_W})|(?<!{_W})(?!{_W}))"
_CONTROL_ESCAPES = {"f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_HEX = set("0123456789abcdefABCDEF")


class PatternError(ValueError):
    """Invalid ECMAScript pattern: a JavaScript engine rejects it too."""

    def __init__(self, pattern: str, message: str):
        super().__init__(f"invalid ECMAScript regular expression /{pattern}/: {message}")
        self.pattern = pattern
        self.reason = message


class UnsupportedPattern(PatternError):
    """Valid ECMAScript that cells-operator's evaluator cannot reproduce exactly; refused, never guessed."""

    def __init__(self, pattern: str, message: str):
        ValueError.__init__(self, f"regular expression /{pattern}/ is valid ECMAScript but not supported: {message}")
        self.pattern = pattern
        self.reason = message


@dataclass(frozen=True)
class EcmaPattern:
    """A compiled ECMAScript pattern: its source, group names in order, and the Python equivalent."""

    source: str
    python: str
    group_names: tuple[str, ...]  # named groups, in order of appearance
    group_count: int
    _names_to_python: tuple[tuple[str, str], ...] = ()
    _compiled: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def test(self, text: str) -> bool:
        """Like JavaScript ``RegExp.prototype.test``: whether the pattern matches anywhere (no match object)."""
        assert self._compiled is not None
        return self._compiled.search(to_code_units(text)) is not None

    def search(self, text: str) -> EcmaMatch | None:
        """Like JavaScript ``RegExp.prototype.exec`` without flags: the first match anywhere, or None."""
        assert self._compiled is not None
        units = to_code_units(text)
        m = self._compiled.search(units)
        if m is None:
            return None
        groups = tuple(None if g is None else from_code_units(g) for g in m.groups()[: self.group_count])
        named = {
            name: (None if m.group(py) is None else from_code_units(m.group(py))) for name, py in self._names_to_python
        }
        return EcmaMatch(
            index=m.start(),
            text=from_code_units(m.group(0)),
            groups=groups,
            named=named,
        )


@dataclass(frozen=True)
class EcmaMatch:
    index: int  # in UTF-16 code units, as JavaScript reports it
    text: str
    groups: tuple[str | None, ...]
    named: dict[str, str | None]


def to_code_units(text: str) -> str:
    """Represent a string as JavaScript sees it: astral characters become two surrogate code units."""
    if text.isascii() or all(ord(c) <= 0xFFFF for c in text):
        return text
    out = []
    for c in text:
        cp = ord(c)
        if cp > 0xFFFF:
            cp -= 0x10000
            out.append(chr(0xD800 + (cp >> 10)))
            out.append(chr(0xDC00 + (cp & 0x3FF)))
        else:
            out.append(c)
    return "".join(out)


def from_code_units(units: str) -> str:
    """Join surrogate pairs back into characters (lone surrogates stay as they are)."""
    if units.isascii() or not any(0xD800 <= ord(c) <= 0xDFFF for c in units):
        return units
    return units.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def _char(cp: int) -> str:
    """A code unit as a Python-regex escape, safe inside and outside classes."""
    c = chr(cp)
    if c.isascii() and c.isalnum():
        return c
    return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"


@dataclass(frozen=True)
class _Atom:
    python: str
    nullable: bool = False  # can match the empty string
    capturing: bool = False  # is itself a capture group
    nested_captures: bool = False  # contains capture groups


@dataclass
class _Group:
    capturing: bool
    index: int  # capture number, 0 if not capturing
    inside_quantified: bool = False
    lookbehind: bool = False


class _Parser:
    def __init__(self, source: str):
        self.src = source
        self.p = to_code_units(source)  # parse UTF-16 code units, as JavaScript does
        self.i = 0
        self.names: list[str] = []
        self.total_groups, has_named = self._prescan()
        self.has_named = has_named
        self.closed: set[int] = set()
        self.group_no = 0
        self.open_groups: list[_Group] = []
        self.python_names: dict[str, str] = {}
        self.unsupported_reason: str | None = None

    # ---------------------------------------------------------------- helpers
    def error(self, message: str) -> PatternError:
        return PatternError(self.src, message)

    def unsupported(self, message: str) -> UnsupportedPattern:
        return UnsupportedPattern(self.src, message)

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.p[j] if j < len(self.p) else ""

    def eat(self, s: str) -> bool:
        if self.p.startswith(s, self.i):
            self.i += len(s)
            return True
        return False

    def _prescan(self) -> tuple[int, bool]:
        """Count capture groups and detect named groups before parsing (backreferences need both)."""
        count, named, i, in_class = 0, False, 0, False
        p = self.p
        while i < len(p):
            c = p[i]
            if c == "\\":
                i += 2
                continue
            if in_class:
                in_class = c != "]"
            elif c == "[":
                in_class = True
            elif c == "(":
                if p.startswith("(?<", i) and not p.startswith("(?<=", i) and not p.startswith("(?<!", i):
                    count += 1
                    named = True
                elif not p.startswith("(?", i):
                    count += 1
            i += 1
        return count, named

    # ---------------------------------------------------------------- grammar
    def parse(self) -> str:
        out, _ = self.disjunction()
        if self.i < len(self.p):
            raise self.error("Unmatched ')'")
        if self.unsupported_reason:
            # Only now: a JavaScript syntax error anywhere in the pattern takes precedence.
            raise self.unsupported(self.unsupported_reason)
        return out

    def refuse(self, reason: str) -> None:
        self.unsupported_reason = self.unsupported_reason or reason

    def disjunction(self) -> tuple[str, bool]:
        """Python source and whether it can match the empty string."""
        parts = [self.alternative()]
        while self.eat("|"):
            parts.append(self.alternative())
        return "|".join(p for p, _ in parts), any(n for _, n in parts)

    def alternative(self) -> tuple[str, bool]:
        out, nullable = [], True
        while self.i < len(self.p) and self.peek() not in ("|", ")"):
            py, n = self.term()
            out.append(py)
            nullable = nullable and n
        return "".join(out), nullable

    def term(self) -> tuple[str, bool]:
        c = self.peek()
        # Assertions that can never be quantified.
        if c == "^":
            self.i += 1
            self._no_quantifier()
            return "(?:\\A)", True
        if c == "$":
            self.i += 1
            self._no_quantifier()
            return "(?:\\Z)", True
        if c == "\\" and self.peek(1) in ("b", "B"):
            letter = self.peek(1)
            self.i += 2
            self._no_quantifier()
            # Spelled out: Python's \B never matches in an empty string, JavaScript's does.
            return (_WORD_BOUNDARY if letter == "b" else _NOT_WORD_BOUNDARY), True
        if self.p.startswith("(?<=", self.i) or self.p.startswith("(?<!", self.i):
            kind = self.p[self.i : self.i + 4]
            self.i += 4
            body, _ = self._group_body(_Group(False, 0, lookbehind=True))
            self._no_quantifier()
            return f"{kind}{body})", True
        atom = self.atom()
        bounds = self.quantifier()
        if bounds is None:
            return atom.python, atom.nullable
        quant, lo, hi = bounds
        if atom.nested_captures:
            self.refuse(
                "a capture group inside a quantified group (JavaScript resets such captures on every "
                "repetition, Python does not); quantify a non-capturing group without captures instead"
            )
        elif atom.capturing and atom.nullable and (hi is None or hi > lo):
            self.refuse(
                "a quantified capture group that can match the empty string (JavaScript rejects empty "
                "repetitions, Python captures them)"
            )
        return f"(?:{atom.python}){quant}", atom.nullable or lo == 0

    def _no_quantifier(self) -> None:
        if self.peek() in ("*", "+", "?") or (self.peek() == "{" and self._braced_quantifier(peek=True)):
            raise self.error("Nothing to repeat")

    def _braced_quantifier(self, peek: bool = False) -> tuple[int, int | None] | None:
        m = re.match(r"\{(\d+)(,(\d*))?\}", self.p[self.i :])
        if not m:
            return None
        lo = int(m.group(1))
        hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
        if not peek:
            self.i += m.end()
        return lo, hi

    def quantifier(self) -> tuple[str, int, int | None] | None:
        c = self.peek()
        if c in ("*", "+", "?"):
            self.i += 1
            q, lo, hi = c, (1 if c == "+" else 0), (1 if c == "?" else None)
        elif c == "{" and (bounds := self._braced_quantifier()):
            lo, hi = bounds
            if hi is not None and hi < lo:
                raise self.error("numbers out of order in {} quantifier")
            if max(lo, hi or 0) > 4_000_000_000:
                self.refuse("repetition counts above 4000000000")
            q = f"{{{lo}}}" if hi == lo else f"{{{lo},{'' if hi is None else hi}}}"
        else:
            return None
        if self.eat("?"):
            q += "?"
        return q, lo, hi

    def atom(self) -> _Atom:
        c = self.peek()
        if c == "(":
            return self.group()
        if c == ".":
            self.i += 1
            return _Atom(_DOT)
        if c == "[":
            return _Atom(self.char_class())
        if c == "\\":
            py = self.atom_escape()
            return _Atom(py, nullable=py == "(?:)" or py.startswith("(?("))
        if c in ("*", "+", "?"):
            raise self.error("Nothing to repeat")
        if c == "{":
            if self._braced_quantifier(peek=True):
                raise self.error("Nothing to repeat")
            self.i += 1
            return _Atom("\\{")
        # Annex B: ']' and '}' are literals.
        self.i += 1
        return _Atom(_char(ord(c)))

    def group(self) -> _Atom:
        for opener, lookahead in (("(?:", False), ("(?=", True), ("(?!", True)):
            if self.eat(opener):
                before = self.group_no
                body, nullable = self._group_body(_Group(False, 0))
                return _Atom(f"{opener}{body})", nullable or lookahead, nested_captures=self.group_no > before)
        name = None
        if self.eat("(?<"):
            name = self.group_name()
            if name in self.python_names:
                raise self.error("Duplicate capture group name")
        elif self.peek(1) == "?":
            raise self.error("Invalid group")
        else:
            self.i += 1
        self.group_no += 1
        number = self.group_no
        opener = "("
        if name is not None:
            self.names.append(name)
            self.python_names[name] = f"g{number}_named"
            opener = f"(?P<g{number}_named>"
        body, nullable = self._group_body(_Group(True, number))
        return _Atom(f"{opener}{body})", nullable, capturing=True, nested_captures=self.group_no > number)

    def _group_body(self, group: _Group) -> tuple[str, bool]:
        self.open_groups.append(group)
        body = self.disjunction()
        self.open_groups.pop()
        if not self.eat(")"):
            raise self.error("Unterminated group")
        if group.capturing:
            self.closed.add(group.index)
        return body

    def group_name(self) -> str:
        start = self.i
        while self.i < len(self.p) and self.peek() != ">":
            self.i += 1
        if self.i >= len(self.p):
            raise self.error("Invalid capture group name")
        name = from_code_units(self.p[start : self.i])
        self.i += 1
        if not _valid_group_name(name):
            raise self.error("Invalid capture group name")
        return name

    def atom_escape(self) -> str:
        self.i += 1  # backslash
        if self.i >= len(self.p):
            raise self.error("\\ at end of pattern")
        c = self.peek()
        if c in "123456789":
            m = re.match(r"\d+", self.p[self.i :])
            assert m
            number = int(m.group(0))
            if number <= self.total_groups:
                self.i += m.end()
                return self._backreference(number)
            # Annex B: not a backreference -> legacy octal escape, or identity escape for 8 and 9.
            if c in "89":
                self.i += 1
                return _char(ord(c))
            return _char(self._legacy_octal())
        if c == "0":
            if self.peek(1).isdigit() and self.peek(1) in "01234567":
                return _char(self._legacy_octal())
            self.i += 1
            return "\\x00"
        if c == "k":
            if self.has_named:
                self.i += 1
                if not self.eat("<"):
                    raise self.error("Invalid named reference")
                name = self.group_name()
                if name not in self.names and not self._named_later(name):
                    raise self.error("Invalid named capture referenced")
                return self._named_backreference(name)
            self.i += 1
            return "k"
        if c in "dDwWsS":
            self.i += 1
            return {
                "d": "[0-9]",
                "D": "[^0-9]",
                "w": "[A-Za-z0-9_]",
                "W": "[^A-Za-z0-9_]",
                "s": f"[{_JS_SPACE_CLASS}]",
                "S": f"[^{_JS_SPACE_CLASS}]",
            }[c]
        cp = self._character_escape(in_class=False)
        return _char(cp)

    def _named_later(self, name: str) -> bool:
        return f"(?<{name}>" in self.p

    def _backreference(self, number: int) -> str:
        if number not in self.closed:
            # Forward reference or reference from inside its own group: JavaScript matches empty.
            return "(?:)"
        if any(g.inside_quantified for g in self.open_groups):  # pragma: no cover - guarded by term()
            raise self.unsupported("backreference inside a quantified group")
        return f"(?({number})\\{number})" if number < 100 else f"(?({number})(?:\\{number}))"

    def _named_backreference(self, name: str) -> str:
        if name not in self.python_names:
            return "(?:)"  # forward reference
        py = self.python_names[name]
        number = int(py[1:].split("_")[0])
        if number not in self.closed:
            return "(?:)"
        return f"(?({py})(?P={py}))"

    def _legacy_octal(self) -> int:
        m = re.match(r"[0-3][0-7]{0,2}|[4-7][0-7]?", self.p[self.i :])
        assert m
        self.i += m.end()
        return int(m.group(0), 8)

    def _character_escape(self, in_class: bool) -> int:
        """The code unit of a CharacterEscape (or Annex B identity escape); ``self.i`` is after the ``\\``."""
        c = self.peek()
        if c in _CONTROL_ESCAPES:
            self.i += 1
            return ord(_CONTROL_ESCAPES[c])
        if c == "c":
            nxt = self.peek(1)
            if nxt.isascii() and nxt.isalpha():
                self.i += 2
                return ord(nxt) % 32
            if in_class and (nxt.isdigit() or nxt == "_"):
                self.i += 2
                return ord(nxt) % 32
            # Annex B: "\c" without a control letter is a literal backslash; the "c" follows as itself.
            return ord("\\")
        if c == "x":
            if self.peek(1) in _HEX and self.peek(2) in _HEX and self.peek(1) and self.peek(2):
                self.i += 3
                return int(self.p[self.i - 2 : self.i], 16)
            self.i += 1
            return ord("x")
        if c == "u":
            digits = self.p[self.i + 1 : self.i + 5]
            if len(digits) == 4 and all(d in _HEX for d in digits):
                self.i += 5
                return int(digits, 16)
            self.i += 1
            return ord("u")
        self.i += 1
        return ord(c)  # identity escape (Annex B: any character but "c", and "k" handled above)

    # ---------------------------------------------------------------- classes
    def char_class(self) -> str:
        self.i += 1  # [
        negated = self.eat("^")
        items: list[str] = []  # Python class items
        non_space = False  # the class contains \S: JavaScript's \S is not Python's
        while True:
            if self.i >= len(self.p):
                raise self.error("Unterminated character class")
            if self.eat("]"):
                break
            lo = self._class_atom()
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.i += 1
                hi = self._class_atom()
                if isinstance(lo, int) and isinstance(hi, int):
                    if hi < lo:
                        raise self.error("Range out of order in character class")
                    items.append(f"{_char(lo)}-{_char(hi)}")
                    continue
                # Annex B: a range with a class escape on either side is a union with a literal "-".
                for part in (lo, ord("-"), hi):
                    non_space |= self._add_class_item(items, part)
                continue
            non_space |= self._add_class_item(items, lo)
        body = "".join(items)
        if not non_space:
            if not body:
                return "[^\\s\\S]" if not negated else "[\\s\\S]"
            return f"[{'^' if negated else ''}{body}]"
        # The class includes JavaScript's \S (everything but JS whitespace).
        if not negated:
            return f"(?:[^{_JS_SPACE_CLASS}]" + (f"|[{body}])" if body else ")")
        # [^...\S...] = JS whitespace that is not one of the other items
        return f"(?:(?![{body}])[{_JS_SPACE_CLASS}])" if body else f"[{_JS_SPACE_CLASS}]"

    def _add_class_item(self, items: list[str], item: int | str) -> bool:
        if item == "S":
            return True
        if isinstance(item, int):
            items.append(_char(item))
        else:
            items.append({"d": "0-9", "D": "\\D", "w": "A-Za-z0-9_", "W": "\\W", "s": _JS_SPACE_CLASS}[item])
        return False

    def _class_atom(self) -> int | str:
        """A code unit, or one of d D w W s S for a class escape."""
        c = self.peek()
        if c != "\\":
            self.i += 1
            return ord(c)
        self.i += 1
        if self.i >= len(self.p):
            raise self.error("\\ at end of pattern")
        c = self.peek()
        if c in "dDwWsS":
            self.i += 1
            return c
        if c == "b":
            self.i += 1
            return 8
        if c == "-":
            self.i += 1
            return ord("-")
        if c.isdigit():
            if c in "89":
                self.i += 1
                return ord(c)
            if c == "0" and not (self.peek(1) in "01234567" and self.peek(1)):
                self.i += 1
                return 0
            return self._legacy_octal()
        if c == "k":
            self.i += 1
            return ord("k")
        return self._character_escape(in_class=True)


def _valid_group_name(name: str) -> bool:
    if not name:
        return False
    first, rest = name[0], name[1:]
    if not (first in "$_" or first.isidentifier()):
        return False
    return all(ch in "$_\u200c\u200d" or ("a" + ch).isidentifier() for ch in rest)


@lru_cache(maxsize=4096)
def compile_pattern(source: str) -> EcmaPattern:
    """Validate ``source`` as an ECMAScript pattern (no flags) and compile its Python equivalent.

    Raises :class:`PatternError` for what JavaScript rejects and :class:`UnsupportedPattern` for valid
    ECMAScript the evaluator cannot reproduce exactly.
    """
    parser = _Parser(source)
    python = parser.parse()
    try:
        compiled = re.compile(python, re.ASCII)
    except re.error as exc:
        if "look-behind" in str(exc):
            raise UnsupportedPattern(source, "lookbehind of variable length") from exc
        raise UnsupportedPattern(source, f"cannot be evaluated in Python ({exc})") from exc
    return EcmaPattern(
        source=source,
        python=python,
        group_names=tuple(parser.names),
        group_count=parser.group_no,
        _names_to_python=tuple((n, parser.python_names[n]) for n in parser.names),
        _compiled=compiled,
    )


def check_pattern(source: str) -> str | None:
    """None if ``source`` is usable, else a message saying why not."""
    try:
        compile_pattern(source)
    except PatternError as exc:
        return str(exc)
    return None
