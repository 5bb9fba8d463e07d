"""The Redis broker's publisher against a real Redis: news queued together leaves together.

One publish a round trip fell behind at a few hundred changes a second on a busy process, and
news late by more than a catch-up tick was read again from the event log by every process.
The multi-process claims (fanout, Redis killed, writers killed) are in test_cluster.py."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from tests.helpers import timeout, wait_until
from whiteboard.fanout.redis import BATCH_LIMIT, RedisBroker


@pytest.fixture
async def broker(redis_url: str) -> AsyncIterator[tuple[RedisBroker, list[tuple[str, bytes]], list[int]]]:
    """A started broker following two wards, with what it heard and the size of each send."""
    broker = RedisBroker(redis_url, prefix=f"test-{secrets.token_hex(4)}")
    heard: list[tuple[str, bytes]] = []
    broker.bind(lambda ward, data: heard.append((ward, data)), lambda _message: None, lambda: None)
    await broker.follow("W01")
    await broker.follow("W02")
    sends: list[int] = []
    send = broker._send

    async def counted(batch: list[tuple[str, bytes]]) -> None:
        sends.append(len(batch))
        await send(batch)

    broker._send = counted  # type: ignore[method-assign]
    await broker.start()
    try:
        await wait_until(lambda: broker.status()["up"], timeout(5))
        yield broker, heard, sends
    finally:
        await broker.stop()


async def test_news_queued_together_goes_in_one_round_trip_and_arrives_in_order(
    broker: tuple[RedisBroker, list[tuple[str, bytes]], list[int]],
) -> None:
    publisher, heard, sends = broker
    for n in range(300):  # queued without a pause, as a burst of commits queues it
        await publisher.publish("W01" if n % 2 else "W02", str(n).encode())
    await wait_until(lambda: len(heard) == 300, timeout(5))
    assert [int(data) for _ward, data in heard] == list(range(300))
    assert [ward for ward, _data in heard[:2]] == ["W02", "W01"]
    assert sends == [300]


async def test_a_longer_queue_goes_in_batches_in_order(
    broker: tuple[RedisBroker, list[tuple[str, bytes]], list[int]],
) -> None:
    publisher, heard, sends = broker
    total = BATCH_LIMIT * 2 + 7
    for n in range(total):
        await publisher.publish("W01", str(n).encode())
    await wait_until(lambda: len(heard) == total, timeout(10))
    assert [int(data) for _ward, data in heard] == list(range(total))
    assert sends == [BATCH_LIMIT, BATCH_LIMIT, 7]


async def test_news_one_at_a_time_is_sent_one_at_a_time(
    broker: tuple[RedisBroker, list[tuple[str, bytes]], list[int]],
) -> None:
    publisher, heard, sends = broker
    for n in range(3):
        await publisher.publish("W01", str(n).encode())
        await wait_until(lambda n=n: len(heard) == n + 1, timeout(5))
    assert sends == [1, 1, 1] and [int(d) for _w, d in heard] == [0, 1, 2]
