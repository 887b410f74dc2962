"""Per-client fairness at the router: a bound on each client's requests in flight (issue 17, ADR 0013).

On the router's one event loop every request in flight competes with every other. A client that keeps
many requests in flight -- the attack benchmark's attacker loops on 5 connections -- gets that many
shares of the loop, the evaluation workers and the cell connections, and a client with one request in
flight waits behind all of them. With ``--max-in-flight-per-client N`` a client has at most N requests
being served; the next ones wait in that client's own FIFO queue (at most ``--client-queue`` of them, for
at most ``wait`` seconds) and are answered **429** beyond it. A client's queue advances only when one of
its own requests finishes, so a deep queue delays nobody else: each client's admission is independent,
and what the loop serves is at most N requests of each client, taken in turn.

Who is "a client": the connection's peer address, or -- when the peer is one of ``--trusted-proxies`` --
the rightmost address of ``X-Forwarded-For`` that is not a trusted proxy (what the nearest trusted proxy
saw; entries to its left are the client's own claims). Off by default (0): behind a NAT or a load balancer
that does not pass the client's address, many users share one address, and a per-address bound would
throttle them together (ADR 0013).

Pure asyncio, no I/O and no clock of its own (the loop's): unit tests run it on fake time.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

CLIENT_QUEUE = 32  # requests a client may have waiting beyond its in-flight bound; more -> 429
QUEUE_WAIT = 10.0  # seconds a request may wait in its client's queue; then 429 (bounds a stuck queue)

Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


class TooManyRequests(Exception):
    """This client already has its share in flight and its queue is full (or the wait ran out): 429."""

    def __init__(self, client: str, reason: str, detail: str) -> None:
        super().__init__(f"too many requests from this client: {client}, {detail}")
        self.client = client
        self.reason = reason  # "queue_full" or "queue_wait" (the metric's label)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, trusted: Networks) -> bool:
    return address is not None and any(address in network for network in trusted)


def trusted_peer(peer: str | None, trusted: Networks) -> bool:
    """Whether the connection comes from a proxy in ``--trusted-proxies`` (whose X-Forwarded-* are kept)."""
    if not peer or not trusted:
        return False
    try:
        return _trusted(ipaddress.ip_address(peer), trusted)
    except ValueError:
        return False


def client_key(peer: str | None, forwarded_for: Iterable[str], trusted: Networks) -> str:
    """Who sent the request: the peer, or behind trusted proxies the nearest address they did not add.

    Only the rightmost entries of ``X-Forwarded-For`` were written by trusted proxies; a client can put
    anything to their left, so the first untrusted address from the right is the one a trusted proxy saw.
    """
    address = _address(peer or "")
    if address is None:
        return peer or ""
    if not _trusted(address, trusted):
        return address.compressed
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        hop_address = _address(hop)
        if not _trusted(hop_address, trusted):
            return hop_address.compressed if hop_address is not None else hop
    return address.compressed  # a chain of trusted proxies only (a health check from one of them)


@dataclass
class _Client:
    in_flight: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)


class _NoBound:
    """What ``turn`` returns when fairness is off: nothing to count, nothing to wait for."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NO_BOUND = _NoBound()


class ClientFairness:
    """At most ``in_flight`` requests of each client served at once; ``queue`` more wait, the rest are 429.

    ``in_flight`` 0 turns it off. State exists only for clients with a request in flight or waiting, so
    memory is bounded by the requests the router holds, not by the number of addresses ever seen.
    """

    def __init__(
        self,
        in_flight: int = 0,
        queue: int = CLIENT_QUEUE,
        trusted: Networks = (),
        wait: float = QUEUE_WAIT,
        on_refuse=None,
    ) -> None:
        if in_flight < 0 or queue < 0:
            raise ValueError("in-flight and queue bounds per client must be >= 0")
        self.in_flight = in_flight
        self.queue = queue
        self.trusted = trusted
        self.wait = wait
        self.on_refuse = on_refuse or (lambda reason: None)  # e.g. a counter with a reason label
        self.clients: dict[str, _Client] = {}

    def turn(self, peer: str | None, headers) -> _NoBound | _Turn:
        """``async with fairness.turn(request.remote, request.headers):`` around serving one request."""
        if not self.in_flight:
            return _NO_BOUND
        return _Turn(self, client_key(peer, headers.getall("X-Forwarded-For", []), self.trusted))

    async def acquire(self, client: str) -> None:
        state = self.clients.setdefault(client, _Client())
        if state.in_flight < self.in_flight and not state.waiting:
            state.in_flight += 1
            return
        if len(state.waiting) >= self.queue:
            self._forget_if_idle(client, state)
            self._refuse(client, "queue_full", f"{self.in_flight} in flight and {self.queue} waiting already")
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.waiting.append(granted)
        try:
            await asyncio.wait({granted}, timeout=self.wait)
        except BaseException:  # the request was cancelled (its client hung up) while waiting
            if granted.done():
                self.release(client)  # the slot came just then: it passes on, not lost
            else:
                self._leave(client, state, granted)
            raise
        if not granted.done():
            self._leave(client, state, granted)
            self._refuse(client, "queue_wait", f"waited {self.wait:g}s behind its own requests")

    def release(self, client: str) -> None:
        """One of ``client``'s requests finished: its slot goes to the next request it has waiting."""
        state = self.clients[client]
        if state.waiting:
            state.waiting.popleft().set_result(None)  # the slot passes on: in_flight stays the same
            return
        state.in_flight -= 1
        self._forget_if_idle(client, state)

    def _leave(self, client: str, state: _Client, granted: asyncio.Future[None]) -> None:
        granted.cancel()
        state.waiting.remove(granted)
        self._forget_if_idle(client, state)

    def _forget_if_idle(self, client: str, state: _Client) -> None:
        if not state.in_flight and not state.waiting:
            self.clients.pop(client, None)

    def _refuse(self, client: str, reason: str, detail: str) -> None:
        self.on_refuse(reason)
        raise TooManyRequests(client, reason, detail) from None


class _Turn:
    """One request's turn: waits for a slot of its client on entry, hands it on at exit."""

    __slots__ = ("client", "fairness")

    def __init__(self, fairness: ClientFairness, client: str) -> None:
        self.fairness = fairness
        self.client = client

    async def __aenter__(self) -> None:
        await self.fairness.acquire(self.client)

    async def __aexit__(self, *exc: object) -> None:
        self.fairness.release(self.client)
