"""The rule index decides exactly as trying every rule in turn (issue 15, ADR 0013).

:meth:`Ruleset.decide` tries only the rules :mod:`cells_dataplane.rule_index` names as candidates; the
reference :meth:`Ruleset.decide_linear_scan` tries all of them. Over random rulesets (cookie, header and
path rules; literal names, anchored and unanchored name patterns, repeated names, catch-alls, 2024 and
current dialect with phases that may not apply, patterns off RE2) and random requests, both give the same
decision -- and, with the patterns off RE2 deferred as the router's event loop has them, raise
``NeedsBacktracking`` for the same pattern in the same cases. The prefix the index files a pattern under
is checked against the ECMAScript evaluator itself: whatever a pattern matches starts with it.
"""

from __future__ import annotations

import json
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cells_dataplane.matching import Deferred, NeedsBacktracking, linear, required_prefix
from cells_dataplane.router import BoundedDecider
from cells_dataplane.routing import Decision, RequestView, Ruleset, load_ruleset
from cells_formats.ecmaregex import PatternError, compile_pattern
from tests.unit.test_ecmaregex_differential import CURATED, random_pattern

PROPERTY = settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

COOKIE_NAMES = [
    "_gitlab_session",
    "_gitlab_session_ab12",
    "theme",
    "other_cookie_1",
    "other_cookie_10",
    "other_cookie_2",
    "hostile",
]
HEADER_NAMES = ["x-api", "x-apix", "accept", "authorization", "x-gitlab-token"]
NAME_PATTERNS = [
    "^_gitlab_session(_[0-9a-f]+)?$",
    "^other_cookie_1$",
    "^other_cookie_1",
    "^other_cookie_1?",
    "other",
    "^x-",
    "^x-api$",
    "^(?:x|y)-api$",
    "^a|theme$",  # an alternative escapes the anchor: never filed under a prefix
    "^[a-z]+$",
    "^_gitlab_session\\w*",
    "^the(?=me)",  # lookahead: off RE2, deferred on the event loop
    "^(t)\\1?heme",  # backreference: off RE2
    "^hostile$",
]
VALUE_PATTERNS = ["^(?<cell>cell-\\d+)-", ".*", "^v\\d$", "^dark$", "^(?=v)", "(?<=d)ark", "(a)\\1", "^(?<cell>c\\d)?"]
PATH_PATTERNS = ["^/api/v4/", "^/api/v4/cells/(?<cell>\\d+)/", "^/-/health$", "/x", "^/(?=a)", "^/a?b", "^/"]
PATHS = ["/", "/api/v4/cells/12/x", "/api/v4/projects", "/-/health", "/x", "/ab", "/b", "/a"]
VALUES = ["cell-2-abc", "dark", "v1", "aa", "c1", "x", ""]


def _then(rule: dict, action: str, current: bool) -> dict:
    """Finish a rule: proxy, or classify (current dialect with phases: applies only if ``cell`` matched)."""
    if action == "proxy":
        return {**rule, "action": "proxy"}
    cell = "<cell>" in json.dumps(rule)
    if current and cell:
        rule = {**rule, "id": "r", "validate": {"exist": ["${cell}"]}}
    return {**rule, "action": "classify", "classify": {"type": "SESSION_PREFIX", "value": "${cell}" if cell else "c9"}}


@st.composite
def rule_specs(draw) -> dict:
    kind = draw(st.sampled_from(["cookie", "header", "path", "catch-all"]))
    action = draw(st.sampled_from(["classify", "proxy"]))
    if kind == "catch-all":
        return {"action": "classify", "classify": {"type": "FIRST_CELL"}}
    if kind == "path":
        value = draw(st.sampled_from(PATH_PATTERNS))
        current = draw(st.booleans())
        match = {"type": "path", "regexValue" if current else "regex_value": value}
        return _then({"match": match}, action, current)
    names = COOKIE_NAMES if kind == "cookie" else HEADER_NAMES
    value = draw(st.sampled_from(VALUE_PATTERNS))
    spelling = draw(st.sampled_from(["literal", "current", "2024"]))
    if spelling == "literal":
        match = {"type": kind, "name": draw(st.sampled_from(names)), "regexValue": value}
    elif spelling == "current":
        match = {"type": kind, "regexName": draw(st.sampled_from(NAME_PATTERNS)), "regexValue": value}
    else:
        match = {"type": kind, "regex_name": draw(st.sampled_from(NAME_PATTERNS)), "regex_value": value}
    return _then({"match": match}, action, spelling != "2024")


