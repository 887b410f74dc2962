"""The per-namespace reconcile loop: coalescing, serialization, retry, stop when empty, leadership gate.

Time is fake (looptime): ``asyncio.sleep`` and the loop's clock advance only on the event loop's own
schedule, so these tests assert exact counts without a wall-clock window, and take no real time.
"""

import asyncio
import itertools
import threading

import looptime
from tenacity import wait_exponential

from cells_operator.leader import NotLeader
from cells_operator.workers import NamespaceWorkers


async def inline(fn, *args):
    """Run the reconcile on the event loop itself: fake time cannot move while it runs (with a real
    thread, looptime steps the clock while waiting for it, so measured intervals depend on the load)."""
    return fn(*args)


def run(coro):
    """Run ``coro`` on a fake-time event loop starting at t=0."""
    with asyncio.Runner(loop_factory=lambda: looptime.new_event_loop(start=0, _enabled=True)) as runner:
        return runner.run(coro)


def test_burst_of_triggers_is_coalesced_into_one_reconcile():
    calls = []

    async def scenario():
        workers = NamespaceWorkers(lambda ns: calls.append(ns) or True, debounce=0.05)
        for _ in range(300):  # 300 events within one debounce period
            workers.trigger("a")
            await asyncio.sleep(0.0001)
        await asyncio.sleep(1.0)
        await workers.stop()

    run(scenario())
    assert calls == ["a"]


def test_reconciles_of_one_namespace_never_overlap_and_namespaces_are_independent():
    active: dict[str, int] = {}
    overlaps = []
    lock = threading.Lock()
    calls = []

    def reconcile(ns):
        with lock:
            active[ns] = active.get(ns, 0) + 1
            if active[ns] > 1:
                overlaps.append(ns)
            calls.append(ns)
        threading.Event().wait(0.01)  # real time in the thread; fake time stands still meanwhile
        with lock:
            active[ns] -= 1
        return True

    async def scenario():
        workers = NamespaceWorkers(reconcile, debounce=0.01)
        for _ in range(10):
            workers.trigger("a")
            workers.trigger("b")
            await asyncio.sleep(0.02)  # longer than the debounce: every trigger is its own pass
        assert workers.namespaces == ["a", "b"]
        await asyncio.sleep(1.0)
        await workers.stop()

    run(scenario())
    assert overlaps == []
    assert calls.count("a") >= 2 and calls.count("b") >= 2


def test_failures_are_retried_with_exponential_backoff_and_reported():
    attempts: list[float] = []
    errors: list[BaseException] = []
    successes = []

    async def scenario():
        loop = asyncio.get_running_loop()

        def reconcile(ns):
            attempts.append(loop.time())
            if len(attempts) < 4:
                raise RuntimeError("API unavailable")
            return True

        workers = NamespaceWorkers(
            reconcile,
            debounce=0.01,
            max_backoff=30.0,
            on_error=errors.append,
            on_success=lambda: successes.append(1),
            wait=wait_exponential(multiplier=0.5, max=30.0),  # no jitter: exact delays
            offload=inline,
        )
        workers.trigger("a")
        await asyncio.sleep(60.0)
        await workers.stop()

    run(scenario())
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(attempts)]
    assert len(attempts) == 4 and len(errors) == 3 and successes == [1]
    assert gaps == [0.51, 1.01, 2.01]  # 0.5 * 2^(n-1), plus the debounce before each pass


def test_loop_stops_when_namespace_is_empty_and_restarts_on_next_event():
    results = iter([False, True])
    calls = []

    def reconcile(ns):
        calls.append(ns)
        return next(results)

    async def scenario():
        workers = NamespaceWorkers(reconcile, debounce=0.01)
        workers.trigger("gone")
        await asyncio.sleep(0.1)
        assert workers.namespaces == []
        workers.trigger("gone")
        await asyncio.sleep(0.1)
        assert workers.namespaces == ["gone"]
        await workers.stop()

    run(scenario())
    assert calls == ["gone", "gone"]


def test_continuous_events_are_reconciled_at_the_latest_after_max_delay():
    calls: list[float] = []

    async def scenario():
        loop = asyncio.get_running_loop()
        workers = NamespaceWorkers(
            lambda ns: calls.append(loop.time()) or True, debounce=0.05, max_delay=0.2, offload=inline
        )
        while loop.time() < 1.0:  # an event every 10 ms: never quiet for 50 ms
            workers.trigger("busy")
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        await workers.stop()

    run(scenario())
    # one pass per max_delay while the stream lasts, and one after it ends: not one per event, not starved
    assert 4 <= len(calls) <= 6
    assert all(b - a <= 0.25 for a, b in itertools.pairwise(calls))


