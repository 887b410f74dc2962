"""The router's classification cache: positive and negative answers, TTLs from Cache-Control.

Entries expire after the Topology Service's ``max-age`` (capped by the router's own TTL settings). An
expired entry is not thrown away: when the Topology Service cannot be reached, the router answers from
it (stale-if-error), which is what keeps traffic flowing through a Topology Service outage. Concurrent
misses for the same key share one request (single flight).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

MAX_AGE = re.compile(r"(?:^|,)\s*max-age=(\d+)")


class Unavailable(Exception):
    """The Topology Service could not answer and nothing is cached for this key."""


@dataclass(frozen=True)
class ServiceAnswer:
    """What the Topology Service said: an address (None = NOT_FOUND) and its Cache-Control."""

    address: str | None
    cache_control: str | None = None


@dataclass
class Entry:
    address: str | None
    expires: float


@dataclass(frozen=True)
class Resolution:
    address: str | None  # None: the service says no such cell
    source: str  # hit | miss | stale


def max_age(cache_control: str | None) -> float | None:
    if not cache_control:
        return None
    if "no-store" in cache_control or "no-cache" in cache_control:
        return 0.0
    m = MAX_AGE.search(cache_control)
    return float(m.group(1)) if m else None


class ClassifyCache:
    def __init__(
        self,
        fetch: Callable[[str, str | None], Awaitable[ServiceAnswer]],
        ttl: float = 10.0,
        negative_ttl: float = 5.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.fetch = fetch
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self.clock = clock
        self.entries: OrderedDict[tuple[str, str | None], Entry] = OrderedDict()
        self._inflight: dict[tuple[str, str | None], asyncio.Future[ServiceAnswer]] = {}

    async def resolve(self, kind: str, value: str | None) -> Resolution:
        key = (kind, value)
        entry = self.entries.get(key)
        now = self.clock()
        if entry is not None and entry.expires > now:
            self.entries.move_to_end(key)
            return Resolution(entry.address, "hit")
        try:
            answer = await self._fetch_once(key)
        except Exception as exc:
            if entry is not None:
                return Resolution(entry.address, "stale")
            raise Unavailable(str(exc) or type(exc).__name__) from exc
        limit = self.ttl if answer.address is not None else self.negative_ttl
        age = max_age(answer.cache_control)
        lifetime = limit if age is None else min(age, limit)
        self.entries[key] = Entry(answer.address, self.clock() + lifetime)
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return Resolution(answer.address, "miss")

    async def _fetch_once(self, key: tuple[str, str | None]) -> ServiceAnswer:
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ServiceAnswer] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            answer = await self.fetch(*key)
            future.set_result(answer)
            return answer
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters get it, nobody logs "never retrieved"
            raise
        finally:
            del self._inflight[key]
