"""What an API error means, and one warning per outage instead of one per retry.

The operator talks to the API server through two clients (kopf's aiohttp session for watches, the
official client for reads and writes). Both see the same outages: an API server restart is a burst of
connection refusals, 404s while its CRD informers resync (kubernetes/kubernetes#71218), 5xx and 429.
Logging each retry at ERROR, as kopf does, buries the one line an on-call engineer needs. The tracker
turns the stream of errors into two lines -- a WARNING when an outage starts, an INFO with its length
when the API answers again -- and counts every error by code for the metrics.

Pure: the clock is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Codes that will not go away by waiting: the credentials or the RBAC rules are wrong.
PERMANENT_CODES = frozenset({"401", "403"})

_KOPF_ERRORS = {
    "APIUnauthorizedError": "401",
    "APIForbiddenError": "403",
    "APINotFoundError": "404",
    "APIConflictError": "409",
    "APITooManyRequestsError": "429",
    "APIServerError": "5xx",
    "APIClientError": "4xx",
}


# What says "the API server is not answering (well)": an outage. Everything else -- a 404 of a deleted
# object, a 409 conflict, a 422, an error of our own -- is an answer, and no reason to warn of an outage.
OUTAGE_CODES = frozenset({"connection", "timeout", "tls", "429", "5xx"}) | {str(c) for c in range(500, 600)}
_NETWORK_MODULES = ("urllib3", "aiohttp", "ssl", "http.client", "socket")


def error_code(exc: BaseException) -> str:
    """A short label for ``exc``: the HTTP status when there is one, else the kind of failure, or
    ``other`` for an exception that is not about talking to the API server."""
    status = getattr(exc, "status", None) or getattr(exc, "code", None)
    if isinstance(status, int) and 100 <= status < 600:
        return str(status)
    name = type(exc).__name__
    if name in _KOPF_ERRORS:
        return _KOPF_ERRORS[name]
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return "timeout"
    if "SSL" in name or "Certificate" in name:
        return "tls"
    if isinstance(exc, OSError) or type(exc).__module__.startswith(_NETWORK_MODULES):
        return "connection"
    return "other"


_ATTEMPT = re.compile(r"^Request attempt #\d+(?:/\d+)? failed; (will retry|escalating): (.*) -> (\w+)\(")


def parse_kopf_retry(message: str) -> tuple[str, str, bool] | None:
    """kopf's per-retry log line ``Request attempt #3 failed; will retry: GET url -> APIServerError(...)``
    as (request, code, final), or None for any other line."""
    match = _ATTEMPT.match(message)
    if not match:
        return None
    outcome, request, error = match.groups()
    code = _KOPF_ERRORS.get(error) or ("timeout" if "Timeout" in error else "connection")
    return request, code, outcome == "escalating"


@dataclass
class Outage:
    started: float
    first_error: str
    last_error: float
    errors: int = 1
    answered: bool = False  # the API answered since the last error


class OutageTracker:
    """Collapses errors into outages. ``error`` answers whether this error starts one (log a WARNING);
    ``ok`` records an answer and returns the finished outage, if any (log an INFO).

    An API server that restarts answers, fails, answers (429 while it initializes, a watch refused, a
    read that works): an outage ends only after ``settle`` seconds without an error and with an answer
    since, so one restart is one WARNING and one INFO. ``ok`` is also called by the watchdog with
    ``answered=False`` so a quiet system still says the outage is over."""

    def __init__(self, settle: float = 10.0) -> None:
        self.current: Outage | None = None
        self.settle = settle

    def error(self, now: float, description: str) -> bool:
        if self.current is None:
            self.current = Outage(now, description, now)
            return True
        self.current.errors += 1
        self.current.last_error = now
        self.current.answered = False
        return False

    def ok(self, now: float, answered: bool = True) -> tuple[Outage, float] | None:
        outage = self.current
        if outage is None:
            return None
        outage.answered = outage.answered or answered
        if not outage.answered or now - outage.last_error < self.settle:
            return None
        self.current = None
        return outage, now - outage.started
