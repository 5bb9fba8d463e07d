"""Running the app under uvicorn, with the socket limits the contract asks for."""

from __future__ import annotations

import asyncio
import copy
import gc
import http
import logging
import socket
from collections.abc import Coroutine
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from whiteboard.app import create_app
from whiteboard.settings import Settings
from whiteboard.wsprotocol import LeanWebSocketProtocol

#: A client frame over 64 KiB closes the socket with 1009 (DESIGN 4.3).
WS_MAX_SIZE = 64 * 1024
#: Keepalive pings only reap half-open sockets (a tablet gone out of Wi-Fi without closing): a
#: socket whose pong has not come back `WS_PING_TIMEOUT` after a ping is dropped, so a dead one
#: goes within 30 s of going silent (docs/security.md). Screens do not need them to see
#: staleness: our own heartbeats reach every socket at least every 10 s (DESIGN 4.3). Pinging
#: every 20 s with 10 s to answer keeps that 30 s bound with half the pings of 10 s + 20 s,
#: which were ~10 % of a server's CPU with 1,250 sockets (py-spy, burst).
WS_PING_INTERVAL = 20.0
WS_PING_TIMEOUT = 10.0
#: Kernel send buffer per connection. Left to autotuning, Linux lets a client that has stopped
#: reading park up to 4 MiB per socket in the kernel before the server notices; bounded here,
#: a stalled screen fills its own small queue in seconds and is closed 1013 to resume with
#: `since`, and 10,000 sockets cannot pin gigabytes. (Accepted sockets inherit it.)
SEND_BUFFER = 64 * 1024


class AccessLine(logging.Formatter):
    """uvicorn's access-log line, word for word (`INFO:     127.0.0.1:50712 - "PATCH
    /api/v1/beds/W01-B1 HTTP/1.1" 200 OK`), without what uvicorn's own formatter does for every
    request: copy the record, look up the status phrase, check for colours. That was 57 µs of
    CPU a request, a twentieth of an API write's; this is 23 (`tests/unit/test_server_socket.py`
    holds the two lines equal)."""

    _STATUS = {status.value: f"{status.value} {status.phrase}" for status in http.HTTPStatus}

    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        if not isinstance(args, tuple) or len(args) != 5:  # not uvicorn's usual line: as logging would
            return super().format(record)
        client, method, path, version, status = args
        level = record.levelname
        line = self._STATUS.get(status) if isinstance(status, int) else None
        return (
            f"{level}:{' ' * (8 - len(level))} {client} - "
            f'"{method} {path} HTTP/{version}" {line or f"{status} "}'
        )


#: uvicorn's logging set-up, but for the access log's formatter.
LOG_CONFIG: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
LOG_CONFIG["formatters"]["access"] = {"()": AccessLine}


def quicker_log_records() -> None:
    """Records without the thread, process and caller they were made in (the logging HOWTO's
    "Optimization"): no format of ours shows them, and finding the caller walked the stack on
    every line. With `AccessLine`: 57 → 15 µs an access-log line."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # the HOWTO's own advice


def uvicorn_config(settings: Settings, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings, mllp_host=host),
        host=host,
        port=port,
        # uvloop when installed (uvicorn[standard] brings it), else asyncio's own loop. Measured
        # with bench/fanout_cluster.py: a quarter less CPU per frame sent, and the saturation
        # rate 28k -> 47k frames/s on two processes (bench/results/experiments/).
        loop="auto",
        # websockets-sansio, holding less for each idle socket (see whiteboard/wsprotocol.py).
        ws=LeanWebSocketProtocol,
        ws_max_size=WS_MAX_SIZE,
        ws_ping_interval=WS_PING_INTERVAL,
        ws_ping_timeout=WS_PING_TIMEOUT,
        ws_per_message_deflate=False,  # 3x CPU and 3.5x memory per socket for little gain on a LAN
        lifespan="on",
        log_config=LOG_CONFIG,
        log_level=settings.log_level.lower(),
        proxy_headers=False,  # forwarded headers are read by our own trusted-proxy rules
        timeout_graceful_shutdown=5,
    )


def listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets
    # whose protocol says TCP, and accepted sockets inherit it. With 0, every small frame
    # written while an earlier one is unacknowledged waits up to 40 ms for the client's
    # delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


#: Garbage collection for a process holding thousands of long-lived sockets. With CPython's
#: defaults (700, 10, 10) the objects of every request in flight at a young collection (one
#: each 700 allocations) were carried into the old generation, so full collections, which
#: walk every object of every socket, came every few seconds in a burst and each stopped the
#: process for 100-230 ms: a single one in a 10 s burst is past its p99 (bench/fanout_cluster.py,
#: `--variant gc-log`). Young collections every 50,000 allocations leave requests time to end
#: first, and full ones wait for 100 middle ones; what start-up built is frozen out of them.
GC_THRESHOLDS = (50_000, 20, 100)


async def serve(server: uvicorn.Server, host: str, port: int) -> None:
    gc.set_threshold(*GC_THRESHOLDS)
    sock = listen_socket(host, port)
    freezing = asyncio.create_task(freeze_once_started(server))
    try:
        await server.serve(sockets=[sock])
    finally:
        freezing.cancel()
        sock.close()


async def freeze_once_started(server: uvicorn.Server) -> None:
    """Once the app is up (modules, routes, templates, the store's engines and caches), move
    what start-up built, garbage collected first, out of every later collection's walk."""
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.1)
    gc.collect()
    gc.freeze()


def run_on_server_loop(config: uvicorn.Config, main: Coroutine[Any, Any, None]) -> None:
    """Run `main` to the end on the event loop `config` asks for (uvloop by default)."""
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(main)


def run(settings: Settings, host: str, port: int) -> None:
    quicker_log_records()
    config = uvicorn_config(settings, host, port)
    run_on_server_loop(config, serve(uvicorn.Server(config), host, port))
