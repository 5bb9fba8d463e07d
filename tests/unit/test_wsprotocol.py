"""The lean WebSocket protocol: what uvicorn's does, holding less for each idle socket.

Against a real uvicorn with a tiny ASGI app and a real client: if uvicorn renames what the
subclass relies on (`queue`, `writable`, `request`, `response`), these fail."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers import timeout, wait_until
from whiteboard.fanout.hub import Outgoing
from whiteboard.wsprotocol import Gate, Inbox, LeanWebSocketProtocol

Seen = dict[str, Any]


def echo_app(seen: Seen) -> Any:
    """Accepts, echoes one text message, then closes with 4000 — noting what the protocol held."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        protocol = send.__self__
        seen["protocol"] = protocol
        assert (await receive())["type"] == "websocket.connect"
        seen["request"] = protocol.request
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": "echo " + message["text"]})
        await send({"type": "websocket.close", "code": 4000})
        seen["after close"] = await receive()

    return app


@contextlib.asynccontextmanager
async def serving(seen: Seen, make_app: Any = echo_app, deflate: bool = True) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        make_app(seen),
        ws=LeanWebSocketProtocol,
        ws_per_message_deflate=deflate,
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout(5))
        sock.close()


async def test_a_socket_works_and_lets_go_of_its_handshake_once_accepted() -> None:
    seen: Seen = {}
    big = {"X-Big": "x" * 1000}
    async with serving(seen) as port, connect(f"ws://127.0.0.1:{port}/", additional_headers=big) as ws:
        await asyncio.wait_for(ws.ping(), timeout(2))
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), timeout(2)) == "echo hello"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), timeout(2))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
    protocol = seen["protocol"]
    assert isinstance(protocol.queue, Inbox) and isinstance(protocol.writable, Gate)
    assert not hasattr(protocol, "request") and not hasattr(protocol, "response")
    # websockets' parser generator still holds the request: its headers are what it weighs.
    assert len(seen["request"].headers) == 0
    assert seen["after close"]["type"] == "websocket.disconnect"


async def test_the_inbox_hands_over_in_order_and_a_cancelled_get_loses_nothing() -> None:
    inbox = Inbox()
    first = asyncio.ensure_future(inbox.get())
    second = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    first.cancel()
    inbox.put_nowait({"type": "websocket.connect"})
    assert (await asyncio.wait_for(second, timeout(1)))["type"] == "websocket.connect"
    inbox.put_nowait({"type": "websocket.receive", "text": "a"})
    inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    assert not inbox.empty() and inbox.qsize() == 2
    assert (await inbox.get())["type"] == "websocket.receive"
    assert (await inbox.get())["type"] == "websocket.disconnect"
    assert inbox.empty()


async def test_the_gate_holds_writers_while_closed_and_lets_them_all_go_when_set() -> None:
    gate = Gate()
    assert gate.is_set() and await gate.wait()
    gate.clear()
    waiters = [asyncio.ensure_future(gate.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), timeout(1)) == [True, True]


def writing_at_once_app(seen: Seen) -> Any:
    """Accepts, then mixes frames written at once with ASGI sends; notes what write_now said
    while the transport asked to wait, after the server's close, and after the client's."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        protocol: LeanWebSocketProtocol = send.__self__
        await receive()
        seen["before accept"] = protocol.write_now(Outgoing("never").wire())
        await send({"type": "websocket.accept"})
        seen["one"] = protocol.write_now(Outgoing("one").wire())
        await send({"type": "websocket.send", "text": "two"})
        seen["three"] = protocol.write_now(Outgoing(BIG).wire())
        protocol.pause_writing()  # what the transport calls when its buffer is over the mark
        seen["while paused"] = protocol.write_now(Outgoing("never").wire())
        protocol.resume_writing()
        if scope["path"] == "/client-closes":
            seen["client closed"] = (await receive())["type"]
            seen["after the client's close"] = protocol.write_now(Outgoing("never").wire())
            return
        await send({"type": "websocket.close", "code": 4000})
        seen["after close"] = protocol.write_now(Outgoing("never").wire())

    return app


BIG = "three \N{HOSPITAL}" + "x" * 70_000  # over 64 KiB: a frame with a 64-bit length


async def test_frames_written_at_once_arrive_whole_and_in_order_with_those_sent() -> None:
    seen: Seen = {}
    async with (
        serving(seen, writing_at_once_app, deflate=False) as port,
        connect(f"ws://127.0.0.1:{port}/", compression=None) as ws,
    ):
        got = [await asyncio.wait_for(ws.recv(), timeout(2)) for _ in range(3)]
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), timeout(2))
    assert got == ["one", "two", BIG]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
    assert seen == {
        "before accept": False,
        "one": True,
        "three": True,
        "while paused": False,
        "after close": False,
    }


async def test_a_socket_with_compression_is_never_written_to_at_once() -> None:
    """A frame encoded once for many sockets is plain; one deflated per socket is not that frame."""
    seen: Seen = {}
    async with (
        serving(seen, writing_at_once_app, deflate=True) as port,
        connect(f"ws://127.0.0.1:{port}/") as ws,
    ):
        assert await asyncio.wait_for(ws.recv(), timeout(2)) == "two"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), timeout(2))
    assert not any(seen.values())


async def test_nothing_is_written_at_once_once_the_client_has_closed() -> None:
    seen: Seen = {}
    async with serving(seen, writing_at_once_app, deflate=False) as port:
        async with connect(f"ws://127.0.0.1:{port}/client-closes", compression=None) as ws:
            got = [await asyncio.wait_for(ws.recv(), timeout(2)) for _ in range(3)]
        await wait_until(lambda: "after the client's close" in seen, timeout(2))
    assert got == ["one", "two", BIG]
    assert seen["client closed"] == "websocket.disconnect"
    assert seen["after the client's close"] is False
