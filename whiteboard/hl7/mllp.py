"""MLLP over TCP: an asyncio listener that hands each message to a handler and frames its ACK.

Framing is ``<VT> message <FS><CR>`` (0x0B ... 0x1C 0x0D) both ways. A connection carries
any number of messages, handled one after another in the order they arrived, each answered
with exactly one ACK. Bytes outside a block are ignored; a start byte inside a block means
the sender gave up on that block and starts again. A block over `max_message` bytes is
counted, never buffered whole, and answered AR; the connection stays usable. A connection
silent for `idle_timeout` seconds is closed, and so is every connection within half a second
of the server closing. The handler's exceptions are logged and answered AE.

`MllpFramer` is the sans-I/O part (bytes in, blocks out); python-hl7's `hl7.mllp` reader is
not used because it buffers a block whole before checking its size, loses sync after an
over-size block and refuses bytes between blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from whiteboard.hl7.ack import build_ack
from whiteboard.hl7.parse import read_header

__all__ = ["Block", "MllpFramer", "frame", "send_mllp", "start_mllp_server"]

logger = logging.getLogger(__name__)

START_BLOCK: Final = b"\x0b"
END_BLOCK: Final = b"\x1c\r"
_FS: Final = 0x1C
_CR: Final = 0x0D
#: How much of an over-size block is kept to read its MSH for the ACK.
HEAD_BYTES: Final = 8192
_READ_CHUNK: Final = 1 << 16
#: How often a waiting connection checks that its server is still serving.
_POLL_SECONDS: Final = 0.5

Handler = Callable[[bytes], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Block:
    """One framed message: its bytes, or only the first `HEAD_BYTES` when `oversize`."""

    data: bytes
    size: int
    oversize: bool


class MllpFramer:
    """Sans-I/O MLLP de-framing: `feed` bytes as they arrive, get the blocks they complete."""

    def __init__(self, max_message: int = 1 << 20) -> None:
        self.max_message = max_message
        self._in_block = False
        self._buffer = bytearray()
        self._head = b""
        self._size = 0
        self._oversize = False
        self._pending_fs = False

    @property
    def in_block(self) -> bool:
        """Whether a block has started and not yet ended."""
        return self._in_block

    def _begin(self) -> None:
        self._in_block = True
        self._buffer = bytearray()
        self._head = b""
        self._size = 0
        self._oversize = False

    def _add(self, data: bytes | memoryview) -> None:
        self._size += len(data)
        if self._oversize:
            return
        if self._size > self.max_message:
            self._oversize = True
            keep = HEAD_BYTES - len(self._buffer)
            self._head = bytes(self._buffer[:HEAD_BYTES]) + bytes(data[: max(keep, 0)])
            self._buffer = bytearray()
        else:
            self._buffer += data

    def _finish(self) -> Block:
        self._in_block = False
        data = self._head if self._oversize else bytes(self._buffer)
        self._buffer = bytearray()
        return Block(data=data, size=self._size, oversize=self._oversize)

    def feed(self, data: bytes) -> list[Block]:
        blocks: list[Block] = []
        view = memoryview(data)
        pos, end = 0, len(data)
        if self._pending_fs and end:
            self._pending_fs = False
            if data[0] == _CR:
                blocks.append(self._finish())
                pos = 1
            else:
                self._add(b"\x1c")
        while pos < end:
            if not self._in_block:
                start = data.find(START_BLOCK, pos)
                if start < 0:
                    break  # bytes outside a block are ignored
                self._begin()
                pos = start + 1
                continue
            fs = data.find(b"\x1c", pos)
            restart = data.find(START_BLOCK, pos, end if fs < 0 else fs)
            if restart >= 0:  # a new block before this one ended: the sender abandoned it
                self._begin()
                pos = restart + 1
                continue
            if fs < 0:
                self._add(view[pos:])
                break
            self._add(view[pos:fs])
            if fs + 1 == end:
                self._pending_fs = True
                break
            if data[fs + 1] == _CR:
                blocks.append(self._finish())
                pos = fs + 2
            else:  # a lone FS is data
                self._add(b"\x1c")
                pos = fs + 1
        return blocks


def frame(message: bytes | str) -> bytes:
    """`message` framed for MLLP (str is sent as UTF-8)."""
    data = message.encode("utf-8") if isinstance(message, str) else message
    return START_BLOCK + data + END_BLOCK


def _size(limit: int) -> str:
    if limit % (1 << 20) == 0:
        return f"{limit >> 20} MiB"
    if limit % 1024 == 0:
        return f"{limit >> 10} KiB"
    return f"{limit} bytes"


async def _answer(handler: Handler, block: Block, max_message: int) -> str:
    if block.oversize:
        message, control_id = read_header(block.data)
        logger.warning("MLLP message %r refused: %d bytes is over the limit", control_id, block.size)
        return build_ack(
            "AR", message=message, control_id=control_id, reason=f"message larger than {_size(max_message)}"
        )
    try:
        return await handler(block.data)
    except Exception:
        message, control_id = read_header(block.data)
        logger.exception("MLLP handler failed on message %r", control_id)
        return build_ack("AE", message=message, control_id=control_id, reason="internal error")


async def _serve_connection(
    handler: Handler,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    max_message: int,
    idle_timeout: float,
    serving: Callable[[], bool],
) -> None:
    loop = asyncio.get_running_loop()
    peer = writer.get_extra_info("peername")
    framer = MllpFramer(max_message)
    last_activity = loop.time()
    try:
        while serving():
            remaining = idle_timeout - (loop.time() - last_activity)
            if remaining <= 0:
                logger.info("MLLP connection from %s idle for %.0f s: closing", peer, idle_timeout)
                break
            try:
                async with asyncio.timeout(min(remaining, _POLL_SECONDS)):
                    chunk = await reader.read(_READ_CHUNK)
            except TimeoutError:
                continue
            if not chunk:
                break
            for block in framer.feed(chunk):
                ack = await _answer(handler, block, max_message)
                writer.write(frame(ack.encode("utf-8", errors="replace")))
                if writer.transport.get_write_buffer_size():  # only a sender not reading ACKs
                    async with asyncio.timeout(idle_timeout):
                        await writer.drain()
            last_activity = loop.time()
    except (ConnectionError, TimeoutError) as exc:
        logger.info("MLLP connection from %s ended: %r", peer, exc)
    finally:
        if framer.in_block:
            logger.info("MLLP connection from %s closed in the middle of a message", peer)
        writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()


async def start_mllp_server(
    handler: Handler,
    host: str,
    port: int,
    *,
    max_message: int = 1 << 20,
    idle_timeout: float = 300.0,
) -> asyncio.Server:
    """Listen for MLLP on host:port (0: any free port; read it from ``server.sockets``).

    `handler` gets each message's bytes (unframed) and returns the ACK text. Close the
    server as usual (``server.close(); await server.wait_closed()``); open connections
    notice within half a second.
    """
    servers: list[asyncio.Server] = []

    def serving() -> bool:
        return not servers or servers[0].is_serving()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_connection(
            handler, reader, writer, max_message=max_message, idle_timeout=idle_timeout, serving=serving
        )

    server = await asyncio.start_server(connected, host, port)
    servers.append(server)
    return server


async def send_mllp(
    host: str, port: int, messages: Sequence[bytes | str], *, ack_timeout: float = 30.0
) -> list[str]:
    """Send `messages` over one connection, each after the previous one's ACK; return the ACKs.

    Raises ConnectionError when the server closes before answering, TimeoutError when an
    ACK takes longer than `ack_timeout` seconds.
    """
    reader, writer = await asyncio.open_connection(host, port)
    acks: list[str] = []
    try:
        for message in messages:
            writer.write(frame(message))
            async with asyncio.timeout(ack_timeout):
                await writer.drain()
                try:
                    data = await reader.readuntil(END_BLOCK)
                except asyncio.IncompleteReadError as exc:
                    raise ConnectionError("the MLLP server closed the connection before the ACK") from exc
            start = data.find(START_BLOCK)
            acks.append(data[start + 1 : -len(END_BLOCK)].decode("utf-8", errors="replace"))
        return acks
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
