"""The listening socket `whiteboard serve` hands to uvicorn, and the loop it runs on."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from uvicorn.config import LOGGING_CONFIG
from uvicorn.logging import AccessFormatter

from whiteboard.server import LOG_CONFIG, SEND_BUFFER, AccessLine, listen_socket, uvicorn_config
from whiteboard.settings import Settings


async def test_accepted_connections_send_small_frames_at_once_without_nagle() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose protocol is IPPROTO_TCP; with Nagle on,
    a change frame written while a heartbeat is unacknowledged waits for the screen's delayed
    ACK (up to 40 ms)."""
    sock = listen_socket("127.0.0.1", 0)
    accepted: asyncio.Queue[socket.socket] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.put_nowait(writer.get_extra_info("socket"))
        await reader.read()
        writer.close()

    server = await asyncio.start_server(on_connect, sock=sock)
    try:
        port = sock.getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            conn = await asyncio.wait_for(accepted.get(), 5)
            nodelay = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            send_buffer = conn.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        finally:
            writer.close()
            await writer.wait_closed()
        assert nodelay != 0
        # Linux doubles the value asked for; the point is that it is bounded, not autotuned.
        assert send_buffer <= 2 * SEND_BUFFER
    finally:
        server.close()
        await server.wait_closed()


def test_the_server_runs_on_uvloop_when_it_is_installed() -> None:
    """uvloop (installed with uvicorn[standard]) cut the CPU per frame sent by a quarter in
    bench/fanout_cluster.py; the server must not quietly fall back to asyncio's own loop."""
    import uvloop

    from whiteboard.server import uvicorn_config
    from whiteboard.settings import Settings

    factory = uvicorn_config(Settings(secret_key="x" * 32), "127.0.0.1", 0).get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_keepalive_pings_reap_a_silent_socket_within_thirty_seconds_with_few_pings() -> None:
    """A half-open socket goes at most one ping interval plus the pong timeout after it falls
    silent: 30 s, as docs/security.md promises. Pings only reap; screens see staleness from
    heartbeats (every 10 s at most), so they are sent every 20 s, not every 10 s."""
    from whiteboard.server import uvicorn_config
    from whiteboard.settings import Settings

    config = uvicorn_config(Settings(secret_key="x" * 32), "127.0.0.1", 0)
    assert config.ws_ping_interval is not None and config.ws_ping_timeout is not None
    assert config.ws_ping_interval + config.ws_ping_timeout <= 30.0
    assert (config.ws_ping_interval, config.ws_ping_timeout) == (20.0, 10.0)


async def test_a_serving_process_freezes_its_start_up_and_collects_garbage_seldom() -> None:
    """Full collections walk every object of every socket: with CPython's default thresholds
    they came every few seconds in a burst and stopped the process 100-230 ms each. `serve`
    raises the thresholds and, once the server is up, freezes what start-up built."""
    import gc

    import uvicorn

    from whiteboard.server import GC_THRESHOLDS, serve

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        return None

    thresholds = gc.get_threshold()
    gc.unfreeze()
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    serving = asyncio.create_task(serve(server, "127.0.0.1", 0))
    try:
        for _ in range(100):
            if gc.get_freeze_count() > 0:
                break
            await asyncio.sleep(0.05)
        assert server.started
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
        gc.unfreeze()  # the test process's own objects: collectable again
        gc.set_threshold(*thresholds)


@pytest.mark.parametrize(
    ("client", "method", "path", "status"),
    [
        ("127.0.0.1:50712", "PATCH", "/api/v1/beds/W01-B1", 200),
        ("[::1]:4431", "GET", "/api/v1/wards/W01?since=3", 404),
        ("10.0.0.9:1", "POST", "/api/v1/hl7", 599),  # a status with no phrase
    ],
)
def test_the_access_log_line_is_uvicorns_word_for_word(
    client: str, method: str, path: str, status: int
) -> None:
    """Operators' log parsing keeps working: our quicker formatter writes what uvicorn's did."""
    line = '%s - "%s %s HTTP/%s" %d'  # what uvicorn logs for each request
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, line, (client, method, path, "1.1", status), None
    )
    theirs = AccessFormatter(LOGGING_CONFIG["formatters"]["access"]["fmt"], use_colors=False)
    assert AccessLine().format(record) == theirs.format(record)
    other = logging.LogRecord("uvicorn.access", logging.WARNING, __file__, 1, "%s - %s", ("a", "b"), None)
    assert AccessLine().format(other) == "a - b"  # any other record: as logging would


def test_the_server_logs_through_uvicorns_config_with_the_quicker_access_line() -> None:
    config = uvicorn_config(Settings(secret_key="x" * 32), "127.0.0.1", 0)
    assert config.log_config is LOG_CONFIG
    assert LOG_CONFIG["formatters"]["access"] == {"()": AccessLine}
    assert LOG_CONFIG["handlers"]["access"]["stream"] == "ext://sys.stdout"
