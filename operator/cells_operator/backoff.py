"""Exponential backoff with jitter, as one small pure piece every retry loop of the operator shares.

Jitter matters more than the exponent: when the API server comes back after a restart, every client that
waited for it retries at once; spreading the retries ("full jitter" between half and all of the delay)
keeps the recovering server from being hit by a synchronized wave. The randomness is injected so tests
see exact delays.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


def delay(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """The wait before retry number ``attempt`` (1-based): ``base * 2^(attempt-1)`` capped at ``cap``,
    then scaled by a random factor in [0.5, 1.0)."""
    ceiling = min(cap, base * 2 ** min(max(attempt - 1, 0), 32))
    return ceiling * (0.5 + rand() / 2)


@dataclass(frozen=True)
class Backoffs:
    """An iterable of delays for kopf's ``settings.networking.error_backoffs``.

    kopf retries an API request once per delay it draws and escalates when the iterable is exhausted.
    Ours stops once the delays add up to ``budget`` seconds: a transient outage shorter than that is
    ridden out inside kopf; a longer one, or a permanent error such as 403, escalates to the supervisor
    (:mod:`cells_operator.supervisor`), which decides between restarting the watches and a clear exit.
    Not ``Sized`` on purpose: kopf then numbers the attempts without a misleading total.
    """

    base: float = 1.0
    cap: float = 15.0
    budget: float = 60.0
    rand: Callable[[], float] = field(default=random.random, compare=False)

    def __iter__(self) -> Iterator[float]:
        spent, attempt = 0.0, 1
        while spent < self.budget:
            wait = delay(attempt, self.base, self.cap, self.rand)
            spent += wait
            attempt += 1
            yield wait
