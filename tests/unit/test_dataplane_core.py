"""Pure parts of the data plane: rule evaluation, classification, the classify cache."""

import asyncio
import json

import pytest

from cells_dataplane.classify import Snapshot, classify
from cells_dataplane.classify_cache import ClassifyCache, ServiceAnswer, Unavailable, max_age
from cells_dataplane.routing import RequestView, load_ruleset, parse_cookie_header
from cells_formats.fields import CellState, SequenceRange
from cells_formats.records import CellRecord, Topology
from cells_operator.rule import RoutingRuleSpec, render_rule
from tests.support.rules import SAMPLE_SPECS


def rec(id_, state=CellState.ACTIVE, first=False):
    return CellRecord(
        name=f"c{id_}",
        uid=f"u{id_}",
        id=id_,
        address=f"10.0.0.{id_}:80",
        session_prefix=f"cell-{id_}",
        state=state,
        first_cell=first,
        sequence_ranges=(SequenceRange(minval=id_, maxval=id_),),
    )


SNAP = Snapshot(Topology(cells=(rec(1, first=True), rec(2), rec(3, CellState.DRAINING), rec(4, CellState.OFFLINE))))


def sample_ruleset():
    """The demo ruleset exactly as the operator renders it."""
    topology = Topology(cells=(rec(1, first=True),))
    elements = [
        render_rule(RoutingRuleSpec.model_validate(spec), topology)[0]
        for spec in sorted(SAMPLE_SPECS.values(), key=lambda s: s["priority"])
    ]
    return load_ruleset(json.dumps(elements))


CATCH_ALL_POSITION = len(SAMPLE_SPECS) - 1  # the samples end with the catch-all (token rules sit before it)


def view(path="/", **headers):
    return RequestView.build(path, [(k.replace("_", "-"), v) for k, v in headers.items()])


@pytest.mark.parametrize(
    ("request_view", "expected"),
    [
        (view(cookie="_gitlab_session=cell-2-abcdef"), ("classify", "SESSION_PREFIX", "cell-2", 1)),
        (view(cookie="_gitlab_session_0af=cell-12-x"), ("classify", "SESSION_PREFIX", "cell-12", 1)),
        (view(cookie="force-cell=cell-3; _gitlab_session=cell-2-abc"), ("classify", "SESSION_PREFIX", "cell-3", 0)),
        (view("/api/v4/cells/3/projects"), ("classify", "CELL_ID", "3", 2)),
        (view("/"), ("classify", "FIRST_CELL", None, CATCH_ALL_POSITION)),
        (view(cookie="_gitlab_session=bogus"), ("classify", "FIRST_CELL", None, CATCH_ALL_POSITION)),
        (view(cookie="force-cell=notacell"), ("classify", "FIRST_CELL", None, CATCH_ALL_POSITION)),
        (
            view(cookie="force_cell=cell-3"),
            ("classify", "FIRST_CELL", None, CATCH_ALL_POSITION),
        ),  # upstream's name has a dash
    ],
)
def test_sample_ruleset_decisions(request_view, expected):
    d = sample_ruleset().decide(request_view)
    assert (d.action, d.classify_type, d.value, d.index) == expected


def test_header_match_and_proxy_and_no_match():
    rules = load_ruleset(
        json.dumps(
            [
                {
                    "match": {"type": "header", "regex_name": "^x-cell$", "regex_value": "^(?<n>\\d+)$"},
                    "action": "classify",
                    "classify": {"type": "CELL_ID", "value": "${n}"},
                },
                {
                    "match": {"type": "path", "regex_value": "^/static/"},
                    "action": "proxy",
                    "proxy": {"address": "cdn:80"},
                },
            ]
        )
    )
    assert rules.decide(view(X_Cell="7")).value == "7"
    assert rules.decide(view("/static/a.js")).address == "cdn:80"
    assert rules.decide(view("/other")) is None


def test_bad_ruleset_files_raise():
    for text in [
        "",
        "{}",
        '[{"action": "teleport"}]',
        json.dumps([{"action": "classify"}]),  # classify without its section ({"action": "proxy"} is valid)
        json.dumps([{"match": {"type": "path", "regex_value": "("}, "action": "proxy", "proxy": {"address": "a:1"}}]),
    ]:
        with pytest.raises(ValueError):
            load_ruleset(text)


def test_cookie_header_parsing_is_lenient():
    assert parse_cookie_header('a=1; b="two"; junk; c=') == [("a", "1"), ("b", "two"), ("c", "")]


