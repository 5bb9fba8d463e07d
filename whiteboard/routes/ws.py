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
import logging
from typing import Any

import orjson
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.utils import ClientDisconnected

from whiteboard.board.views import VIEWS, View, snapshot
from whiteboard.errors import BadRequest, Forbidden, NotFound, Unauthenticated, WhiteboardError
from whiteboard.fanout.hub import CLOSE_POLICY, Client, Hub, heartbeat, render
from whiteboard.routes.api import may_read_ward
from whiteboard.routes.auth import Caller, identify
from whiteboard.routes.origin import origin_allowed

log = logging.getLogger("whiteboard.ws")

REPLAY_LIMIT = 1000


class StarletteSink:
    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    async def send_text(self, data: str) -> None:
        await self.websocket.send({"type": "websocket.send", "text": data})

    async def close(self, code: int, reason: str = "") -> None:
        with contextlib.suppress(Exception):
            await self.websocket.close(code, reason)


async def _refuse(websocket: WebSocket, error: WhiteboardError) -> None:
    response = Response(
        orjson.dumps(error.to_json()), status_code=error.http_status, media_type="application/json"
    )
    await websocket.send_denial_response(response)


async def _handshake(websocket: WebSocket) -> tuple[Caller, str, View, int | None]:
    state = websocket.app.state
    caller = await identify(websocket, state.cookies, state.reader)
    if caller is None:
        raise Unauthenticated("sign in, pair this display, or send Authorization: Bearer TOKEN")
    origin = websocket.headers.get("origin")
    if origin is None:
        if caller.via != "bearer":
            raise Forbidden("an Origin header is required with cookie authentication")
    elif not origin_allowed(websocket, origin, state.settings):
        raise Forbidden(f"origin {origin} is not allowed")
    default = "display" if caller.principal.role == "display" else "clinical"
    view = websocket.query_params.get("view", default)
    if view not in VIEWS:
        raise BadRequest("view must be clinical or display")
    raw_since = websocket.query_params.get("since")
    if raw_since is not None and (not raw_since.isdigit() or len(raw_since) > 15):
        raise BadRequest("since must be a whole number")
    ward = websocket.path_params["ward"]
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
    if since is not None:
        latest = (await repo.ward_seqs([ward])).get(ward, 0)
        oldest = await repo.oldest_seq(ward)
        held = since <= latest and (since == latest or (oldest is not None and oldest <= since + 1))
        if held and latest - since <= REPLAY_LIMIT:
            if since == latest:
                return [(since, heartbeat(ward, since))], since
            records = await repo.events_since(ward, since, limit=REPLAY_LIMIT, until=latest)
            if records and records[0].seq == since + 1:
                return [(r.seq, render(r, view, alerts)) for r in records], records[-1].seq
    # A ward's snapshot at a given seq never changes: sockets joining between two changes (a
    # reconnect storm after a restart, say) share one read and one serialisation.
    latest = (await repo.ward_seqs([ward])).get(ward, 0)
    text = hub.snapshot_at(ward, view, latest)
    if text is not None:
        return [(latest, text)], latest
    board = await repo.board(ward)
    frame = {"type": "snapshot", "ward": ward, "seq": board.seq, "view": view, **_body(snapshot(board, view))}
    text = orjson.dumps(frame).decode()
    hub.remember_snapshot(ward, view, board.seq, text)
    return [(board.seq, text)], board.seq


def _body(snap: dict[str, Any]) -> dict[str, Any]:
    return {"beds": snap["beds"], "unplaced": snap["unplaced"]}


async def ward_socket(websocket: WebSocket) -> None:
    try:
        caller, ward, view, since = await _handshake(websocket)
    except WhiteboardError as exc:
        await _refuse(websocket, exc)
        return
    hub: Hub = websocket.app.state.hub
    await websocket.accept()
    client = hub.new_client(ward, view, StarletteSink(websocket), caller.principal)
    await hub.join(client)
    tasks: list[asyncio.Task[Any]] = []

    def finished(task: asyncio.Task[Any]) -> None:
        # The writer or the reader stopped: that is the end of this socket, one way or another.
        if not task.cancelled() and task.exception() is not None:
            if not isinstance(task.exception(), WebSocketDisconnect | ClientDisconnected):
                log.error("ward %s socket failed: %r", ward, task.exception())
                client.end(1011, "server error; reconnect with since")
            else:
                client.end(1000, "")
                client.close_code = None
        client.end(1000, "")

    try:
        initial, start = await first_frames(hub, ward, view, since)
        # Two tasks a socket (the writer and the reader); this coroutine waits for the end.
        tasks = [
            asyncio.create_task(hub.pump(client, initial, start)),
            asyncio.create_task(_listen(websocket, client)),
        ]
        for task in tasks:
            task.add_done_callback(finished)
        await client.ended.wait()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await hub.leave(client)
        if client.close_code is not None:
            await client.sink.close(client.close_code, client.close_reason)


async def _listen(websocket: WebSocket, client: Client) -> None:
    """Clients send nothing: a data message is a policy violation; a close ends the socket."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        client.end(1000, "")
        client.close_code = None  # already closed by the client
        return
    client.end(CLOSE_POLICY, "clients send nothing but pings")


routes = [WebSocketRoute("/ws/wards/{ward}", ward_socket)]
