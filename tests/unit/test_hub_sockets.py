"""A socket's queue and writer: bounded, in seq order, and ended from anywhere.

Unit tests of `Client` and `Hub.pump` with a stand-in socket end; the same claims against real
sockets (1013 for a client that never reads, 1008 on revocation, 1012 on shutdown) are in
tests/integration/test_ws.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.helpers import timeout
from whiteboard.fanout.hub import CLOSE_POLICY, CLOSE_TRY_AGAIN, Client, Hub
from whiteboard.fanout.memory import MemoryBroker
from whiteboard.store.accounts import Principal


class Screen:
    """A socket end that keeps what it is sent; `stall` makes it stop taking frames."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.stall = asyncio.Event()
        self.stalled = asyncio.Event()

    async def send_text(self, data: str) -> None:
        if self.stall.is_set():
            self.stalled.set()
            await asyncio.Event().wait()  # a transport that never drains
        self.sent.append(data)

    async def close(self, code: int, reason: str = "") -> None:
        pass


def client_of(hub: Hub, limit: int = 256) -> tuple[Client, Screen]:
    hub.queue_limit = limit
    screen = Screen()
    return hub.new_client("W01", "clinical", screen, Principal("token", "t", "nurse")), screen


async def wait_for(predicate: Callable[[], bool], seconds: float = 2.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout(seconds))


@pytest.fixture
def hub() -> Hub:
    return Hub(None, MemoryBroker())  # type: ignore[arg-type] # no gap to repair: no store read


def test_a_full_queue_ends_the_socket_with_1013_and_queues_nothing_more(hub: Hub) -> None:
    client, _ = client_of(hub, limit=3)
    for seq in (1, 2, 3):
        client.offer("change", seq, f"c{seq}")
    assert not client.ended
    client.offer("change", 4, "c4")
    assert client.ended and client.close_code == CLOSE_TRY_AGAIN
    client.offer("heartbeat", 4, "h4")
    assert [seq for _kind, seq, _text in client.queue] == [1, 2, 3]


async def test_the_writer_sends_the_first_frames_then_the_queue_in_order(hub: Hub) -> None:
    client, screen = client_of(hub)
    client.offer("change", 4, "c4")  # queued while the first frames were being read
    initial = [(3, "snapshot at 3")]
    writer = asyncio.create_task(hub.pump(client, initial, 3))
    await wait_for(lambda: len(screen.sent) == 2)
    assert initial == []  # let go of once sent: nothing keeps a snapshot for the socket's life
    client.offer("change", 3, "old news")
    client.offer("heartbeat", 5, "h5")
    client.offer("change", 5, "c5")
    await wait_for(lambda: len(screen.sent) == 4)
    client.end(CLOSE_POLICY, "no longer allowed")
    await asyncio.wait_for(writer, timeout(1))
    assert screen.sent == ["snapshot at 3", "c4", "h5", "c5"]
    assert client.last_seq == 5 and client.close_code == CLOSE_POLICY


async def test_ending_a_socket_stops_its_writer_while_it_waits_to_send(hub: Hub) -> None:
    client, screen = client_of(hub, limit=2)
    writer = asyncio.create_task(hub.pump(client, [(1, "snapshot at 1")], 1))
    await wait_for(lambda: screen.sent == ["snapshot at 1"])
    screen.stall.set()
    client.offer("change", 2, "c2")
    await asyncio.wait_for(screen.stalled.wait(), timeout(1))
    for seq in (3, 4, 5):  # the queue fills behind the stalled send
        client.offer("change", seq, f"c{seq}")
    assert client.ended and client.close_code == CLOSE_TRY_AGAIN
    await asyncio.wait_for(writer, timeout(1))  # not stuck behind the send that never finishes
    assert screen.sent == ["snapshot at 1"]


async def test_a_socket_ended_before_its_writer_starts_is_sent_nothing(hub: Hub) -> None:
    client, screen = client_of(hub)
    client.end(CLOSE_POLICY, "no longer allowed")
    await asyncio.wait_for(hub.pump(client, [(1, "snapshot at 1")], 1), timeout(1))
    assert screen.sent == []


async def test_a_timeout_from_below_is_not_taken_for_the_end_of_the_socket(hub: Hub) -> None:
    client, screen = client_of(hub)

    async def times_out(data: str) -> None:
        raise TimeoutError

    screen.send_text = times_out  # type: ignore[method-assign]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(hub.pump(client, [(1, "snapshot at 1")], 1), timeout(1))
    assert not client.ended