@pytest.mark.parametrize(
    ("body", "status", "address"),
    [
        ({"type": "SESSION_PREFIX", "value": "cell-2"}, 200, "10.0.0.2:80"),
        ({"type": "CELL_ID", "value": "3"}, 200, "10.0.0.3:80"),  # Draining: classified
        ({"type": "CELL_ID", "value": 4}, 200, "10.0.0.4:80"),  # Offline: classified, as the real service does
        ({"type": "CELL_ID", "value": "99"}, 404, None),
        ({"type": "FIRST_CELL"}, 200, "10.0.0.1:80"),
        # the protobuf JSON mapping accepts the enum's numbers as well as its names
        ({"type": 1}, 200, "10.0.0.1:80"),
        ({"type": 2, "value": "cell-2"}, 200, "10.0.0.2:80"),
        ({"type": 3, "value": "3"}, 200, "10.0.0.3:80"),
        ({"type": 0, "value": "3"}, 400, None),  # UNSPECIFIED
        ({"type": "UNSPECIFIED", "value": "3"}, 400, None),
        ({"type": 4, "value": "3"}, 400, None),
        ({"type": True, "value": "3"}, 400, None),
        ({"type": "3", "value": "3"}, 400, None),
        ({"type": "CELL_ID", "value": "x"}, 400, None),
        ({"type": "NOPE", "value": "x"}, 400, None),
        ({"type": "SESSION_PREFIX"}, 400, None),
        (["not", "an", "object"], 400, None),
    ],
)
def test_classify_answers(body, status, address):
    answer = classify(SNAP, body)
    assert answer.status == status
    if status == 200:
        assert answer.body == {"action": "PROXY", "proxy": {"address": address}}
    elif status == 404:
        assert answer.body["code"] == 5 and answer.body["message"].startswith("cell not found: ")
    else:
        assert answer.body["code"] == 3 and answer.body["message"] and answer.body["details"] == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"type": "CELL_ID", "value": "99"}, 'cell not found: "99"'),
        ({"type": "SESSION_PREFIX", "value": "cell-9"}, 'cell not found: "cell-9"'),
        ({"type": 2, "value": 'we"ird'}, 'cell not found: "we\\"ird"'),
    ],
)
def test_not_found_body_is_the_gateways_status(body, message):
    answer = classify(SNAP, body)
    assert answer.status == 404
    assert answer.body == {"code": 5, "message": message, "details": []}


def test_first_cell_not_found_when_no_cell_is_first():
    answer = classify(Snapshot(Topology(cells=(rec(2),))), {"type": "FIRST_CELL"})
    assert answer.body == {"code": 5, "message": 'cell not found: ""', "details": []}


def test_max_age_parsing():
    assert max_age("public, max-age=30") == 30
    assert max_age("no-store") == 0
    assert max_age(None) is None and max_age("public") is None


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_cache_positive_negative_ttl_and_stale_if_error():
    clock = FakeClock()
    calls = []
    state = {"down": False}

    async def fetch(kind, value):
        calls.append((kind, value))
        if state["down"]:
            raise ConnectionError("refused")
        if value == "cell-9":
            return ServiceAnswer(None, "max-age=2")
        return ServiceAnswer("a:1", "max-age=60")

    async def scenario():
        cache = ClassifyCache(fetch, ttl=10, negative_ttl=5, clock=clock)
        assert (await cache.resolve("SESSION_PREFIX", "cell-1")).source == "miss"
        assert (await cache.resolve("SESSION_PREFIX", "cell-1")).source == "hit"
        neg = await cache.resolve("SESSION_PREFIX", "cell-9")
        assert neg.address is None
        clock.now = 3  # negative entry expired (max-age=2), positive capped at ttl=10 still fresh
        assert (await cache.resolve("SESSION_PREFIX", "cell-1")).source == "hit"
        assert (await cache.resolve("SESSION_PREFIX", "cell-9")).source == "miss"
        clock.now = 20
        state["down"] = True
        stale = await cache.resolve("SESSION_PREFIX", "cell-1")
        assert (stale.address, stale.source) == ("a:1", "stale")
        with pytest.raises(Unavailable):
            await cache.resolve("CELL_ID", "5")

    asyncio.run(scenario())
    assert calls.count(("SESSION_PREFIX", "cell-1")) == 2


def test_cache_single_flight():
    calls = []

    async def scenario():
        answered = asyncio.Event()

        async def fetch(kind, value):
            calls.append(value)
            await answered.wait()  # the Topology Service answers only once all 50 lookups are waiting
            return ServiceAnswer("a:1", "max-age=60")

        cache = ClassifyCache(fetch)
        lookups = [asyncio.create_task(cache.resolve("FIRST_CELL", None)) for _ in range(50)]
        await asyncio.sleep(0)  # every lookup has started and found the one in flight
        answered.set()
        results = await asyncio.gather(*lookups)
        assert {r.address for r in results} == {"a:1"}

    asyncio.run(scenario())
    assert calls == [None]
