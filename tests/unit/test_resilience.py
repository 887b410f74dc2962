"""The pure pieces that keep the operator alive: backoff with jitter, outages, health, kopf's settings."""

from __future__ import annotations

import logging
import random

from tenacity import wait_exponential

from cells_operator.backoff import Backoffs, delay_for, exponential_jitter
from cells_operator.config import OperatorConfig
from cells_operator.health import API_UNAVAILABLE, CRD_MISSING, Health
from cells_operator.outage import OutageTracker, error_code, parse_kopf_retry
from cells_operator.supervisor import KopfRetryLog, kopf_settings


def test_delay_doubles_up_to_the_cap_with_jitter_between_half_and_all(monkeypatch):
    wait = exponential_jitter(1.0, 10.0)
    monkeypatch.setattr(random, "uniform", lambda low, high: low)  # tenacity draws its jitter here
    assert [delay_for(wait, n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 5.0]
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    assert [delay_for(wait, n) for n in range(1, 6)] == [1, 2, 4, 8, 10]
    monkeypatch.setattr(random, "uniform", lambda low, high: (low + high) / 2)
    assert delay_for(exponential_jitter(1.0, 30.0), 10_000) == 22.5  # huge attempt numbers do not overflow


def test_backoffs_for_kopf_stop_after_the_budget_and_are_not_sized():
    waits = list(Backoffs(wait_exponential(multiplier=1.0, max=15.0), budget=60.0))  # no jitter: exact
    assert waits == [1, 2, 4, 8, 15, 15, 15]  # 60 s reached with the seventh wait
    assert not hasattr(Backoffs(), "__len__")  # kopf numbers attempts without a misleading total


def test_error_codes_for_both_clients():
    from kubernetes.client.exceptions import ApiException

    assert error_code(ApiException(status=503)) == "503"
    assert error_code(ApiException(status=403)) == "403"
    assert error_code(ConnectionRefusedError()) == "connection"
    assert error_code(TimeoutError()) == "timeout"
    NotFound = type("APINotFoundError", (Exception,), {})  # kopf's class, by name
    assert error_code(NotFound("404 page not found")) == "404"


def test_kopf_retry_lines_are_parsed():
    line = "Request attempt #3 failed; will retry: GET https://h/apis/x -> APIServerError('boom', {})"
    assert parse_kopf_retry(line) == ("GET https://h/apis/x", "5xx", False)
    last = "Request attempt #9/9 failed; escalating: GET https://h/api -> ClientConnectorError(conn)"
    assert parse_kopf_retry(last) == ("GET https://h/api", "connection", True)
    assert parse_kopf_retry("Keep-alive in 'x'") is None


def test_one_warning_per_outage_and_one_recovery_line():
    tracker = OutageTracker(settle=10.0)
    assert tracker.ok(0.0) is None
    assert tracker.error(10.0, "GET /api: connection") is True
    assert tracker.error(11.0, "GET /api: connection") is False
    assert tracker.ok(12.0) is None  # it answers again ...
    assert tracker.error(13.0, "GET /api: 429") is False  # ... and fails again while starting: same outage
    assert tracker.ok(22.0) is None  # an answer, 9 s after the last error: not settled yet
    outage, length = tracker.ok(23.0, answered=False)  # the watchdog asks: 10 s quiet, answered since
    assert (outage.errors, outage.first_error, length) == (3, "GET /api: connection", 13.0)
    tracker.error(40.0, "down")
    assert tracker.ok(60.0, answered=False) is None  # quiet, but nothing answered: still out
    assert tracker.ok(61.0)[0].first_error == "down"  # it answers, 21 s after the last error: over at once
    assert tracker.error(70.0, "again") is True  # a new outage warns again


def test_error_codes_tell_outages_from_answers():
    from cells_operator.outage import OUTAGE_CODES

    assert {"connection", "timeout", "tls", "429", "503", "5xx"} <= OUTAGE_CODES
    assert not {"404", "409", "422", "403", "other"} & OUTAGE_CODES
    assert error_code(RuntimeError("gave up after 8 write conflicts")) == "other"


def test_kopf_retry_log_filter_counts_and_demotes():
    seen = []
    f = KopfRetryLog(lambda code, what: seen.append((code, what)), show_debug=lambda: True)
    record = logging.LogRecord(
        "kopf._cogs.clients.api", logging.ERROR, __file__, 1,
        "Request attempt #1 failed; will retry: GET /x -> APITooManyRequestsError('slow')", None, None,
    )  # fmt: skip
    assert f.filter(record) is True
    assert record.levelno == logging.DEBUG and seen == [("429", "GET /x: 429")]
    other = logging.LogRecord("kopf", logging.ERROR, __file__, 1, "something else", None, None)
    assert f.filter(other) and other.levelno == logging.ERROR and len(seen) == 1
    quiet = KopfRetryLog(lambda code, what: seen.append((code, what)))  # not logging at DEBUG: dropped
    again = logging.LogRecord("kopf", logging.ERROR, __file__, 1, record.msg, None, None)
    assert quiet.filter(again) is False and len(seen) == 2


def test_health_blocks_report_and_describe():
    health = Health(stall_after=120.0)
    assert health.ready and health.describe(0.0) == "ok: reconciling"
    assert health.block(CRD_MISSING, "install crds/", 10.0) is True
    assert health.block(CRD_MISSING, "install crds/ (still)", 20.0) is False  # same blocker, same start
    assert not health.ready and health.blocked_for(100.0) == 90.0
    assert health.overdue(129.0) == []
    (due,) = health.overdue(130.0)
    assert due[0] == CRD_MISSING and health.overdue(500.0) == []  # reported once
    assert "not ready: CRDNotInstalled for 120s: install crds/ (still)" in health.describe(130.0)
    assert health.unblock(CRD_MISSING, 140.0) == 130.0 and health.unblock(API_UNAVAILABLE, 140.0) is None
    health.leader = False
    assert health.ready and health.describe(141.0) == "ok: standby: waiting for the Lease"


def test_kopf_settings_bound_every_wait_and_never_kill_the_process():
    config = OperatorConfig(watch_read_timeout=60.0, connect_timeout=10.0, request_timeout=60.0, resync_seconds=300)
    s = kopf_settings(config)
    assert s.watching.inactivity_timeout == 60.0  # a dead stream is noticed within a minute
    assert s.watching.connect_timeout == 10.0 and s.networking.connect_timeout == 10.0
    assert s.networking.request_timeout == 60.0
    assert s.process.ultimate_exiting_timeout is None  # kopf's own SIGKILL timer would kill the supervisor
    assert isinstance(s.networking.error_backoffs, Backoffs)
    assert s.posting.enabled is False
    assert s.persistence.finalizer.startswith("cells.dev/")
