"""When the hub beats and when it reads the log: heartbeats spread over the period, catch-up
only for news that is missing rather than merely in flight.

Unit tests of the hub's scheduling with a stand-in store; the claims about real sockets,
Redis and the event log are proven end to end in tests/integration (test_ws, test_cluster)."""

from __future__ import annotations

import collections
from typing import Any

from whiteboard.fanout.hub import HEARTBEAT_SLICES, Client, Hub, WardChannel
from whiteboard.fanout.memory import MemoryBroker
from whiteboard.store.accounts import Principal


class Screen:
    """A socket end that keeps what it is sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_text(self, data: str) -> None:
        self.sent.append(data)

    def write_now(self, frame: bytes) -> bool:
        return False  # no writer runs here, so nothing is written at once: the queues are inspected

    async def close(self, code: int, reason: str = "") -> None:
        pass


class StoreSeqs:
    """Stands in for the repository: only the per-ward seqs the catch-up loop reads."""

    def __init__(self) -> None:
        self.seqs: dict[str, int] = {}

    async def ward_seqs(self, wards: list[str]) -> dict[str, int]:
        return {w: self.seqs[w] for w in wards if w in self.seqs}


def hub_with_wards(wards: list[str], store: Any = None) -> tuple[Hub, dict[str, Client]]:
    hub = Hub(store or StoreSeqs(), MemoryBroker())
    clients = {}
    for ward in wards:
        channel = WardChannel(hub, ward, last_seq=0, public_alerts=())
        channel.task.cancel()  # news is not under test here: the inbox is inspected directly
        client = hub.new_client(ward, "display", Screen(), Principal("token", "t", "nurse"))
        channel.clients["display"].add(client)
        hub.channels[ward] = channel
        clients[ward] = client
    return hub, clients


def beats_queued(client: Client) -> int:
    return sum(1 for kind, _seq, _text in client.queue if kind == "heartbeat")


async def test_every_ward_beats_exactly_once_per_heartbeat_period() -> None:
    wards = [f"W{n:02d}" for n in range(1, 81)]
    hub, clients = hub_with_wards(wards)
    for _ in range(HEARTBEAT_SLICES):
        await hub._beat()
    assert {ward: beats_queued(c) for ward, c in clients.items()} == dict.fromkeys(wards, 1)
    for _ in range(HEARTBEAT_SLICES):
        await hub._beat()
    assert {beats_queued(c) for c in clients.values()} == {2}


async def test_heartbeats_are_spread_over_the_period_not_sent_at_one_instant() -> None:
    """80 wards (a 2,000-bed trust) over 25 slices: no slice carries more than a few wards, so
    no moment queues a heartbeat on every socket of the process at once."""
    wards = [f"W{n:02d}" for n in range(1, 81)]
    hub, clients = hub_with_wards(wards)
    per_slice = []
    for _ in range(HEARTBEAT_SLICES):
        before = sum(beats_queued(c) for c in clients.values())
        await hub._beat()
        per_slice.append(sum(beats_queued(c) for c in clients.values()) - before)
    assert sum(per_slice) == 80
    assert max(per_slice) <= 8, per_slice  # an even spread would be 3.2 a slice
    assert collections.Counter(c.heartbeat_slice for c in hub.channels.values()).most_common(1)[0][1] <= 8


async def test_the_heartbeat_slice_of_a_ward_is_the_same_in_every_process() -> None:
    hub_a, _ = hub_with_wards(["AMU", "W07"])
    hub_b, _ = hub_with_wards(["W07", "AMU"])
    assert {w: c.heartbeat_slice for w, c in hub_a.channels.items()} == {
        w: c.heartbeat_slice for w, c in hub_b.channels.items()
    }


def nudged(hub: Hub, ward: str) -> bool:
    inbox = hub.channels[ward].inbox
    if inbox.empty():
        return False
    assert inbox.get_nowait() is None  # a nudge: read what is missing from the log
    return True


async def test_news_in_flight_is_left_to_the_broker_for_one_tick() -> None:
    store = StoreSeqs()
    hub, _ = hub_with_wards(["W01"], store)
    store.seqs["W01"] = 3  # committed; its publish is on the way
    await hub._catch_up()
    assert not nudged(hub, "W01")
    hub.channels["W01"].last_seq = 3  # the news arrived through the broker
    store.seqs["W01"] = 4
    await hub._catch_up()
    assert not nudged(hub, "W01")


async def test_news_still_missing_a_tick_later_is_read_from_the_log() -> None:
    store = StoreSeqs()
    hub, _ = hub_with_wards(["W01", "W02"], store)
    store.seqs.update(W01=3, W02=0)
    await hub._catch_up()
    assert not nudged(hub, "W01")
    store.seqs["W01"] = 5  # more commits meanwhile; seqs 1..3 never arrived
    await hub._catch_up()
    assert nudged(hub, "W01")
    assert not nudged(hub, "W02")


async def test_a_ward_already_reading_its_log_is_not_nudged_twice() -> None:
    store = StoreSeqs()
    hub, _ = hub_with_wards(["W01"], store)
    store.seqs["W01"] = 2
    await hub._catch_up()
    hub.channels["W01"].inbox.put_nowait(None)
    await hub._catch_up()
    assert hub.channels["W01"].inbox.qsize() == 1


async def test_revocations_are_checked_on_their_own_loop_not_with_every_catch_up() -> None:
    hub = Hub(StoreSeqs(), MemoryBroker())  # type: ignore[arg-type]
    await hub.start()
    try:
        assert {t.get_name() for t in hub._tasks} == {"hub-heartbeat", "hub-catch-up", "hub-revocations"}
        assert hub.revocation_seconds == 1.0 and hub.catch_up_seconds == 0.5
    finally:
        await hub.stop()
