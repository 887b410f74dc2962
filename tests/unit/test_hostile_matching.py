"""The router's linear-time engine (RE2) answers exactly as Node.js does (ADR 0013).

The ECMAScript differential corpus -- curated routing and corner-case patterns and 3,000 random ones --
runs through :func:`cells_dataplane.matching.linear` and through Node.js; index, matched text, numbered and
named groups must agree. Patterns RE2 cannot take stay on the ECMAScript evaluator, which the same corpus
already proves against Node.js.
"""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from cells_dataplane.matching import Deferred, NeedsBacktracking, is_linear, linear, re2_dialect
from cells_dataplane.router import BoundedDecider
from cells_dataplane.routing import RequestView, load_ruleset
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


# -- deciding on the event loop what no backtracking pattern has to see (issue 17, item 5) -----------------

FALLBACK_FIRST = json.dumps(
    [
        # A backreference keeps this value pattern off RE2; its name pattern is on RE2.
        {"match": {"type": "cookie", "regex_name": "^hostile$", "regex_value": r"^(a|a)*\1$"}, "action": "proxy"},
        {
            "match": {"type": "cookie", "regex_name": "^_gitlab_session$", "regex_value": "^(?<cell>cell-\\d+)-"},
            "action": "classify",
            "classify": {"type": "SESSION_PREFIX", "value": "${cell}"},
        },
        {"match": {"type": "header", "regex_name": "^x-api$", "regex_value": "^(?=v)"}, "action": "proxy"},
        {"action": "classify", "classify": {"type": "FIRST_CELL"}},
    ]
)


def _view(path: str, cookie: str | None = None) -> RequestView:
    return RequestView.build(path, [("Cookie", cookie), ("X-Other", "v1")] if cookie else [("X-Api", "v1")])


@pytest.mark.parametrize(
    ("path", "cookie"),
    [("/", "_gitlab_session=cell-2-abc"), ("/x", "theme=dark; other=1"), ("/", "hostile"), ("/", "hostile2=aa")],
)
def test_requests_no_backtracking_pattern_sees_are_decided_on_the_event_loop_as_before(path, cookie):
    """No worker is asked (so no other request's killed match can touch them), and the answer is the same."""
    ruleset = load_ruleset(FALLBACK_FIRST)
    decider = BoundedDecider()
    decision = asyncio.run(decider.decide(ruleset, _view(path, cookie)))
    assert decider._slots == set(), "a worker was started for a request no backtracking pattern sees"
    assert decision == ruleset.decide(_view(path, cookie))


@pytest.mark.parametrize(("path", "cookie"), [("/", "hostile=aa"), ("/", None), ("/", "x=1; hostile=a")])
def test_requests_a_backtracking_pattern_must_see_go_to_a_worker(path, cookie):
    """The deferred pattern raises instead of running: these, and only these, need an evaluation worker."""
    deferring = BoundedDecider()._prepare(load_ruleset(FALLBACK_FIRST))[1]
    with pytest.raises(NeedsBacktracking):
        deferring.decide(_view(path, cookie))


def test_deferring_keeps_patterns_on_re2_and_group_names():
    ruleset = load_ruleset(FALLBACK_FIRST)
    deferring = BoundedDecider()._prepare(ruleset)[1]
    assert deferring is not ruleset  # a copy: the ruleset in service is untouched
    first, second = deferring.rules[0], deferring.rules[1]
    assert isinstance(first.value_re, Deferred) and first.name_re is ruleset.rules[0].name_re
    assert second.value_re is ruleset.rules[1].value_re and second.value_re.group_names == ("cell",)
    assert not isinstance(ruleset.rules[0].value_re, Deferred)
