"""A bare fanout server: the near-physical limit the whiteboard's fanout is compared with.

No database, no authentication, no per-socket queues: sockets join a ward by their path
(`/ws/wards/{ward}`, the same as the whiteboard's), get a small snapshot frame, then every
trigger for their ward as one `change` frame of about --frame-bytes of JSON, and a heartbeat
per ward every --heartbeat seconds. Triggers arrive over one persistent control WebSocket
(`/control`, text messages `{"ward": W, "seq": N}`; the load generator numbers them), so
the trigger costs next to nothing and the figure is the fanout alone.

Two implementations, the same frames:
- `websockets`: the `websockets` library's asyncio server and `websockets.broadcast`
  (synchronous writes to every socket's transport, no task per socket).
- `starlette`: Starlette under uvicorn with the whiteboard's own socket settings
  (websockets-sansio, no compression, pings every 10 s), a plain `await send_text` loop.

Run: .venv/bin/python bench/reference/server.py --impl websockets --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import orjson


def now_z() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Board:
    """Per-ward socket sets and seqs; renders frames once per trigger."""

    def __init__(self, frame_bytes: int) -> None:
        self.frame_bytes = frame_bytes
        self.wards: dict[str, set[Any]] = {}
        self.seqs: dict[str, int] = {}

    def change(self, ward: str, seq: int) -> str:
        self.seqs[ward] = seq
        frame: dict[str, Any] = {
            "type": "change",
            "ward": ward,
            "seq": seq,
            "at": now_z(),
            "bed": {"code": f"{ward}-B1-1", "state": "occupied", "version": seq, "pad": ""},
        }
        size = len(orjson.dumps(frame))
        frame["bed"]["pad"] = "x" * max(0, self.frame_bytes - size)
        return orjson.dumps(frame).decode()

    def snapshot(self, ward: str) -> str:
        seq = self.seqs.get(ward, 0)
        return orjson.dumps(
            {"type": "snapshot", "ward": ward, "seq": seq, "view": "clinical", "beds": []}
        ).decode()

    def heartbeat(self, ward: str) -> str:
        return orjson.dumps(
            {"type": "heartbeat", "ward": ward, "seq": self.seqs.get(ward, 0), "at": now_z()}
        ).decode()


def ward_of(path: str) -> str | None:
    parts = path.split("?", 1)[0].strip("/").split("/")
    if len(parts) == 3 and parts[:2] == ["ws", "wards"]:
        return parts[2]
    return None


# --- websockets ----------------------------------------------------------------------------------


async def run_websockets(host: str, port: int, board: Board, heartbeat: float) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve
    from websockets.datastructures import Headers
    from websockets.http11 import Request, Response

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            return connection.respond(200, "ok\n")
        if request.path != "/control" and ward_of(request.path) is None:
            return Response(404, "Not Found", Headers(), b"")
        return None

    async def handler(ws: ServerConnection) -> None:
        path = ws.request.path if ws.request else ""
        if path == "/control":
            async for message in ws:
                m = orjson.loads(message)
                ward = m["ward"]
                broadcast(board.wards.get(ward, ()), board.change(ward, int(m["seq"])))
            return
        ward = ward_of(path)
        assert ward is not None
        group = board.wards.setdefault(ward, set())
        group.add(ws)
        try:
            await ws.send(board.snapshot(ward))
            await ws.wait_closed()
        finally:
            group.discard(ws)

    async def beat() -> None:
        while True:
            await asyncio.sleep(heartbeat)
            for ward, group in list(board.wards.items()):
                broadcast(group, board.heartbeat(ward))

    async with serve(
        handler,
        host,
        port,
        process_request=process_request,
        compression=None,
        ping_interval=10,
        ping_timeout=20,
        max_size=64 * 1024,
        backlog=4096,
    ) as server:
        task = asyncio.create_task(beat())
        try:
            await server.serve_forever()
        finally:
            task.cancel()


# --- starlette + uvicorn ----------------------------------------------------------------------------


def run_starlette(host: str, port: int, board: Board, heartbeat: float) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    async def send_all(group: set[WebSocket], text: str) -> None:
        for ws in list(group):
            try:
                await ws.send_text(text)
            except Exception:
                group.discard(ws)

    async def ward_socket(websocket: WebSocket) -> None:
        ward = websocket.path_params["ward"]
        await websocket.accept()
        group = board.wards.setdefault(ward, set())
        group.add(websocket)
        try:
            await websocket.send_text(board.snapshot(ward))
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        finally:
            group.discard(websocket)

    async def control(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            m = orjson.loads(message.get("text") or message.get("bytes") or b"{}")
            ward = m["ward"]
            await send_all(board.wards.get(ward, set()), board.change(ward, int(m["seq"])))

    async def healthz(_request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    async def beat() -> None:
        while True:
            await asyncio.sleep(heartbeat)
            for ward, group in list(board.wards.items()):
                await send_all(group, board.heartbeat(ward))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(beat())
        yield
        task.cancel()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            WebSocketRoute("/control", control),
            WebSocketRoute("/ws/wards/{ward}", ward_socket),
        ],
        lifespan=lifespan,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        ws="websockets-sansio",
        ws_max_size=64 * 1024,
        ws_ping_interval=10.0,
        ws_ping_timeout=20.0,
        ws_per_message_deflate=False,
        lifespan="on",
        log_level="warning",
        backlog=4096,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=["websockets", "starlette"], default="websockets")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--frame-bytes", type=int, default=512)
    parser.add_argument("--heartbeat", type=float, default=5.0)
    args = parser.parse_args()
    board = Board(args.frame_bytes)
    if args.impl == "websockets":
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_websockets(args.host, args.port, board, args.heartbeat))
    else:
        run_starlette(args.host, args.port, board, args.heartbeat)


if __name__ == "__main__":
    main()
