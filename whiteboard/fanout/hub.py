"""The hub: this process's live sockets, per ward and view, and the one loop that feeds them.

Each followed ward has a channel with an inbox. News from the broker, and a nudge from the
catch-up loop whenever the store is ahead of what was sent, go through that inbox one at a
time, so frames leave in `seq` order, each serialised once per ward and view. A gap (news
lost or late) is filled from the event log before anything later is sent.

Each socket has a bounded queue and a writer (`Hub.pump`, run by the socket's own task). A
socket that cannot keep up is closed with 1013 and resumes with `since`; nothing grows without
bound.

Nearly always a socket's queue is empty, its writer asleep and its transport able to take a
frame at once. Such a socket is written to directly by the ward's channel, with the frame's
bytes made once for every socket of the ward and view (`Outgoing`), as `websockets.broadcast`
does: waking each socket's writer to send one frame through the ASGI layers cost about half of
the CPU of a frame delivered (bench/fanout_cluster.py, saturation). Anything else (a frame
queued, the writer busy, the transport full, a gap) goes through the queue, so the order a
socket sees is the same either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from websockets.frames import Frame, Opcode

from whiteboard.board.model import DEFAULT_PUBLIC_ALERTS
from whiteboard.board.views import View, change_frame
from whiteboard.fanout.base import Broker, decode_event
from whiteboard.metrics import METRICS
from whiteboard.store import accounts
from whiteboard.store.accounts import Principal
from whiteboard.store.repository import Repository
from whiteboard.types import EventRecord, now_z

log = logging.getLogger("whiteboard.hub")

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_RESTART = 1012
CLOSE_TRY_AGAIN = 1013

#: The heartbeat period is cut into this many slices and each ward beats in its own slice.
#: Beating every socket of the process at one instant queues a frame on every socket at once,
#: and a change that arrives just after waits behind all of them (it was most of our p99).
HEARTBEAT_SLICES = 25


class Sink(Protocol):
    """The socket end of a client: what the hub needs from a WebSocket."""

    async def send_text(self, data: str) -> None: ...

    def write_now(self, frame: bytes) -> bool:
        """Write a whole encoded text frame (RFC 6455, unmasked, no extension) if the socket can
        take it at once without waiting; False, and nothing written, if not."""
        ...

    async def close(self, code: int, reason: str = "") -> None: ...


class Outgoing:
    """One frame for every socket of a ward and view: its text, and its bytes on the wire, made
    once when a socket is first written to directly (a server's frames are not masked, so
    every socket's bytes are the same)."""

    __slots__ = ("_wire", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._wire: bytes | None = None

    def wire(self) -> bytes:
        if self._wire is None:
            self._wire = Frame(Opcode.TEXT, self.text.encode()).serialize(mask=False)
        return self._wire


def render(record: EventRecord, view: View, public_alerts: Iterable[str]) -> str:
    frame = change_frame(record.ward, record.seq, record.at, record.payload, view, public_alerts)
    return orjson.dumps(frame).decode()


def heartbeat(ward: str, seq: int) -> str:
    return orjson.dumps({"type": "heartbeat", "ward": ward, "seq": seq, "at": now_z()}).decode()


@dataclass(eq=False, slots=True)
class Client:
    """One open socket: its view, what it has been sent, and its bounded queue.

    A process holds thousands of these, nearly all idle, so an idle one is kept small: slots,
    a plain list for a queue (empty or one frame deep nearly always; an empty deque allocates
    a 64-slot block up front, and an asyncio.Queue four deques), and one future, made only
    while the writer waits for a frame.
    """

    ward: str
    view: View
    sink: Sink
    principal: Principal
    limit: int = 256
    last_seq: int = 0
    #: Frames not yet taken by the writer, oldest first: (kind, seq, text).
    queue: list[tuple[str, int, str]] = field(default_factory=list)
    ended: bool = False
    close_code: int | None = None
    close_reason: str = ""
    _wakeup: asyncio.Future[None] | None = field(default=None, init=False, repr=False)
    _interrupt: asyncio.Timeout | None = field(default=None, init=False, repr=False)

    def offer(self, kind: str, seq: int, frame: Outgoing) -> None:
        """Send a frame without waiting: straight to the socket when its writer is idle and the
        frame is the next one it should see, else through the queue. A full queue ends the
        socket (it resumes with since)."""
        if self.ended:
            return
        if self.idle() and self._next(kind, seq) and self.sink.write_now(frame.wire()):
            self.last_seq = seq
            return
        self.enqueue(kind, seq, frame.text)

    def enqueue(self, kind: str, seq: int, text: str) -> None:
        if self.ended:
            return
        if len(self.queue) >= self.limit:
            METRICS.slow_clients.inc()
            self.end(CLOSE_TRY_AGAIN, "too slow: reconnect with since")
            return
        self.queue.append((kind, seq, text))
        self._wake()

    def idle(self) -> bool:
        """Nothing queued and the writer waiting for news: not sending, repairing a gap, or
        still on the first frames (it waits for news only after those)."""
        return not self.queue and self._wakeup is not None and not self._wakeup.done()

    def _next(self, kind: str, seq: int) -> bool:
        """Whether the frame is what the writer would send next as it stands: the change after
        the last one sent, or a heartbeat at the last one sent."""
        return seq == self.last_seq + 1 if kind == "change" else seq == self.last_seq

    def end(self, code: int, reason: str) -> None:
        """End the socket (the first code given is the one it is closed with), stopping its
        writer wherever it waits: for a frame, for room to send one, or for the event log."""
        if not self.ended:
            self.ended = True
            self.close_code, self.close_reason = code, reason
            self._wake()
            if self._interrupt is not None:
                self._interrupt.reschedule(asyncio.get_running_loop().time())

    def gone(self) -> None:
        """The client closed the socket or vanished: it ends, with no close frame left to send."""
        self.end(1000, "")
        self.close_code = None

    def news(self) -> asyncio.Future[None]:
        """A future done once a frame is queued or the socket ends. The writer awaits it bare,
        which costs an idle socket one future and no coroutine of its own."""
        self._wakeup = asyncio.get_running_loop().create_future()
        return self._wakeup

    def _wake(self) -> None:
        if self._wakeup is not None:
            if not self._wakeup.done():
                self._wakeup.set_result(None)
            self._wakeup = None


class WardChannel:
    """The news of one ward in this process: who listens, and the last seq sent to them."""

    def __init__(self, hub: Hub, ward: str, last_seq: int, public_alerts: Iterable[str]) -> None:
        self.hub = hub
        self.ward = ward
        self.last_seq = last_seq
        self.public_alerts = frozenset(public_alerts)
        #: This ward's slice of the heartbeat period: stable across processes, spread over wards.
        self.heartbeat_slice = zlib.crc32(ward.encode()) % HEARTBEAT_SLICES
        self.clients: dict[str, set[Client]] = {"clinical": set(), "display": set()}
        self.inbox: asyncio.Queue[EventRecord | None] = asyncio.Queue()  # None: catch up from the log
        self.task = asyncio.create_task(self._run(), name=f"ward-channel-{ward}")

    def empty(self) -> bool:
        return not any(self.clients.values())

    def all_clients(self) -> list[Client]:
        return [c for group in self.clients.values() for c in group]

    async def _run(self) -> None:
        while True:
            item = await self.inbox.get()
            try:
                await self._handle(item)
            except asyncio.CancelledError:
                raise
            except Exception:  # the store unreachable, say: the catch-up loop will try again
                log.exception("ward %s: could not deliver news; will catch up from the log", self.ward)

    async def _handle(self, item: EventRecord | None) -> None:
        if item is not None and item.seq <= self.last_seq:
            METRICS.duplicates_dropped.inc()
            return
        if item is not None and item.seq == self.last_seq + 1:
            self.deliver(item)
            return
        # A gap, or a nudge: read what is missing from the log, in order.
        until = None if item is None else item.seq
        while True:
            missing = await self.hub.repo.events_since(self.ward, self.last_seq, limit=500, until=until)
            if not missing:
                return
            METRICS.caught_up.inc(len(missing))
            for record in missing:
                if record.seq == self.last_seq + 1:
                    self.deliver(record)

    def deliver(self, record: EventRecord) -> None:
        for view, group in self.clients.items():
            if group:
                frame = Outgoing(render(record, view, self.public_alerts))  # type: ignore[arg-type]
                for client in list(group):
                    client.offer("change", record.seq, frame)
                METRICS.frames_sent.inc(len(group))
        self.last_seq = record.seq

    def beat(self) -> None:
        frame = Outgoing(heartbeat(self.ward, self.last_seq))
        for client in self.all_clients():
            client.offer("heartbeat", self.last_seq, frame)


class Hub:
    def __init__(
        self,
        repo: Repository,
        broker: Broker,
        *,
        heartbeat_seconds: float = 5.0,
        catch_up_seconds: float = 0.5,
        revocation_seconds: float = 1.0,
        queue_limit: int = 256,
        session_limits: accounts.SessionLimits | None = None,
    ) -> None:
        self.repo = repo
        self.broker = broker
        self.heartbeat_seconds = heartbeat_seconds
        self.catch_up_seconds = catch_up_seconds
        self.revocation_seconds = revocation_seconds
        self.queue_limit = queue_limit
        self.session_limits = session_limits or accounts.SessionLimits()
        self.channels: dict[str, WardChannel] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._joining: dict[str, asyncio.Lock] = {}
        #: The last snapshot frame sent per (ward, view), with its (seq, layout version).
        self._snapshots: dict[tuple[str, str], tuple[tuple[int, int], str]] = {}
        #: Each followed ward's seq in the store at the previous catch-up tick.
        self._store_seqs: dict[str, int] = {}
        #: Who has sockets open here, and those sockets: kept as sockets join and leave, so the
        #: revocation check (every second) asks the store about each principal once, without
        #: gathering and hashing every socket's principal each time.
        self._principals: dict[Principal, set[Client]] = {}
        self._heartbeat_slice = 0

    # --- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.broker.bind(self._on_news, self._on_control, self._on_reconnected)
        loops = {
            "hub-catch-up": (self.catch_up_seconds, self._catch_up),
            "hub-revocations": (self.revocation_seconds, self._end_revoked),
            "hub-heartbeat": (self.heartbeat_seconds / HEARTBEAT_SLICES, self._beat),
        }
        self._tasks = [asyncio.create_task(self._every(*loop), name=name) for name, loop in loops.items()]

    async def stop(self) -> None:
        for channel in self.channels.values():
            for client in channel.all_clients():
                client.end(CLOSE_RESTART, "server restarting")
        for task in [*self._tasks, *(c.task for c in self.channels.values())]:
            task.cancel()
        for task in [*self._tasks, *(c.task for c in self.channels.values())]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.channels.clear()
        self._principals.clear()

    # --- sockets -------------------------------------------------------------------------------

    def new_client(self, ward: str, view: View, sink: Sink, principal: Principal) -> Client:
        return Client(ward=ward, view=view, sink=sink, principal=principal, limit=self.queue_limit)

    async def join(self, client: Client) -> None:
        """Register a socket before its first frame is read, so no news falls between the two."""
        lock = self._joining.setdefault(client.ward, asyncio.Lock())
        async with lock:
            channel = self.channels.get(client.ward)
            if channel is None:
                await self.broker.follow(client.ward)
                board = await self.repo.board(client.ward)
                channel = WardChannel(self, client.ward, board.seq, board.ward.public_alerts)
                self.channels[client.ward] = channel
            channel.clients[client.view].add(client)
            self._principals.setdefault(client.principal, set()).add(client)
        METRICS.sockets.inc()

    async def leave(self, client: Client) -> None:
        METRICS.sockets.dec()
        sockets = self._principals.get(client.principal)
        if sockets is not None:
            sockets.discard(client)
            if not sockets:
                del self._principals[client.principal]
        lock = self._joining.setdefault(client.ward, asyncio.Lock())
        async with lock:
            channel = self.channels.get(client.ward)
            if channel is None:
                return
            channel.clients[client.view].discard(client)
            if channel.empty():
                del self.channels[client.ward]
                channel.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await channel.task
                with contextlib.suppress(Exception):
                    await self.broker.unfollow(client.ward)

    def snapshot_at(self, ward: str, view: str, at: tuple[int, int]) -> str | None:
        """The snapshot text last built of the ward for `view`, if it was at (seq, layout version) `at`."""
        hit = self._snapshots.get((ward, view))
        return hit[1] if hit is not None and hit[0] == at else None

    def remember_snapshot(self, ward: str, view: str, at: tuple[int, int], text: str) -> None:
        if len(self._snapshots) > 4 * 1024:
            self._snapshots.clear()
        self._snapshots[(ward, view)] = (at, text)

    def public_alerts(self, ward: str) -> frozenset[str]:
        channel = self.channels.get(ward)
        return channel.public_alerts if channel else DEFAULT_PUBLIC_ALERTS

    async def pump(self, client: Client, initial: list[tuple[int, str]], start_seq: int) -> None:
        """The socket's writer: its first frames, then its queue, never leaving a gap in seq.

        Returns once the socket has ended. `Client.end`, called from any task, interrupts it
        wherever it waits (asyncio.timeout is asyncio's cancellation scope: the end expires
        it at once), so a socket whose transport is full is closed without sending more.
        `initial` is emptied as it is sent: a snapshot can be ~20 KB of text, and nothing
        should hold it for the rest of the socket's life.
        """
        if client.ended:
            return
        interrupt = asyncio.timeout(None)
        try:
            async with interrupt:
                client._interrupt = interrupt
                while initial:
                    await client.sink.send_text(initial.pop(0)[1])
                client.last_seq = start_seq
                while not client.ended:
                    if not client.queue:
                        await client.news()
                        continue
                    # Pop from the front of a list: the queue is at most `limit` (256) long and
                    # nearly always one frame deep, so this costs less than a deque would hold.
                    kind, seq, text = client.queue.pop(0)
                    if kind == "heartbeat":
                        if seq < client.last_seq:
                            text = heartbeat(client.ward, client.last_seq)
                        await client.sink.send_text(text)
                        continue
                    if seq <= client.last_seq:
                        continue
                    if seq > client.last_seq + 1:
                        await self._repair(client, seq)
                    await client.sink.send_text(text)
                    client.last_seq = seq
        except TimeoutError:
            if not interrupt.expired():
                raise  # not our interruption: a timeout from below
        finally:
            client._interrupt = None

    async def _repair(self, client: Client, upto: int) -> None:
        missing = await self.repo.events_since(client.ward, client.last_seq, limit=upto, until=upto - 1)
        alerts = self.public_alerts(client.ward)
        for record in missing:
            await client.sink.send_text(render(record, client.view, alerts))
            client.last_seq = record.seq
        if client.last_seq != upto - 1:
            raise RuntimeError(
                f"ward {client.ward}: events {client.last_seq + 1}..{upto - 1} missing from the log"
            )

    # --- news ----------------------------------------------------------------------------------

    def _on_news(self, ward: str, data: bytes) -> None:
        channel = self.channels.get(ward)
        if channel is not None:
            channel.inbox.put_nowait(decode_event(data))

    def _on_reconnected(self) -> None:
        for channel in self.channels.values():
            channel.inbox.put_nowait(None)

    def _on_control(self, message: dict[str, Any]) -> None:
        kind, name = message.get("kind"), message.get("name")
        for principal, sockets in self._principals.items():
            if principal.kind == kind and principal.name == name:
                for client in sockets:
                    client.end(CLOSE_POLICY, f"{kind} {name} no longer allowed")

    async def _catch_up(self) -> None:
        """Nudge each ward still behind the seq the store had one tick ago.

        Comparing with the previous tick, not this one, leaves news that is merely in flight
        (committed, its publish on the way) to arrive through the broker, rather than reading
        the log for it on every tick of a busy ward; news that was lost is still read from the
        log within two ticks of its commit.
        """
        if not self.channels:
            self._store_seqs = {}
            return
        seqs = await self.repo.ward_seqs(list(self.channels))
        for ward, seq in seqs.items():
            channel = self.channels.get(ward)
            if channel is None or not channel.inbox.empty():
                continue
            if channel.last_seq < min(seq, self._store_seqs.get(ward, 0)):
                channel.inbox.put_nowait(None)
        self._store_seqs = seqs

    async def _end_revoked(self) -> None:
        """Close (1008) the sockets of tokens revoked, users disabled, sessions signed out or
        expired, and displays revoked since they connected — by any process or the CLI, so it
        is read from the store, not the broker."""
        if not self._principals:
            return
        gone = await accounts.revoked(self.repo.reader, list(self._principals), self.session_limits)
        # Sockets that joined while the store was asked are closed too: a principal found gone
        # never comes back (a re-enabled user signs in to a new session).
        for principal in gone:
            for client in list(self._principals.get(principal, ())):
                client.end(CLOSE_POLICY, f"{principal.kind} {principal.name} no longer allowed")

    async def _beat(self) -> None:
        """Beat the wards of this slice; every ward beats once per heartbeat period."""
        for channel in list(self.channels.values()):
            if channel.heartbeat_slice == self._heartbeat_slice:
                channel.beat()
        self._heartbeat_slice = (self._heartbeat_slice + 1) % HEARTBEAT_SLICES

    async def _every(self, seconds: float, job: Any) -> None:
        failing = False
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception:
                if not failing:  # say it once, not every tick
                    log.exception("hub: %s failed; retrying every %.1f s", job.__name__, seconds)
                failing = True
