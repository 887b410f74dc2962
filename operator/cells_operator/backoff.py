"""The operator's one retry policy, built from tenacity's wait strategies: exponential, capped, with jitter.

Jitter matters more than the exponent: when the API server comes back after a restart, every client that
waited for it retries at once; spreading the retries keeps the recovering server from being hit by a
synchronized wave. The policy is "equal jitter": the wait before retry ``n`` is between half and all of
``base * 2^(n-1)`` (capped), so a retry is never immediate.

Every loop that retries takes a tenacity wait strategy as a parameter, so a test passes one without
jitter (e.g. ``tenacity.wait_exponential(multiplier=0.5, max=30)``) and sees exact delays on fake time.
Some loops are not "call this until it succeeds" -- kopf asks for an iterable of delays, the reconcile
workers count failures across events, the supervisor restarts kopf's watches -- so :func:`delay_for`
reads a strategy's delay for a given attempt number; the admission webhooks' registration, which is such
a call, uses :class:`tenacity.AsyncRetrying` directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import tenacity
from tenacity.wait import wait_base


def exponential_jitter(base: float, cap: float) -> wait_base:
    """Before retry ``n`` (1-based): ``min(cap, base * 2^(n-1))``, of which half is fixed and half random."""
    half = {"multiplier": base / 2, "max": cap / 2}
    return tenacity.wait_exponential(**half) + tenacity.wait_random_exponential(**half)


def delay_for(wait: wait_base, attempt: int) -> float:
    """The delay ``wait`` gives before retry number ``attempt`` (1-based), for loops counting their own."""
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    return float(wait(state))


@dataclass(frozen=True)
class Backoffs:
    """An iterable of delays for kopf's ``settings.networking.error_backoffs``.

    kopf retries an API request once per delay it draws and escalates when the iterable is exhausted.
    Ours stops once the delays add up to ``budget`` seconds: a transient outage shorter than that is
    ridden out inside kopf; a longer one, or a permanent error such as 403, escalates to the supervisor
    (:mod:`cells_operator.supervisor`), which decides between restarting the watches and a clear exit.
    Not ``Sized`` on purpose: kopf then numbers the attempts without a misleading total.
    """

    wait: wait_base = field(default_factory=lambda: exponential_jitter(1.0, 15.0), compare=False)
    budget: float = 60.0

    def __iter__(self) -> Iterator[float]:
        spent, attempt = 0.0, 1
        while spent < self.budget:
            wait = delay_for(self.wait, attempt)
            spent += wait
            attempt += 1
            yield wait