rulesets = st.lists(rule_specs(), min_size=1, max_size=12).map(lambda specs: load_ruleset(json.dumps(specs)))


@st.composite
def requests(draw) -> RequestView:
    pairs = st.tuples(st.sampled_from(COOKIE_NAMES), st.sampled_from(VALUES))
    cookies = draw(st.lists(pairs, max_size=3))
    headers = draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), st.sampled_from(VALUES)), max_size=3))
    if cookies:
        headers.append(("Cookie", "; ".join(f"{name}={value}" for name, value in cookies)))
    return RequestView.build(draw(st.sampled_from(PATHS)), draw(st.permutations(headers)))


def outcome(decide, request: RequestView) -> Decision | tuple[str, str] | None:
    """The decision, or which deferred pattern asked for a worker."""
    try:
        return decide(request)
    except NeedsBacktracking as exc:
        return ("needs backtracking", str(exc))


@PROPERTY
@given(rulesets, requests())
def test_indexed_decide_is_the_rule_by_rule_decision(ruleset: Ruleset, request: RequestView):
    assert ruleset.decide(request) == ruleset.decide_linear_scan(request)


@PROPERTY
@given(rulesets, requests())
def test_with_deferred_patterns_the_same_requests_need_backtracking_for_the_same_pattern(ruleset, request):
    """On the event loop, a deferred pattern raises when, and only when, the rule-by-rule loop reaches it."""
    deferring = BoundedDecider()._prepare(ruleset)[1]
    assert outcome(deferring.decide, request) == outcome(deferring.decide_linear_scan, request)


FIRST_DEFERRED = json.dumps(
    [
        {"match": {"type": "cookie", "regexName": "^the(?=me)", "regexValue": ".*"}, "action": "proxy"},
        {"match": {"type": "cookie", "name": "hostile", "regexValue": "(a)\\1"}, "action": "proxy"},
        {"match": {"type": "path", "regexValue": "^/api/"}, "action": "classify", "classify": {"type": "CELL_ID"}},
        {"action": "classify", "classify": {"type": "FIRST_CELL"}},
    ]
)


def test_a_deferred_name_pattern_stays_a_candidate_for_every_request_and_raises_where_the_loop_did():
    deferring = BoundedDecider()._prepare(load_ruleset(FIRST_DEFERRED))[1]
    assert isinstance(deferring.rules[0].name_re, Deferred) and isinstance(deferring.rules[1].value_re, Deferred)
    assert deferring.index.always == (0, 3)  # the deferred name pattern and the catch-all: never skipped
    with_cookie = RequestView.build("/api/x", [("Cookie", "other=1")])  # the loop tests rule 0's name: raises
    for decide in (deferring.decide, deferring.decide_linear_scan):
        assert outcome(decide, with_cookie) == ("needs backtracking", "^the(?=me)")
        # No cookie at all: rule 0 looks at no name, rule 1 is skipped (no `hostile` cookie), rule 2 decides.
        assert decide(RequestView.build("/api/x", [])) == Decision(2, "classify", "CELL_ID")


def test_a_deferred_value_pattern_is_reached_only_by_requests_with_its_name():
    ruleset = load_ruleset(json.dumps(json.loads(FIRST_DEFERRED)[1:]))
    deferring = BoundedDecider()._prepare(ruleset)[1]
    assert deferring.index.always == (2,)
    assert list(deferring.index.candidates(RequestView.build("/", [("Cookie", "theme=x")]))) == [2]
    assert outcome(deferring.decide, RequestView.build("/", [("Cookie", "theme=x; hostile=aa")])) == (
        "needs backtracking",
        "(a)\\1",
    )


def session_rules(n: int) -> list[dict]:
    """The shape of the rule-evaluation benchmark (tests/bench/dataplane.py): n-2 cookie rules on other names,
    the session rule, the catch-all."""
    value = {"regexValue": "^(?<cell_name>cell-\\d+)-.*"}
    classify = {"action": "classify", "classify": {"type": "SESSION_PREFIX", "value": "${cell_name}"}}
    return [
        *({"match": {"type": "cookie", "regexName": f"^other_cookie_{i}$", **value}, **classify} for i in range(n - 2)),
        {"match": {"type": "cookie", "regexName": "^_gitlab_session(_[0-9a-f]+)?$", **value}, **classify},
        {"action": "classify", "classify": {"type": "FIRST_CELL"}},
    ]


