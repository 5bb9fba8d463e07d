"""uvicorn's websockets-sansio protocol, holding less for each idle socket.

A process keeps thousands of sockets open for hours, nearly all idle, and most of what each
one costs is uvicorn's protocol object (bench/tools/memory_per_socket.py). Three things in it
are kept for the socket's whole life and are not needed for it:

- its receive queue, an `asyncio.Queue`: four deques and an Event (~3 KiB), to hand the app
  one message at a time (clients send only pings; a data message ends the socket);
- its `writable` flag, an `asyncio.Event` (a deque, ~0.7 KiB);
- the handshake: the parsed request and the 101 response, with their headers (~2 KiB; the
  request is also held by the parser generator of `websockets`, so its headers are emptied
  in place rather than only dropped).

Measured with bench/tools/idle_rss.py against the same tree with uvicorn's own protocol
(medians of 3-4 interleaved runs, bench/results/experiments/idle_rss-*.json): RSS per idle
socket 25.2 -> 16.9 KiB at 1,000 sockets, 24.9 -> 15.2 KiB at 2,500 (this one with the
endpoint's scope headers, whiteboard/routes/ws.py), and no change in CPU per frame sent
beyond the machine's noise. It reads uvicorn's attributes by name; if a uvicorn
release renames them, tests/unit/test_wsprotocol.py fails.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.protocol import State


async def _woken(waiters: list[asyncio.Future[None]]) -> None:
    """Wait until `_wake(waiters)`; a cancelled wait leaves nothing behind in `waiters`."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiters.append(waiter)
    try:
        await waiter
    finally:
        if waiter in waiters:
            waiters.remove(waiter)


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
    waiters.clear()


class Inbox:
    """The protocol's receive queue: `put_nowait`, `get` and `empty`, no deques and no Event."""

    __slots__ = ("_items", "_waiters")

    def __init__(self) -> None:
        self._items: list[ASGIReceiveEvent] = []
        self._waiters: list[asyncio.Future[None]] = []

    def put_nowait(self, item: ASGIReceiveEvent) -> None:
        self._items.append(item)
        _wake(self._waiters)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    async def get(self) -> ASGIReceiveEvent:
        while not self._items:
            await _woken(self._waiters)
        return self._items.pop(0)


class Gate:
    """The protocol's `writable` flag: `set`, `clear`, `is_set` and `wait`, as asyncio.Event."""

    __slots__ = ("_open", "_waiters")

    def __init__(self) -> None:
        self._open = True
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        self._open = True
        _wake(self._waiters)

    def clear(self) -> None:
        self._open = False

    async def wait(self) -> bool:
        while not self._open:
            await _woken(self._waiters)
        return True


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """`ws="websockets-sansio"`, less its per-socket queue, Event and handshake objects."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Gate()  # type: ignore[assignment]

    async def send(self, message: ASGISendEvent) -> None:
        accepting = not self.handshake_complete and message["type"] == "websocket.accept"
        await super().send(message)
        if accepting and self.handshake_complete:
            # Read by uvicorn only until the 101 is sent. `websockets` keeps the request in its
            # parser generator for the socket's life, hence the headers emptied in place.
            self.request.headers.clear()
            del self.request, self.response

    def write_now(self, frame: bytes) -> bool:
        """Write a whole encoded text frame straight to the transport, if the socket is open,
        has no extension (a frame encoded once for many sockets must not need one) and its
        transport is not asking us to wait; else write nothing and say so.

        This is what `send` does for a text message, without the await: the hub writes a
        ward's change to each idle socket from one loop (whiteboard/fanout/hub.py).
        """
        if (
            self.close_sent
            or self.disconnected
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
            or self.conn.extensions
            or self.transport.is_closing()
        ):
            return False
        try:
            self.transport.write(frame)
        except Exception:  # a transport gone wrong: the writer, sending the frame itself, ends the socket
            return False
        return True
