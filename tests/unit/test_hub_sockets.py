"""A socket's queue and writer: bounded, in seq order, and ended from anywhere.

Unit tests of `Client` and `Hub.pump` with a stand-in socket end; the same claims against real
sockets (1013 for a client that never reads, 1008 on revocation, 1012 on shutdown) are in
tests/integration/test_ws.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from tests.helpers import timeout
from whiteboard.fanout.hub import CLOSE_POLICY, CLOSE_TRY_AGAIN, Client, Hub, Outgoing
from whiteboard.fanout.memory import MemoryBroker
from whiteboard.store.accounts import Principal


class Screen:
    """A socket end that keeps what it is sent, and how; `stall` makes it stop taking frames
    (a full transport: nothing written at once, a send that never finishes)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.written_at_once: list[str] = []
        self.stall = asyncio.Event()
        self.stalled = asyncio.Event()

    async def send_text(self, data: str) -> None:
        if self.stall.is_set():
            self.stalled.set()
            await asyncio.Event().wait()  # a transport that never drains
        self.sent.append(data)

    def write_now(self, frame: bytes) -> bool:
        if self.stall.is_set():
            return False
        text = text_of(frame)
        self.sent.append(text)
        self.written_at_once.append(text)
        return True

    async def close(self, code: int, reason: str = "") -> None:
        pass


def text_of(wire: bytes) -> str:
    """The text of one encoded server frame, read back with the websockets parser."""
    reader = StreamReader()
    reader.feed_data(wire)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as parsed:
        next(parser)
    frame = parsed.value.value
    assert frame.opcode is Opcode.TEXT and frame.fin and not reader.buffer  # one whole frame, nothing over
    return bytes(frame.data).decode()


def offer(client: Client, kind: str, seq: int, text: str) -> None:
    client.offer(kind, seq, Outgoing(text))


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
        offer(client, "change", seq, f"c{seq}")
    assert not client.ended
    offer(client, "change", 4, "c4")
    assert client.ended and client.close_code == CLOSE_TRY_AGAIN
    offer(client, "heartbeat", 4, "h4")
    assert [seq for _kind, seq, _text in client.queue] == [1, 2, 3]


async def test_the_writer_sends_the_first_frames_then_the_queue_in_order(hub: Hub) -> None:
    client, screen = client_of(hub)
    offer(client, "change", 4, "c4")  # queued while the first frames were being read
    initial = [(3, "snapshot at 3")]
    writer = asyncio.create_task(hub.pump(client, initial, 3))
    await wait_for(lambda: len(screen.sent) == 2)
    assert initial == []  # let go of once sent: nothing keeps a snapshot for the socket's life
    offer(client, "change", 3, "old news")
    offer(client, "heartbeat", 5, "h5")
    offer(client, "change", 5, "c5")
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
    offer(client, "change", 2, "c2")
    await asyncio.wait_for(screen.stalled.wait(), timeout(1))
    for seq in (3, 4, 5):  # the queue fills behind the stalled send
        offer(client, "change", seq, f"c{seq}")
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


async def test_an_idle_socket_is_written_to_at_once_and_its_writer_stays_asleep(hub: Hub) -> None:
    client, screen = client_of(hub)
    writer = asyncio.create_task(hub.pump(client, [(3, "snapshot at 3")], 3))
    await wait_for(client.idle)
    frame = Outgoing("c4")
    client.offer("change", 4, frame)
    offer(client, "heartbeat", 4, "h4")
    assert screen.written_at_once == ["c4", "h4"]  # in the offering call itself, no task switch
    assert client.last_seq == 4 and client.queue == [] and client.idle()
    assert frame.wire() is frame.wire()  # encoded once for however many sockets
    client.end(CLOSE_POLICY, "no longer allowed")
    await asyncio.wait_for(writer, timeout(1))
    assert screen.sent == ["snapshot at 3", "c4", "h4"]


async def test_a_frame_that_is_not_next_goes_through_the_queue_not_around_it(hub: Hub) -> None:
    client, screen = client_of(hub)
    writer = asyncio.create_task(hub.pump(client, [(3, "snapshot at 3")], 3))
    await wait_for(client.idle)
    offer(client, "change", 3, "old news")  # a duplicate
    offer(client, "heartbeat", 2, "h2")  # a heartbeat from before the last change sent
    assert screen.written_at_once == [] and len(client.queue) == 2
    await wait_for(client.idle)
    assert screen.sent[1].startswith('{"type":"heartbeat","ward":"W01","seq":3')  # brought up to date
    assert len(screen.sent) == 2 and client.last_seq == 3
    client.end(CLOSE_POLICY, "no longer allowed")
    await asyncio.wait_for(writer, timeout(1))


async def test_frames_behind_a_full_transport_queue_in_order_and_direct_writes_resume_after(hub: Hub) -> None:
    client, screen = client_of(hub)
    writer = asyncio.create_task(hub.pump(client, [(1, "snapshot at 1")], 1))
    await wait_for(client.idle)
    offer(client, "change", 2, "c2")  # written at once
    screen.stall.set()
    offer(client, "change", 3, "c3")  # the transport says wait: queued, and the writer sends it
    await asyncio.wait_for(screen.stalled.wait(), timeout(1))
    offer(client, "change", 4, "c4")  # the writer is busy: queued behind c3, not written past it
    screen.stall.clear()
    assert screen.sent == ["snapshot at 1", "c2"] and [seq for _k, seq, _t in client.queue] == [4]
    # The stalled send never finishes in this stand-in; end it and check nothing went around it.
    client.end(CLOSE_POLICY, "no longer allowed")
    await asyncio.wait_for(writer, timeout(1))
    assert screen.written_at_once == ["c2"]


async def test_once_a_busy_writer_has_drained_its_queue_frames_go_direct_again(hub: Hub) -> None:
    client, screen = client_of(hub)
    offer(client, "change", 2, "c2")  # queued while the first frames were being read
    offer(client, "change", 3, "c3")
    writer = asyncio.create_task(hub.pump(client, [(1, "snapshot at 1")], 1))
    await wait_for(client.idle)
    offer(client, "change", 4, "c4")
    assert screen.sent == ["snapshot at 1", "c2", "c3", "c4"] and screen.written_at_once == ["c4"]
    client.end(CLOSE_POLICY, "no longer allowed")
    await asyncio.wait_for(writer, timeout(1))


def test_an_ended_socket_is_written_nothing_at_once(hub: Hub) -> None:
    client, screen = client_of(hub)
    client.end(CLOSE_POLICY, "no longer allowed")
    offer(client, "change", 1, "c1")
    assert screen.sent == [] and client.queue == []
