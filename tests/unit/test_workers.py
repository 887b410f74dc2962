"""The per-namespace reconcile loop: coalescing, serialization, retry, stop when empty."""

import asyncio
import threading

from cells_operator.workers import NamespaceWorkers


def run(coro):
    return asyncio.run(coro)


def test_burst_of_triggers_is_coalesced_into_few_reconciles():
    calls = []

    def reconcile(ns):
        calls.append(ns)
        return True

    async def scenario():
        workers = NamespaceWorkers(reconcile, debounce=0.05)
        for _ in range(300):
            workers.trigger("a")
            await asyncio.sleep(0)
        await asyncio.sleep(0.3)
        await workers.stop()

    run(scenario())
    assert 1 <= calls.count("a") <= 2


def test_reconciles_of_one_namespace_never_overlap_and_namespaces_are_independent():
    active: dict[str, int] = {}
    overlaps = []
    lock = threading.Lock()

    def reconcile(ns):
        with lock:
            active[ns] = active.get(ns, 0) + 1
            if active[ns] > 1:
                overlaps.append(ns)
        threading.Event().wait(0.05)
        with lock:
            active[ns] -= 1
        return True

    async def scenario():
        workers = NamespaceWorkers(reconcile, debounce=0.01)
        for _ in range(10):
            workers.trigger("a")
            workers.trigger("b")
            await asyncio.sleep(0.02)
        assert workers.namespaces == ["a", "b"]
        await asyncio.sleep(0.2)
        await workers.stop()

    run(scenario())
    assert overlaps == []


def test_failures_are_retried_with_backoff():
    attempts = []

    def reconcile(ns):
        attempts.append(ns)
        if len(attempts) < 3:
            raise RuntimeError("API unavailable")
        return True

    async def scenario():
        workers = NamespaceWorkers(reconcile, debounce=0.01, max_backoff=0.05)
        workers.trigger("a")
        await asyncio.sleep(0.5)
        await workers.stop()

    run(scenario())
    assert len(attempts) == 3


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


def test_peering_priority_from_statefulset_ordinal():
    import pytest

    from cells_operator.cli import peering_priority

    assert peering_priority("7", "") == 7
    assert peering_priority("from-pod-name", "cells-operator-0") == 1000
    assert peering_priority("from-pod-name", "cells-operator-1") == 999
    with pytest.raises(SystemExit, match="POD_NAME"):
        peering_priority("from-pod-name", "cells-operator-abc12")


def test_continuous_events_are_reconciled_after_quiet_or_at_the_latest_after_max_delay():
    calls = []

    def reconcile(ns):
        calls.append(ns)
        return True

    async def scenario():
        workers = NamespaceWorkers(reconcile, debounce=0.05, max_delay=0.2)
        loop = asyncio.get_running_loop()
        end = loop.time() + 0.7
        while loop.time() < end:  # an event every 10 ms: never quiet
            workers.trigger("busy")
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        await workers.stop()

    run(scenario())
    assert 2 <= len(calls) <= 6  # bounded by max_delay, not one per event and not starved
