"""The router's linear-time engine (RE2) answers exactly as Node.js does (ADR 0013).

The ECMAScript differential corpus -- curated routing and corner-case patterns and 3,000 random ones --
runs through :func:`cells_dataplane.matching.linear` and through Node.js; index, matched text, numbered and
named groups must agree. Patterns RE2 cannot take stay on the ECMAScript evaluator, which the same corpus
already proves against Node.js.
"""

from __future__ import annotations

import random

from cells_dataplane.matching import is_linear, linear, re2_dialect
from cells_formats.ecmaregex import compile_pattern
from tests.unit.test_ecmaregex_differential import CURATED, INPUTS, SHORT_INPUTS, compare, random_pattern

HOSTILE_INPUTS = [*INPUTS, "a" * 40 + "!", "\ud83d", "x\udc00y", "😀a", "cell-12-" + "😀" * 3]


def test_curated_patterns_on_re2_agree_with_nodejs():
    agreed, _unsupported, mismatches = compare(CURATED, HOSTILE_INPUTS, engine=linear)
    assert not mismatches, "\n".join(mismatches)
    assert agreed >= len(CURATED) - 4


def test_random_patterns_on_re2_agree_with_nodejs():
    rng = random.Random(20261128)
    patterns = sorted({random_pattern(rng) for _ in range(3000)})
    agreed, _unsupported, mismatches = compare(patterns, SHORT_INPUTS, engine=linear)
    assert not mismatches, "\n".join(mismatches[:20])
    assert agreed > 2000


def test_routing_and_catastrophic_patterns_run_on_re2():
    for pattern in [
        r"^(?<cell_name>cell-\d+)-.*",
        r"^_gitlab_session(_[0-9a-f]+)?$",
        r"^/api/v4/cells/(?<cell_id>\d+)/",
        r"\bfoo\b",
        r"^(a+)+$",
        r"^(a|a)*$",
    ]:
        assert is_linear(linear(compile_pattern(pattern))), pattern


def test_patterns_re2_cannot_take_stay_on_the_ecmascript_evaluator():
    for pattern in [r"(a)?b\1", r"a(?=b)", r"(?<!x)y", "\\ud83d", "[\\ud800-\\udfff]", "a{1001}"]:
        compiled = compile_pattern(pattern)
        assert linear(compiled) is compiled, pattern


def test_catastrophic_input_is_linear_on_re2():
    # 10,000 characters against ^(a+)+$ would never finish on a backtracking engine; here it is one scan.
    m = linear(compile_pattern(r"^(a+)+$")).search("a" * 10_000 + "!")
    assert m is None
    hit = linear(compile_pattern(r"^(a+)+$")).search("a" * 10_000)
    assert hit is not None and hit.groups == ("a" * 10_000,)


def test_dialect():
    assert re2_dialect("\\u002d\\Z") == "\\x{002d}\\z"
    assert re2_dialect("\\ud800") is None
    assert re2_dialect("\\\\u") == "\\\\u"