def test_the_benchmark_worst_case_tries_only_the_catch_all():
    """998 cookie rules on other names and the session rule are skipped by lookups, not by running patterns."""
    ruleset = load_ruleset(json.dumps(session_rules(1000)))
    request = RequestView.build("/some/page", [("Cookie", "theme=dark; _other=1"), ("Accept", "text/html")])
    assert list(ruleset.index.candidates(request)) == [999]
    session = RequestView.build("/", [("Cookie", "other_cookie_7=x; _gitlab_session_1f=cell-3-abc")])
    assert list(ruleset.index.candidates(session)) == [7, 998, 999]
    assert ruleset.decide(session) == Decision(998, "classify", "SESSION_PREFIX", "cell-3")


def test_the_index_follows_rules_added_after_first_use():
    ruleset = load_ruleset(json.dumps([{"action": "proxy"}]))
    assert ruleset.index.always == (0,)
    ruleset.rules.extend(load_ruleset(json.dumps(session_rules(4))).rules)
    assert ruleset.index.always == (0, 4)


# -- the prefix a pattern is filed under ---------------------------------------------------------------------


def test_required_prefix_reads_only_what_is_certain():
    assert required_prefix("^other_cookie_5$") == "other_cookie_5"
    assert required_prefix("^_gitlab_session(_[0-9a-f]+)?$") == "_gitlab_session"
    assert required_prefix("^/api/v4/cells/(?<cell>\\d+)/") == "/api/v4/cells/"
    assert required_prefix("^a\\.b\\/c") == "a.b/c"
    assert required_prefix("^ab?") == required_prefix("^ab*") == required_prefix("^ab{2}") == "a"
    assert required_prefix("^a\\.?") == "a"
    for unknown in ["abc", "^a|b", "^(a)", "^\\d", "^[a]", "^.", "(?:^a)", "^\\u0061"]:
        assert required_prefix(unknown) == "", unknown


LITERALS = "ab_-/:=xyz."
prefixed_patterns = st.builds(
    lambda head, tail: "^" + head + tail,
    st.lists(st.sampled_from([*LITERALS, "\\.", "\\-", "\\/", "\\\\", "?", "*", "+", "{1}"]), max_size=6).map("".join),
    st.sampled_from(["", "$", ".*", "(b|c)?", "\\d+", "[a-z]", "(?=a)", "|a", "?", "{2,}", "(?<g>x)?$", "\\b"]),
)


def _compiled(source: str):
    try:
        return compile_pattern(source)
    except PatternError:
        return None


@settings(max_examples=500, deadline=None, derandomize=True)
@given(prefixed_patterns, st.lists(st.text(alphabet="ab_-/:=xyz.\\ 12", max_size=10), min_size=1, max_size=8))
def test_whatever_a_pattern_matches_starts_with_its_required_prefix(source, texts):
    compiled = _compiled(source)
    if compiled is None:
        return
    prefix = required_prefix(source)
    # Texts built from the prefix too, so that matches happen (a random text rarely matches an anchor).
    for text in [*texts, *(prefix + t for t in texts), *(prefix[:-1] + t for t in texts)]:
        for engine in (compiled, linear(compiled)):
            if engine.test(text):
                assert text.startswith(prefix), (source, prefix, text)


def test_the_differential_corpus_matches_only_texts_with_the_required_prefix():
    rng = random.Random(20261129)
    heads = ["", "a", "ab", "_gitlab_session", "/api/"]  # a literal run, then whatever the corpus draws
    sources = [*CURATED, *("^" + rng.choice(heads) + random_pattern(rng) for _ in range(2000))]
    texts = ["", "a", "ab", "abc", "_gitlab_session", "cell-1-x", "/api/v4/", "aaa!", "b", "x\ny", "😀a"]
    checked = 0
    for source in sources:
        compiled, prefix = _compiled(source), required_prefix(source)
        if compiled is None or not prefix:
            continue
        checked += 1
        for text in [*texts, *(prefix + t for t in texts)]:
            if linear(compiled).test(text):
                assert text.startswith(prefix), (source, prefix, text)
    assert checked > 400  # many drawn patterns have a `|` or are not valid: no prefix