def test_a_standby_marks_namespaces_and_reconciles_them_all_once_it_leads():
    calls = []

    async def scenario():
        leading = asyncio.Event()
        workers = NamespaceWorkers(lambda ns: calls.append(ns) or True, debounce=0.01, gate=leading.wait)
        workers.trigger("a")
        workers.trigger("b")
        await asyncio.sleep(10.0)
        assert calls == []  # standby: nothing written
        leading.set()
        await asyncio.sleep(1.0)
        assert sorted(calls) == ["a", "b"]
        workers.trigger_all()
        await asyncio.sleep(1.0)
        await workers.stop()

    run(scenario())
    assert sorted(calls) == ["a", "a", "b", "b"]


def test_not_leader_mid_reconcile_waits_at_the_gate_without_counting_a_failure():
    leading = asyncio.Event()
    errors = []
    calls = []

    def reconcile(ns):
        calls.append(ns)
        if len(calls) == 1:
            leading.clear()  # the Lease was lost during the pass; the fence refused the write
            raise NotLeader("fenced")
        return True

    async def scenario():
        leading.set()
        workers = NamespaceWorkers(reconcile, debounce=0.01, gate=leading.wait, on_error=errors.append)
        workers.trigger("a")
        await asyncio.sleep(5.0)
        assert calls == ["a"]
        leading.set()
        await asyncio.sleep(1.0)
        await workers.stop()

    run(scenario())
    assert calls == ["a", "a"] and errors == []


def test_a_loop_cancelled_from_outside_is_started_again_by_the_next_trigger():
    """kopf cancels every task it did not create when it stops; the supervisor then restarts kopf."""
    calls = []

    async def scenario():
        workers = NamespaceWorkers(lambda ns: calls.append(ns) or True, debounce=0.01)
        workers.trigger("a")
        await asyncio.sleep(1.0)
        for task in asyncio.all_tasks():
            if task.get_name() == "reconcile:a":
                task.cancel()
        await asyncio.sleep(0.1)
        workers.trigger("a")
        await asyncio.sleep(1.0)
        await workers.stop()

    run(scenario())
    assert calls == ["a", "a"]


def test_expected_failures_are_retried_quietly(caplog):
    """During an API outage every reconcile fails the same way; the outage is reported once elsewhere."""
    import logging

    caplog.set_level(logging.DEBUG, logger="cells_operator.workers")
    attempts = []

    def reconcile(ns):
        attempts.append(ns)
        if len(attempts) < 3:
            raise ConnectionRefusedError("API server down")
        if len(attempts) == 3:
            raise RuntimeError("a bug")
        return True

    async def scenario():
        workers = NamespaceWorkers(
            reconcile, debounce=0.01, expected=lambda exc: isinstance(exc, ConnectionRefusedError)
        )
        workers.trigger("a")
        await asyncio.sleep(60.0)
        await workers.stop()

    run(scenario())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(attempts) == 4 and len(errors) == 1 and "a bug" in errors[0].exc_text


def test_a_pass_forced_by_the_bound_knows_its_burst_and_is_followed_by_a_quiet_pass():
    """A pass in a burst may hold back statuses (ADR 0015): the reconcile learns that it runs in one, and
    another pass follows once quiet -- even when the burst's last event came just before the forced pass,
    so nothing held back waits for the next resync."""
    calls: list[tuple[float, float | None]] = []

    async def scenario():
        loop = asyncio.get_running_loop()
        workers = NamespaceWorkers(
            lambda ns: calls.append((loop.time(), workers.burst_age(ns))) or True,
            debounce=0.05,
            max_delay=0.2,
            offload=inline,
        )
        while loop.time() < 0.195:  # an event every 10 ms, the last one at 0.19: the bound forces a pass
            workers.trigger("busy")
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)  # then nothing at all
        await workers.stop()

    run(scenario())
    assert [(round(t, 2), None if age is None else round(age, 2)) for t, age in calls] == [(0.2, 0.2), (0.25, None)]


def test_the_burst_age_grows_over_the_forced_passes_and_a_new_burst_starts_from_zero():
    ages: list[float | None] = []

    async def scenario():
        loop = asyncio.get_running_loop()
        workers = NamespaceWorkers(
            lambda ns: ages.append(workers.burst_age(ns)) or True, debounce=0.05, max_delay=0.2, offload=inline
        )
        for _ in range(2):  # two bursts of 0.5 s, a quiet second between them
            end = loop.time() + 0.5
            while loop.time() < end:
                workers.trigger("busy")
                await asyncio.sleep(0.01)
            await asyncio.sleep(1.0)
        await workers.stop()

    run(scenario())
    first, second = ages[: ages.index(None) + 1], ages[ages.index(None) + 1 :]
    for burst in (first, second):
        assert burst[-1] is None  # the pass after the burst
        forced = burst[:-1]
        assert forced and forced == sorted(forced) and round(forced[0], 2) == 0.2  # counted from its first event
