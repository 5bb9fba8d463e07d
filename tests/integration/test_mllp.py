"""The MLLP listener on a real socket: framing, ordering, size limit, garbage, idle and errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import hl7
import pytest

from tests import fixtures_hl7 as fx
from tests.helpers import timeout
from whiteboard.hl7.ack import accept_ack, ack_code_of, refusal_ack
from whiteboard.hl7.mllp import END_BLOCK, START_BLOCK, Block, MllpFramer, frame, send_mllp, start_mllp_server
from whiteboard.hl7.parse import Hl7Refused, parse_adt

MiB = 1 << 20


def msa(ack: str) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an ACK."""
    segment = hl7.parse(ack).segment("MSA")
    return str(segment(1)), str(segment(2)) if len(segment) > 2 else ""


def numbered(n: int, base: str = fx.ADT_A08) -> str:
    return fx.with_control_id(base, f"C{n:04d}")


class Recorder:
    """A handler that parses, answers AA/AE/AR, remembers what it saw, and fails on request."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.fail_on: set[str] = set()
        self.delay = 0.0

    async def __call__(self, raw: bytes) -> str:
        self.seen.append(raw)
        if self.delay:
            await asyncio.sleep(self.delay)
        try:
            adt = parse_adt(raw)
        except Hl7Refused as err:
            return refusal_ack(err)
        if adt.control_id in self.fail_on:
            raise RuntimeError(f"handler failure for {adt.control_id}")
        return accept_ack(adt)


Server = tuple[asyncio.Server, int, Recorder]
ServerFactory = Callable[..., Awaitable[Server]]


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    servers: list[asyncio.Server] = []

    async def make(**options: float) -> Server:
        recorder = Recorder()
        server = await start_mllp_server(recorder, "127.0.0.1", 0, **options)  # type: ignore[arg-type]
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return server, port, recorder

    yield make
    for server in servers:
        server.close()
        async with asyncio.timeout(timeout(5)):
            await server.wait_closed()


@pytest.fixture
async def server(make_server: ServerFactory) -> Server:
    return await make_server()


async def read_acks(reader: asyncio.StreamReader, count: int) -> list[str]:
    acks = []
    async with asyncio.timeout(timeout(10)):
        for _ in range(count):
            data = await reader.readuntil(END_BLOCK)
            assert data.startswith(START_BLOCK)
            acks.append(data[1:-2].decode())
    return acks


@contextlib.asynccontextmanager
async def connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# --------------------------------------------------------------------------------------------
# The listener


async def test_many_messages_on_one_connection_are_answered_in_order(server: Server) -> None:
    _, port, recorder = server
    messages = [numbered(n) for n in range(10)]
    acks = await send_mllp("127.0.0.1", port, messages)
    assert [msa(ack) for ack in acks] == [("AA", f"C{n:04d}") for n in range(10)]
    assert [raw.decode() for raw in recorder.seen] == messages


async def test_pipelined_messages_are_processed_in_order(server: Server) -> None:
    _, port, recorder = server
    recorder.delay = 0.01
    async with connection(port) as (reader, writer):
        writer.write(b"".join(frame(numbered(n)) for n in range(8)))
        await writer.drain()
        acks = await read_acks(reader, 8)
    assert [msa(ack)[1] for ack in acks] == [f"C{n:04d}" for n in range(8)]


async def test_every_fixture_over_mllp(server: Server) -> None:
    _, port, _ = server
    raws = [raw for raw, _, _ in fx.ALL_ADT.values()]
    acks = await send_mllp("127.0.0.1", port, raws)
    assert [ack_code_of(ack) for ack in acks] == ["AA"] * len(raws)


async def test_concurrent_connections(server: Server) -> None:
    _, port, recorder = server
    recorder.delay = 0.005

    async def client(c: int) -> list[str]:
        return await send_mllp("127.0.0.1", port, [numbered(c * 100 + n) for n in range(10)])

    async with asyncio.timeout(timeout(20)):
        results = await asyncio.gather(*(client(c) for c in range(8)))
    for c, acks in enumerate(results):
        assert [msa(ack) for ack in acks] == [("AA", f"C{c * 100 + n:04d}") for n in range(10)]
    assert len(recorder.seen) == 80


async def test_refused_message_gets_its_ack_and_does_not_block_the_next(server: Server) -> None:
    _, port, _ = server
    bad = fx.with_control_id(fx.ADT_A01.replace(fx.NHS_1, fx.NHS_BAD_CHECK), "BAD1")
    acks = await send_mllp("127.0.0.1", port, [b"not hl7 at all", bad, numbered(1)])
    assert [msa(ack) for ack in acks] == [("AR", ""), ("AE", "BAD1"), ("AA", "C0001")]


async def test_block_over_the_limit_is_refused_and_the_connection_stays_usable(server: Server) -> None:
    _, port, recorder = server
    head = fx.with_control_id(fx.ADT_A08, "BIG1") + "ZPD|"
    big = (head + "x" * (MiB + 1 - len(head))).encode()
    assert len(big) == MiB + 1
    exact = (head + "x" * (MiB - len(head))).encode()
    assert len(exact) == MiB
    acks = await send_mllp("127.0.0.1", port, [big, numbered(2), exact])
    assert msa(acks[0]) == ("AR", "BIG1")
    assert "message larger than 1 MiB" in acks[0]
    assert msa(acks[1]) == ("AA", "C0002")
    assert msa(acks[2]) == ("AA", "BIG1")  # exactly 1 MiB is within the limit
    assert [len(raw) for raw in recorder.seen] == [len(numbered(2)), MiB]


async def test_over_size_block_without_a_header_gets_an_empty_msa2(server: Server) -> None:
    _, port, _ = server
    acks = await send_mllp("127.0.0.1", port, [b"\x00" * (2 * MiB), numbered(3)])
    assert msa(acks[0]) == ("AR", "")
    assert msa(acks[1]) == ("AA", "C0003")


async def test_a_smaller_limit(make_server: ServerFactory) -> None:
    _, port, _ = await make_server(max_message=1000)
    acks = await send_mllp("127.0.0.1", port, [numbered(4) + "Z" * 1000, numbered(5)])
    assert msa(acks[0]) == ("AR", "C0004")
    assert "message larger than 1000 bytes" in acks[0]
    assert msa(acks[1]) == ("AA", "C0005")


async def test_bytes_outside_blocks_are_ignored(server: Server) -> None:
    _, port, _ = server
    async with connection(port) as (reader, writer):
        writer.write(
            b"hello\r\n" + frame(numbered(6)) + b"\x1c\r\r\njunk \x00\xff" + frame(numbered(7)) + b"\n"
        )
        await writer.drain()
        acks = await read_acks(reader, 2)
    assert [msa(ack) for ack in acks] == [("AA", "C0006"), ("AA", "C0007")]


async def test_a_message_split_into_tiny_writes(server: Server) -> None:
    _, port, _ = server
    data = frame(numbered(8)) + frame(numbered(9))
    async with connection(port) as (reader, writer):
        for i in range(0, len(data), 7):
            writer.write(data[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0)
        acks = await read_acks(reader, 2)
    assert [msa(ack)[1] for ack in acks] == ["C0008", "C0009"]


async def test_an_idle_connection_is_closed(make_server: ServerFactory) -> None:
    _, port, _ = await make_server(idle_timeout=0.3)
    async with connection(port) as (reader, writer):
        writer.write(frame(numbered(10)))
        await writer.drain()
        assert ack_code_of((await read_acks(reader, 1))[0]) == "AA"
        async with asyncio.timeout(timeout(3)):
            assert await reader.read() == b""  # EOF: the server closed it


async def test_a_busy_connection_is_not_idle(make_server: ServerFactory) -> None:
    _, port, _ = await make_server(idle_timeout=timeout(1.0))
    async with connection(port) as (reader, writer):
        for n in range(6):
            await asyncio.sleep(0.2)
            writer.write(frame(numbered(20 + n)))
            await writer.drain()
            assert ack_code_of((await read_acks(reader, 1))[0]) == "AA"


async def test_handler_exception_is_answered_and_the_connection_still_works(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    _, port, recorder = server
    recorder.fail_on = {"C0031"}
    with caplog.at_level(logging.ERROR, logger="whiteboard.hl7.mllp"):
        acks = await send_mllp("127.0.0.1", port, [numbered(30), numbered(31), numbered(32)])
    assert [msa(ack) for ack in acks] == [("AA", "C0030"), ("AE", "C0031"), ("AA", "C0032")]
    assert "internal error" in acks[1]
    assert "MLLP handler failed" in caplog.text
    assert "handler failure for C0031" in caplog.text


async def test_closing_the_server_closes_its_connections(make_server: ServerFactory) -> None:
    server, port, _ = await make_server()
    async with connection(port) as (reader, writer):
        writer.write(frame(numbered(40)))
        await writer.drain()
        await read_acks(reader, 1)
        server.close()
        async with asyncio.timeout(timeout(3)):
            await server.wait_closed()
            assert await reader.read() == b""


async def test_a_client_that_leaves_mid_message_does_not_disturb_others(server: Server) -> None:
    _, port, _ = server
    async with connection(port) as (_, writer):
        writer.write(START_BLOCK + numbered(41).encode()[:50])
        await writer.drain()
    acks = await send_mllp("127.0.0.1", port, [numbered(42)])
    assert msa(acks[0]) == ("AA", "C0042")


async def test_send_mllp_reports_a_server_that_hangs_up(make_server: ServerFactory) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    plain = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = plain.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ConnectionError):
            await send_mllp("127.0.0.1", port, [numbered(43)])
    finally:
        plain.close()
        await plain.wait_closed()


# --------------------------------------------------------------------------------------------
# The framer (sans-I/O)


def feed_all(framer: MllpFramer, *chunks: bytes) -> list[Block]:
    blocks: list[Block] = []
    for chunk in chunks:
        blocks += framer.feed(chunk)
    return blocks


def test_framer_end_block_split_across_chunks() -> None:
    framer = MllpFramer()
    assert feed_all(framer, b"\x0bMSH|a\x1c") == []
    assert framer.in_block
    assert feed_all(framer, b"\r") == [Block(b"MSH|a", 5, False)]
    assert not framer.in_block


def test_framer_lone_fs_is_data_and_a_new_start_abandons_a_block() -> None:
    framer = MllpFramer()
    assert feed_all(framer, b"\x0ba\x1cb\x1c\r") == [Block(b"a\x1cb", 3, False)]
    assert feed_all(framer, b"\x0bhalf", b"\x0bwhole\x1c\r") == [Block(b"whole", 5, False)]
    assert feed_all(framer, b"\x0bx\x1c", b"\x0by\x1c\r") == [Block(b"y", 1, False)]


def test_framer_counts_an_over_size_block_without_keeping_it() -> None:
    framer = MllpFramer(max_message=100)
    blocks = feed_all(framer, b"\x0b" + b"M" * 60, b"N" * 60, b"O" * 10_000, b"\x1c\r\x0bok\x1c\r")
    assert blocks == [Block(b"M" * 60 + b"N" * 60, 10_120, True), Block(b"ok", 2, False)]
    assert len(framer._buffer) == 0


def test_framer_exact_limit_is_not_over_size() -> None:
    framer = MllpFramer(max_message=4)
    assert feed_all(framer, b"\x0babcd\x1c\r\x0babcde\x1c\r") == [
        Block(b"abcd", 4, False),
        Block(b"abcde"[:5], 5, True),
    ]
