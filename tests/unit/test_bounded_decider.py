"""The router's evaluation workers: a match killed at its deadline fails no other request (issue 17, item 5).

Workers are fakes whose evaluations the test resolves (or never resolves: a catastrophic match); time is
fake (looptime), so deadlines are exact and the tests take no real time.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import itertools
import json

import looptime
import pytest

from cells_dataplane.router import BoundedDecider, BudgetExceeded
from cells_dataplane.routing import Decision, RequestView, load_ruleset
from tests.unit.test_hostile_matching import FALLBACK_FIRST

HOSTILE = RequestView.build("/", [("Cookie", "hostile=" + "a" * 40 + "!")])
INNOCENT = RequestView.build("/", [("Cookie", "hostile=aa")])
DECIDED = Decision(0, "proxy")


class FakeExecutor:
    """Evaluations answer at once, except hostile ones, which never finish (until the worker is killed)."""

    def __init__(self, log: list) -> None:
        self.log = log
        self.killed = False

    def submit(self, fn, source, request):
        future = concurrent.futures.Future()
        self.log.append((self, request))
        if request is not HOSTILE:
            future.set_result(DECIDED if request is INNOCENT else None)
        return future


class FakeSlot:
    ids = itertools.count()

    def __init__(self, log: list) -> None:
        self.id = next(self.ids)
        self.executor = FakeExecutor(log)
        self.source = None
        self.killed = False

    def kill(self) -> None:
        self.killed = True
        self.executor.killed = True


def run(coro):
    with asyncio.Runner(loop_factory=lambda: looptime.new_event_loop(start=0, _enabled=True)) as runner:
        return runner.run(coro)


def _decider(log: list, slots: list) -> BoundedDecider:
    def factory():
        slots.append(FakeSlot(log))
        return slots[-1]

    return BoundedDecider(deadline=0.25, workers=2, wait=10.0, slot=factory)


def test_a_killed_match_kills_only_its_own_worker_and_innocent_requests_queued_meanwhile_are_answered():
    log, slots = [], []
    decider = _decider(log, slots)
    ruleset = load_ruleset(FALLBACK_FIRST)

    async def scenario():
        async def one(request):
            try:
                return await decider.decide(ruleset, request)
            except BudgetExceeded as exc:
                return str(exc)

        # Two hostile matches occupy both workers; five innocent requests queue behind them.
        return await asyncio.gather(one(HOSTILE), one(HOSTILE), *(one(INNOCENT) for _ in range(5)))

    results = run(scenario())
    assert results[:2] == ["rule evaluation passed its deadline of 0.25s"] * 2
    assert results[2:] == [DECIDED] * 5
    killed = [s for s in slots if s.killed]
    assert len(killed) == 2 and len(slots) == 4  # each hostile match's own worker, replaced
    # No innocent evaluation ever went to a worker that was then killed.
    assert all(not executor.killed for executor, request in log if request is INNOCENT)


def test_the_deadline_counts_the_evaluation_not_the_wait_for_a_worker():
    log, slots = [], []
    decider = _decider(log, slots)
    ruleset = load_ruleset(FALLBACK_FIRST)

    async def scenario():
        hostile = [asyncio.ensure_future(decider.decide(ruleset, HOSTILE)) for _ in range(6)]
        await asyncio.sleep(0)
        innocent = await decider.decide(ruleset, INNOCENT)  # waits 3 deadlines for a worker: still answered
        now = asyncio.get_running_loop().time()
        await asyncio.gather(*hostile, return_exceptions=True)
        return innocent, now

    innocent, when = run(scenario())
    assert innocent == DECIDED
    assert when == pytest.approx(0.75)


def test_no_free_worker_within_the_wait_is_a_503_not_a_hang():
    log, slots = [], []
    decider = BoundedDecider(deadline=5.0, workers=1, wait=2.0, slot=lambda: slots.append(FakeSlot(log)) or slots[-1])
    ruleset = load_ruleset(FALLBACK_FIRST)

    async def scenario():
        stuck = asyncio.ensure_future(decider.decide(ruleset, HOSTILE))
        await asyncio.sleep(0)
        with pytest.raises(BudgetExceeded, match="no evaluation worker free within 2s"):
            await decider.decide(ruleset, INNOCENT)
        with pytest.raises(BudgetExceeded):
            await stuck

    run(scenario())


def test_a_request_cancelled_mid_evaluation_gives_up_its_worker():
    """A client that hangs up must not leave its match running in a worker the next request would queue on."""
    log, slots = [], []
    decider = _decider(log, slots)
    ruleset = load_ruleset(FALLBACK_FIRST)

    async def scenario():
        task = asyncio.ensure_future(decider.decide(ruleset, HOSTILE))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await decider.decide(ruleset, INNOCENT)

    assert run(scenario()) == DECIDED
    assert [s.killed for s in slots] == [True, False, False]


# A current-dialect rule matched on RE2 whose transform step's pattern is off RE2 (a backreference): the
# transform runs after the match, so it is as exposed as a match pattern and must not run on the event loop.
OFF_RE2_TRANSFORM = json.dumps(
    [
        {
            "id": "b64",
            "action": "classify",
            "match": {"type": "cookie", "name": "tok", "regexValue": "^(?<v>.+)$"},
            "transform": {
                "type": "decode-base64-match",
                "input": ["${v}"],
                "output": "d",
                "regexValue": "^(?<cell>(a+)+)\\2?$",
            },
            "classify": {"type": "CELL_ID", "value": "${d.cell}"},
        },
        {"action": "proxy"},
    ]
)


def test_a_transform_pattern_off_re2_is_evaluated_in_a_worker_never_on_the_event_loop():
    log, slots = [], []
    decider = _decider(log, slots)
    ruleset = load_ruleset(OFF_RE2_TRANSFORM)
    assert not ruleset.linear
    without_token = RequestView.build("/", [("Cookie", "other=1")])
    with_token = RequestView.build("/", [("Cookie", "tok=" + base64.b64encode(b"a" * 16 + b"!").decode())])

    async def scenario():
        inline = await decider.decide(ruleset, without_token)  # no rule needs the transform: decided here
        submitted_before = len(log)
        await decider.decide(ruleset, with_token)  # the fake worker answers; what matters is who evaluated
        return inline, submitted_before

    inline, submitted_before = run(scenario())
    assert inline == Decision(1, "proxy") and submitted_before == 0
    assert [request for _, request in log if request is with_token] == [with_token]
