"""Fanout through Redis pub/sub: the trust-wide broker, one channel per ward.

Channels are name-spaced (`{prefix}:ward:{code}`, `{prefix}:control`) so deployments can share
a Redis. Each process subscribes only to wards it has sockets for.

Redis is news, never truth. `publish` only queues: a single publisher task sends, so a slow or
absent Redis never delays a write. It sends whatever is queued as one pipeline, one round trip
however many: one publish a round trip fell behind at a few hundred changes a second on a
busy process, and news late by over a tick is read again from the log by every process.

While Redis is down, news is dropped, not hoarded — every process repairs from the event log
by seq (the hub's catch-up loop), and when the connection returns the subscriber
re-subscribes and asks the hub to catch up at once. Outages and
recoveries are logged once each, not per attempt; reconnects back off from 0.1 s to 1 s so
fanout is back within about a second of Redis returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from whiteboard.fanout.base import Broker

log = logging.getLogger("whiteboard.redis")

BACKOFF_FIRST = 0.1
BACKOFF_CAP = 1.0
OUTBOX_LIMIT = 10_000
#: The most news sent in one pipeline.
BATCH_LIMIT = 500


class RedisBroker(Broker):
    name = "redis"

    def __init__(self, url: str, prefix: str = "whiteboard") -> None:
        super().__init__()
        self.url = url
        self.prefix = prefix
        self._followed: set[str] = set()
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(OUTBOX_LIMIT)
        self._tasks: list[asyncio.Task[None]] = []
        self._publisher: Redis | None = None
        self._pubsub: PubSub | None = None
        self._subscriber: Redis | None = None
        self._up = False
        self._since = time.time()
        self._wake = asyncio.Event()

    # --- names ---------------------------------------------------------------------------------

    def ward_channel(self, ward: str) -> str:
        return f"{self.prefix}:ward:{ward}"

    @property
    def control_channel(self) -> str:
        return f"{self.prefix}:control"

    def _client(self, *, single_connection: bool = False) -> Redis:
        # No retries inside redis-py: our loops own the retry policy, with their own backoff.
        return Redis.from_url(
            self.url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=1.0,
            socket_timeout=2.0,
            health_check_interval=5,
            single_connection_client=single_connection,
        )

    # --- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        # One connection, held: the publisher is one task sending one pipeline at a time, and a
        # pooled client checks a connection out for every publish (a lock, and a read on the
        # socket to see that it is clean).
        self._publisher = self._client(single_connection=True)
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="redis-publisher"),
            asyncio.create_task(self._subscribe_loop(), name="redis-subscriber"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_subscriber()
        if self._publisher is not None:
            with contextlib.suppress(Exception):
                await self._publisher.aclose()

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "up": self._up,
            "since": round(self._since, 3),
            "followed": len(self._followed),
        }

    def _mark(self, up: bool, why: str = "") -> None:
        if up != self._up:
            self._up, self._since = up, time.time()
            if up:
                log.warning("redis: connected; fanout between processes restored")
            else:
                log.warning(
                    "redis: unreachable (%s); processes catch up from the store until it returns", why
                )

    # --- publishing ----------------------------------------------------------------------------

    async def publish(self, ward: str, data: bytes) -> None:
        self._queue(self.ward_channel(ward), data)

    async def publish_control(self, message: dict[str, Any]) -> None:
        self._queue(self.control_channel, orjson.dumps(message))

    def _queue(self, channel: str, data: bytes) -> None:
        if self._outbox.full():
            # Only while Redis is away: drop the oldest news, the event log still has it.
            with contextlib.suppress(asyncio.QueueEmpty):
                self._outbox.get_nowait()
        self._outbox.put_nowait((channel, data))

    async def _publish_loop(self) -> None:
        assert self._publisher is not None
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < BATCH_LIMIT and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            try:
                await self._send(batch)
            except (RedisError, OSError) as exc:
                self._mark(False, type(exc).__name__)
                self._drain_outbox()  # stale news would only be duplicates once the log is read

    async def _send(self, batch: list[tuple[str, bytes]]) -> None:
        """Publish in order, in one round trip (a pipeline, not a transaction)."""
        assert self._publisher is not None
        if len(batch) == 1:
            await self._publisher.publish(*batch[0])
            return
        async with self._publisher.pipeline(transaction=False) as pipe:
            for channel, data in batch:
                pipe.publish(channel, data)
            await pipe.execute()

    def _drain_outbox(self) -> None:
        while not self._outbox.empty():
            self._outbox.get_nowait()

    # --- subscribing ---------------------------------------------------------------------------

    async def follow(self, ward: str) -> None:
        if ward in self._followed:
            return
        self._followed.add(ward)
        if self._pubsub is not None and self._up:
            try:
                await self._pubsub.subscribe(self.ward_channel(ward))
            except (RedisError, OSError) as exc:
                self._mark(False, type(exc).__name__)
                self._wake.set()

    async def unfollow(self, ward: str) -> None:
        self._followed.discard(ward)
        if self._pubsub is not None and self._up:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(self.ward_channel(ward))

    async def _subscribe_loop(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                await self._connect_subscriber()
                delay = BACKOFF_FIRST
                await self._read_messages()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._mark(False, type(exc).__name__)
            await self._close_subscriber()
            # Jittered backoff, so many processes do not reconnect in lockstep; never over the
            # cap, so fanout is back within about a second of Redis returning.
            await asyncio.sleep(min(BACKOFF_CAP, delay * random.uniform(0.5, 1.5)))
            delay = min(delay * 2, BACKOFF_CAP)

    async def _connect_subscriber(self) -> None:
        self._subscriber = self._client()
        self._pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.control_channel, *(self.ward_channel(w) for w in self._followed))
        assert self._publisher is not None
        # The publisher's pooled connections may predate the outage: drop them rather than
        # spend the first publish (and this reconnect) finding out they are dead.
        await self._publisher.connection_pool.disconnect()
        await self._publisher.ping()
        self._mark(True)
        # News may have been lost while we were away: every channel reads the log now.
        self._reconnected()

    async def _read_messages(self) -> None:
        assert self._pubsub is not None
        prefix = f"{self.prefix}:ward:".encode()
        while True:
            self._wake.clear()
            message = await self._pubsub.get_message(timeout=1.0)
            if self._wake.is_set():
                raise ConnectionError("a subscribe failed; reconnecting")
            if message is None or message.get("type") != "message":
                continue
            channel: bytes = message["channel"]
            data: bytes = message["data"]
            if channel.startswith(prefix):
                self._deliver(channel[len(prefix) :].decode(), data)
            elif channel.decode() == self.control_channel:
                with contextlib.suppress(orjson.JSONDecodeError):
                    self._control(orjson.loads(data))

    async def _close_subscriber(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        if self._subscriber is not None:
            with contextlib.suppress(Exception):
                await self._subscriber.aclose()
        self._pubsub = self._subscriber = None
