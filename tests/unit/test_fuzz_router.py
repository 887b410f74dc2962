"""Hypothesis fuzz of the router's pure parts (issue 17 item 4, ADR 0013): loading anything as a ruleset
is a ruleset or a clear ``ValueError``, never another exception; deciding on any path, headers and cookies
never raises; the request parsing the rules see (cookies, peers, header caps) takes anything."""

from __future__ import annotations

import ipaddress
import json

from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from cells_dataplane.matching import is_linear, linear
from cells_dataplane.router import trusted_peer
from cells_dataplane.routing import (
    Decision,
    RequestView,
    Ruleset,
    load_ruleset,
    oversized_header,
    parse_cookie_header,
)
from cells_formats.ecmaregex import PatternError, compile_pattern
from tests.unit.test_ecmaregex_differential import CURATED

# derandomize: the same examples every run, so a failure is reproducible and never "flaky".
FUZZ = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _linear(pattern: str) -> bool:
    try:
        return is_linear(linear(compile_pattern(pattern)))
    except PatternError:
        return False


# Patterns the rules are built from: the differential corpus' patterns that run on RE2 (any input is linear),
# so a fuzzed request can never take exponential time on the fallback evaluator and stall the test.
PATTERNS = sorted({p for p in CURATED if _linear(p)} | {"^(?<cell_name>cell-\\d+)-.*", "^/api/v4/", ".*"})

json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_any = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
# Near-valid rules: the format's own keys and values, mixed with arbitrary ones, so the fuzz reaches the
# schema and the pattern compiler, not only the JSON parser.
pattern = st.sampled_from(PATTERNS) | st.text(max_size=12)
word = st.sampled_from(["cookie", "header", "path", "classify", "proxy", "SESSION_PREFIX", "CELL_ID", "FIRST_CELL"])
match = st.fixed_dictionaries(
    {"type": word | json_leaf},
    optional={"regex_name": pattern | json_leaf, "regex_value": pattern | json_leaf},
)
rule = st.fixed_dictionaries(
    {"action": st.sampled_from(["classify", "proxy"]) | json_leaf},
    optional={
        "match": match | json_any,
        "classify": st.fixed_dictionaries({"type": word}, optional={"value": st.sampled_from(["${cell_name}", "2"])}),
        "proxy": st.fixed_dictionaries({"address": st.sampled_from(["a:1", "cell-2.example", "bad address", ""])}),
        "extra": json_leaf,
    },
)


def load_or_clear_error(raw: bytes | str) -> Ruleset | None:
    """The contract: a ruleset, or a ValueError (JSON, schema, pattern, address) with a message."""
    try:
        return load_ruleset(raw)
    except ValueError as err:  # json.JSONDecodeError, UnicodeDecodeError, pydantic's, PatternError, ...
        assert str(err).strip(), f"{type(err).__name__} without a message"
        return None


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes_load_as_a_ruleset_or_a_clear_error(raw):
    load_or_clear_error(raw)


@FUZZ
@given(json_any)
def test_any_json_loads_as_a_ruleset_or_a_clear_error(value):
    load_or_clear_error(json.dumps(value))


@FUZZ
@given(st.lists(rule, max_size=4))
def test_near_valid_rulesets_load_or_give_a_clear_error(rules):
    load_or_clear_error(json.dumps(rules))


def test_the_near_valid_strategy_reaches_loadable_rulesets():
    """Else the fuzz above would only ever exercise the error paths."""
    found = find(st.lists(rule, min_size=2, max_size=4), lambda r: load_or_clear_error(json.dumps(r)) is not None)
    assert load_ruleset(json.dumps(found)).rules


def test_deeply_nested_json_is_a_clear_error():
    for depth in (100, 5000, 100_000):
        assert load_or_clear_error("[" * depth + "]" * depth) is None


RULESET = load_ruleset(
    json.dumps(
        [
            {
                "match": {"type": "cookie", "regex_name": "^force-cell$", "regex_value": "^(?<cell_name>cell-\\d+)$"},
                "action": "classify",
                "classify": {"type": "SESSION_PREFIX", "value": "${cell_name}"},
            },
            {
                "match": {"type": "header", "regex_name": "^x-cell-id$", "regex_value": "^(?<id>\\d+)$"},
                "action": "classify",
                "classify": {"type": "CELL_ID", "value": "${id}"},
            },
            {"match": {"type": "path", "regex_value": "^/static/"}, "action": "proxy", "proxy": {"address": "a:1"}},
            {"action": "classify", "classify": {"type": "FIRST_CELL"}},
        ]
    )
)
header_name = st.sampled_from(["Cookie", "X-Cell-Id", "cookie", "Host", "X-Forwarded-For"]) | st.text(max_size=12)
header_value = (
    st.text(max_size=60)
    | st.builds(lambda n, v: f"force-cell={n}{v}", st.sampled_from(["cell-", "cell-2", ""]), st.text(max_size=10))
    | st.from_regex(r"\A[0-9]{1,25}\Z")
)
headers = st.lists(st.tuples(header_name, header_value), max_size=6)
paths = st.text(max_size=40) | st.sampled_from(["/", "/static/x", "/api/v4/projects"])


def check_decision(decision: Decision | None, ruleset: Ruleset) -> None:
    if decision is None:
        return
    assert 0 <= decision.index < len(ruleset.rules)
    assert decision.action in ("classify", "proxy")
    if decision.action == "classify":
        assert decision.classify_type in ("FIRST_CELL", "SESSION_PREFIX", "CELL_ID")
        assert decision.value is None or isinstance(decision.value, str)


@FUZZ
@given(paths, headers)
def test_deciding_on_any_request_never_raises(path, pairs):
    request = RequestView.build(path, pairs)
    decision = RULESET.decide(request)
    check_decision(decision, RULESET)
    assert decision is not None  # the catch-all: every request is decided


@FUZZ
@given(st.lists(rule, min_size=1, max_size=4), paths, headers)
def test_any_loadable_ruleset_decides_any_request_without_raising(rules, path, pairs):
    ruleset = load_or_clear_error(json.dumps(rules))
    if ruleset is not None:
        check_decision(ruleset.decide(RequestView.build(path, pairs)), ruleset)


@FUZZ
@given(st.text(max_size=200))
def test_cookie_parsing_takes_anything(value):
    for name, cookie in parse_cookie_header(value):
        # Lenient, as browsers are: any non-empty name without the separators (``a b=1`` keeps ``a b``).
        assert name and name == name.lstrip() and ";" not in name and ";" not in cookie and "=" not in name


@FUZZ
@given(st.text(max_size=60) | st.ip_addresses().map(str) | st.none())
def test_trusted_peer_takes_any_peer_string(peer):
    trusted = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    answer = trusted_peer(peer, trusted)
    assert answer is False or ipaddress.ip_address(peer) in trusted[0] or ipaddress.ip_address(peer) in trusted[1]
    assert trusted_peer(peer, ()) is False


@FUZZ
@given(headers, st.integers(min_value=0, max_value=80))
def test_oversized_header_names_the_first_header_over_the_cap(pairs, cap):
    name = oversized_header(pairs, cap)
    over = [k for k, v in pairs if len(v) > cap]
    assert name == (over[0] if over else None)
