"""Per-client fairness at the router (issue 17, item 5; ADR 0013): one client's requests in flight are
bounded, its excess waits in its own queue or is refused, and other clients are never held up by it.

Requests are coroutines that hold their turn until the test lets them finish; time is fake (looptime), so
the queue wait is exact and the tests take no real time.
"""

from __future__ import annotations

import asyncio
import ipaddress

import looptime
import pytest
from multidict import CIMultiDict

from cells_dataplane.fairness import ClientFairness, TooManyRequests, client_key

PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


def run(coro):
    with asyncio.Runner(loop_factory=lambda: looptime.new_event_loop(start=0, _enabled=True)) as runner:
        return runner.run(coro)


class Requests:
    """Requests through ``fairness``: each enters its client's turn, records itself, and holds it until told."""

    def __init__(self, fairness: ClientFairness) -> None:
        self.fairness = fairness
        self.serving: list[str] = []  # names of requests inside their turn now
        self.served: list[str] = []  # names in the order they got their turn
        self.finish: dict[str, asyncio.Event] = {}

    def start(self, client: str, name: str) -> asyncio.Task:
        self.finish[name] = asyncio.Event()
        return asyncio.ensure_future(self._one(client, name))

    async def _one(self, client: str, name: str) -> str:
        try:
            async with self.fairness.turn(client, CIMultiDict()):
                self.serving.append(name)
                self.served.append(name)
                await self.finish[name].wait()
                self.serving.remove(name)
        except TooManyRequests as exc:
            return exc.reason
        return "served"

    def in_flight(self, prefix: str) -> list[str]:
        return [n for n in self.serving if n.startswith(prefix)]


async def settle() -> None:
    """Let every ready task run (fake time does not move)."""
    for _ in range(10):
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.7", ["198.51.100.1"], "203.0.113.7"),  # not a trusted proxy: its X-Forwarded-For is a claim
        ("10.1.2.3", ["198.51.100.1"], "198.51.100.1"),  # a trusted proxy: the address it saw
        ("10.1.2.3", ["6.6.6.6, 198.51.100.1, 10.9.9.9"], "198.51.100.1"),  # forged entries left of it ignored
        ("10.1.2.3", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),  # several header lines read as one list
        ("10.1.2.3", [], "10.1.2.3"),  # a trusted proxy's own request (a health check)
        ("10.1.2.3", ["10.4.4.4"], "10.1.2.3"),  # only trusted hops
        ("10.1.2.3", ["not-an-address"], "not-an-address"),  # what the proxy wrote, a key all the same
        ("2001:db8:0:0::1", [], "2001:db8::1"),  # one spelling per address
        (None, [], ""),
    ],
)
def test_the_client_is_the_peer_or_the_address_the_nearest_trusted_proxy_saw(peer, forwarded, expected):
    assert client_key(peer, forwarded, PROXIES) == expected


def test_turn_reads_x_forwarded_for_only_behind_a_trusted_proxy():
    fairness = ClientFairness(in_flight=1, trusted=PROXIES)
    headers = CIMultiDict([("X-Forwarded-For", "198.51.100.1")])
    assert fairness.turn("10.1.2.3", headers).client == "198.51.100.1"
    assert fairness.turn("203.0.113.7", headers).client == "203.0.113.7"


def test_off_by_default_bounds_nothing():
    fairness = ClientFairness()
    requests = Requests(fairness)

    async def scenario():
        tasks = [requests.start("127.0.0.1", f"a{i}") for i in range(100)]
        await settle()
        in_flight = len(requests.in_flight("a"))
        for event in requests.finish.values():
            event.set()
        return in_flight, await asyncio.gather(*tasks)

    in_flight, results = run(scenario())
    assert in_flight == 100 and results == ["served"] * 100
    assert fairness.clients == {}


def test_a_client_past_its_bound_waits_in_its_own_queue_and_others_are_not_held_up():
    fairness = ClientFairness(in_flight=1, queue=2)
    requests = Requests(fairness)

    async def scenario():
        hammer = [requests.start("127.0.0.2", f"attacker-{i}") for i in range(4)]
        await settle()
        assert requests.in_flight("attacker") == ["attacker-0"]  # one served, two waiting, the fourth refused
        assert hammer[3].done() and hammer[3].result() == "queue_full"
        normal = requests.start("127.0.0.1", "normal")
        await settle()
        assert requests.in_flight("normal") == ["normal"]  # admitted at once, beside the attacker's one
        requests.finish["normal"].set()
        for i in range(3):  # the attacker's queue advances only as its own requests finish, in order
            assert requests.in_flight("attacker") == [f"attacker-{i}"]
            requests.finish[f"attacker-{i}"].set()
            await settle()
        return await asyncio.gather(*hammer, normal)

    assert run(scenario()) == ["served", "served", "served", "queue_full", "served"]
    assert requests.served == ["attacker-0", "normal", "attacker-1", "attacker-2"]
    assert fairness.clients == {}  # nothing kept for clients with nothing in flight


def test_refusals_are_reported_with_their_reason():
    refused: list[str] = []
    fairness = ClientFairness(in_flight=1, queue=0, on_refuse=refused.append)
    requests = Requests(fairness)

    async def scenario():
        first = requests.start("127.0.0.2", "a0")
        second = requests.start("127.0.0.2", "a1")
        await settle()
        requests.finish["a0"].set()
        return await asyncio.gather(first, second)

    assert run(scenario()) == ["served", "queue_full"]
    assert refused == ["queue_full"]


def test_a_request_waiting_longer_than_the_wait_is_refused_and_leaves_the_queue():
    refused: list[str] = []
    fairness = ClientFairness(in_flight=1, queue=4, wait=2.0, on_refuse=refused.append)
    requests = Requests(fairness)

    async def scenario():
        loop = asyncio.get_running_loop()
        stuck = requests.start("127.0.0.2", "a0")  # holds its turn for good (a long download, say)
        waiting = requests.start("127.0.0.2", "a1")
        result = await waiting
        when = loop.time()
        assert len(fairness.clients["127.0.0.2"].waiting) == 0
        requests.finish["a0"].set()
        await stuck
        return result, when

    assert run(scenario()) == ("queue_wait", pytest.approx(2.0))
    assert refused == ["queue_wait"]
    assert fairness.clients == {}


def test_a_request_cancelled_while_waiting_gives_up_its_place():
    """A client that hangs up while queued must not keep a place, nor a slot handed to it at that moment."""
    fairness = ClientFairness(in_flight=1, queue=4)
    requests = Requests(fairness)

    async def scenario():
        first = requests.start("127.0.0.2", "a0")
        gone = requests.start("127.0.0.2", "a1")
        granted_then_gone = requests.start("127.0.0.2", "a2")
        last = requests.start("127.0.0.2", "a3")
        await settle()
        gone.cancel()
        await settle()
        assert len(fairness.clients["127.0.0.2"].waiting) == 2
        requests.finish["a0"].set()
        await asyncio.sleep(0)  # a0 leaves and hands its slot to a2, which has not resumed yet...
        granted_then_gone.cancel()  # ...and is cancelled before it does: the slot passes on to a3
        await settle()
        assert requests.in_flight("a") == ["a3"]
        requests.finish["a3"].set()
        await asyncio.gather(first, last)
        return gone.cancelled(), granted_then_gone.cancelled()

    assert run(scenario()) == (True, True)
    assert requests.served == ["a0", "a3"]
    assert fairness.clients == {}


def test_negative_bounds_are_refused():
    with pytest.raises(ValueError, match=">= 0"):
        ClientFairness(in_flight=-1)
