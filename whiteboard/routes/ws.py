"""The live socket, /ws/wards/{ward} (DESIGN 4.3).

Refusals happen at the handshake as HTTP statuses, in the contract's order: 401 credentials,
403 Origin, 400 view/since, 403 ward or view not allowed, 404 unknown ward. Once accepted, the
socket gets a snapshot (or the missed changes after `since`), then live changes and heartbeats
from the hub. Clients send nothing but pings: any data message closes the socket with 1008
(over 64 KiB the server closes it with 1009 before we see it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any

import orjson
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.utils import ClientDisconnected

from whiteboard.board.views import VIEWS, View, snapshot
from whiteboard.errors import BadRequest, Forbidden, NotFound, Unauthenticated, WhiteboardError
from whiteboard.fanout.hub import CLOSE_INTERNAL, CLOSE_POLICY, Client, Hub, heartbeat, render
from whiteboard.routes.api import may_read_ward
from whiteboard.routes.auth import Caller, identify
from whiteboard.routes.origin import origin_allowed
from whiteboard.wsprotocol import LeanWebSocketProtocol

log = logging.getLogger("whiteboard.ws")

REPLAY_LIMIT = 1000


class StarletteSink:
    """The hub's end of a socket: Starlette's WebSocket, and uvicorn's protocol for frames
    written at once (when the server runs `LeanWebSocketProtocol`, as `whiteboard serve` does;
    under any other server every frame goes through ASGI `send`)."""

    __slots__ = ("protocol", "websocket")

    def __init__(self, websocket: WebSocket, send: Send) -> None:
        self.websocket = websocket
        owner = getattr(send, "__self__", None)
        self.protocol = owner if isinstance(owner, LeanWebSocketProtocol) else None

    async def send_text(self, data: str) -> None:
        await self.websocket.send({"type": "websocket.send", "text": data})

    def write_now(self, frame: bytes) -> bool:
        return self.protocol is not None and self.protocol.write_now(frame)

    async def close(self, code: int, reason: str = "") -> None:
        with contextlib.suppress(Exception):
            await self.websocket.close(code, reason)


async def _refuse(websocket: WebSocket, error: WhiteboardError) -> None:
    response = Response(
        orjson.dumps(error.to_json()), status_code=error.http_status, media_type="application/json"
    )
    await websocket.send_denial_response(response)


async def _handshake(conn: HTTPConnection) -> tuple[Caller, str, View, int | None]:
    state = conn.app.state
    caller = await identify(conn, state.cookies, state.reader)
    if caller is None:
        raise Unauthenticated("sign in, pair this display, or send Authorization: Bearer TOKEN")
    origin = conn.headers.get("origin")
    if origin is None:
        if caller.via != "bearer":
            raise Forbidden("an Origin header is required with cookie authentication")
    elif not origin_allowed(conn, origin, state.settings):
        raise Forbidden(f"origin {origin} is not allowed")
    default = "display" if caller.principal.role == "display" else "clinical"
    view = conn.query_params.get("view", default)
    if view not in VIEWS:
        raise BadRequest("view must be clinical or display")
    raw_since = conn.query_params.get("since")
    if raw_since is not None and (not raw_since.isdigit() or len(raw_since) > 15):
        raise BadRequest("since must be a whole number")
    ward = conn.path_params["ward"]
    if "\x00" in ward:
        raise BadRequest("the ward code holds a NUL character")
    may_read_ward(caller, ward, view)
    if not await state.service.repo.ward_exists(ward):
        raise NotFound(f"ward {ward} is not known")
    return caller, ward, view, None if raw_since is None else int(raw_since)  # type: ignore[return-value]


async def first_frames(
    hub: Hub, ward: str, view: View, since: int | None
) -> tuple[list[tuple[int, str]], int]:
    """What a socket is sent before live news: the missed changes when still held, else a snapshot."""
    repo = hub.repo
    alerts = hub.public_alerts(ward)
    # One read of where the ward is, for the replay and for the snapshot alike.
    latest, layout = await repo.ward_versions(ward) or (0, 0)
    if since is not None:
        oldest = await repo.oldest_seq(ward)
        held = since <= latest and (since == latest or (oldest is not None and oldest <= since + 1))
        if held and latest - since <= REPLAY_LIMIT:
            if since == latest:
                return [(since, heartbeat(ward, since))], since
            records = await repo.events_since(ward, since, limit=REPLAY_LIMIT, until=latest)
            if records and records[0].seq == since + 1:
                return [(r.seq, render(r, view, alerts)) for r in records], records[-1].seq
    # A ward's snapshot at a given (seq, layout version) never changes: sockets joining between
    # two changes (a reconnect storm after a restart, say) share one read and one serialisation.
    # A layout load moves the version on (new beds, new names) without an event.
    text = hub.snapshot_at(ward, view, (latest, layout))
    if text is not None:
        return [(latest, text)], latest
    board = await repo.board(ward)
    frame = {"type": "snapshot", "ward": ward, "seq": board.seq, "view": view, **_body(snapshot(board, view))}
    text = orjson.dumps(frame).decode()
    # Kept under the version read before the board: a board read at a later layout is only
    # ever newer than its key says, never older.
    hub.remember_snapshot(ward, view, (board.seq, layout), text)
    return [(board.seq, text)], board.seq


def _body(snap: dict[str, Any]) -> dict[str, Any]:
    return {"beds": snap["beds"], "unplaced": snap["unplaced"]}


class WardSocket:
    """The endpoint, as a plain ASGI app.

    A socket lives for hours and keeps its task's whole stack while it does, so the stack is
    kept short: the app sends sockets straight here (see `whiteboard.app.Whiteboard`), and a
    `func(websocket)` endpoint would add three coroutines and closures of Starlette's per
    socket. One task a socket runs the handshake, the first frames and then the writer
    (`Hub.pump`); a second only waits for what the client sends.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive=receive, send=send)
        try:
            # A connection object of its own for the handshake: the headers, query and cookies
            # it parses and keeps are garbage once it is done, not kept for the socket's life.
            caller, ward, view, since = await _handshake(HTTPConnection(scope))
        except WhiteboardError as exc:
            await _refuse(websocket, exc)
            return
        hub: Hub = websocket.app.state.hub
        await websocket.accept()
        # Read for the handshake only, yet the scope lives as long as the socket: ~1 KiB of each
        # idle socket with the bench's six short headers (bench/tools/idle_rss.py), more with a
        # browser's cookies and user agent.
        scope["headers"] = []
        client = hub.new_client(ward, view, StarletteSink(websocket, send), caller.principal)
        await hub.join(client)
        reader: asyncio.Future[Message] | None = None
        try:
            initial, start = await first_frames(hub, ward, view, since)
            reader = asyncio.ensure_future(receive())  # the ASGI receive: nothing more is kept
            reader.add_done_callback(functools.partial(_heard, client))
            try:
                await hub.pump(client, initial, start)  # until the socket ends, one way or another
            except (WebSocketDisconnect, ClientDisconnected):
                client.gone()
            except Exception as exc:
                log.error("ward %s socket failed: %r", ward, exc)
                client.end(CLOSE_INTERNAL, "server error; reconnect with since")
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
            await hub.leave(client)
            if client.close_code is not None:
                await client.sink.close(client.close_code, client.close_reason)


def _heard(client: Client, reader: asyncio.Future[Message]) -> None:
    """Clients send nothing: a data message is a policy violation; a close ends the socket."""
    if reader.cancelled():
        return
    exc = reader.exception()
    if exc is None:
        if reader.result()["type"] == "websocket.disconnect":
            client.gone()
        else:
            client.end(CLOSE_POLICY, "clients send nothing but pings")
    elif isinstance(exc, WebSocketDisconnect | ClientDisconnected):
        client.gone()
    else:
        log.error("ward %s socket failed: %r", client.ward, exc)
        client.end(CLOSE_INTERNAL, "server error; reconnect with since")


route = WebSocketRoute("/ws/wards/{ward}", WardSocket())
