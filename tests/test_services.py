"""The test infrastructure itself: real Redis and PostgreSQL fixtures, and the helpers."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.helpers import ServerProcess, free_port, port_is_open, timeout, wait_until
from tests.services import RedisServer, libpq_url, pid_alive, psql, redis_ping, redis_url_ping_reply

# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------


@pytest.mark.redis
def test_redis_url_answers_ping(redis_url: str) -> None:
    assert redis_url.startswith("redis://")
    assert redis_url_ping_reply(redis_url) == "+PONG"


@pytest.mark.redis
def test_redis_server_is_private(redis_server: RedisServer, redis_url: str) -> None:
    assert redis_server.url != redis_url
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert urlsplit(redis_server.url).port == redis_server.port
    assert redis_server.pid > 0
    assert redis_ping("127.0.0.1", redis_server.port)


@pytest.mark.redis
def test_redis_server_stop_and_start_on_the_same_port(redis_server: RedisServer) -> None:
    port, first_pid = redis_server.port, redis_server.pid
    redis_server.stop()
    assert not port_is_open(port)
    assert not redis_ping("127.0.0.1", port)

    redis_server.start()
    assert redis_server.port == port
    assert redis_server.pid != first_pid
    assert redis_ping("127.0.0.1", port)


@pytest.mark.redis
def test_redis_server_pause_and_resume(redis_server: RedisServer) -> None:
    redis_server.pause()
    assert not redis_ping("127.0.0.1", redis_server.port, wait=0.5), "a paused Redis answered"
    redis_server.resume()
    assert redis_ping("127.0.0.1", redis_server.port, wait=timeout(2))


@pytest.mark.redis
def test_paused_redis_server_still_stops(redis_server: RedisServer) -> None:
    redis_server.pause()
    redis_server.stop()
    assert not port_is_open(redis_server.port)


@pytest.mark.redis
def test_private_redis_servers_are_removed_after_use() -> None:
    server = RedisServer()
    server.start()
    pid, workdir = server.pid, server.workdir
    server.close()
    assert not pid_alive(pid)  # a zombie waiting for init to reap it counts as gone
    assert not workdir.exists()


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_pg_database_url_accepts_a_connection(pg_database_url: str) -> None:
    assert pg_database_url.startswith("postgresql+asyncpg://")
    conn = await asyncpg.connect(libpq_url(pg_database_url), timeout=timeout(10))
    try:
        assert await conn.fetchval("SELECT 1") == 1
        name = await conn.fetchval("SELECT current_database()")
        await conn.execute("CREATE TABLE t (x int)")
    finally:
        await conn.close()
    assert name == urlsplit(pg_database_url).path.lstrip("/")
    assert name.startswith("wbtest_")


@pytest.mark.postgres
def test_pg_databases_are_fresh_and_dropped(pg_admin_url: str, pg_database_url: str) -> None:
    name = urlsplit(pg_database_url).path.lstrip("/")
    listed = psql(pg_admin_url, "SELECT datname FROM pg_database").stdout.split()
    assert name in listed
    # A previous test's database (created a table) is gone by now.
    tables = psql(pg_database_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").stdout
    assert tables.strip() == "0"


@pytest.mark.postgres
def test_pg_admin_url_is_a_superuser(pg_admin_url: str) -> None:
    assert pg_admin_url.startswith("postgresql+asyncpg://")
    assert (
        psql(pg_admin_url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").stdout.strip() == "t"
    )


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def test_free_port_is_free() -> None:
    assert not port_is_open(free_port())


async def test_wait_until_returns_the_truthy_value() -> None:
    calls = 0

    def predicate() -> int:
        nonlocal calls
        calls += 1
        return calls if calls >= 3 else 0

    assert await wait_until(predicate, timeout(2), interval=0.001) == 3


async def test_wait_until_accepts_async_predicates_and_times_out() -> None:
    async def never() -> bool:
        await asyncio.sleep(0)
        return False

    with pytest.raises(AssertionError, match=r"timed out after 0\.05s waiting for the impossible"):
        await wait_until(never, 0.05, message="the impossible")


_HEALTHZ_SERVER = textwrap.dedent(
    """
    import sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/healthz" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    print("listening", flush=True)
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)


def test_server_process_waits_for_healthz_and_stops(tmp_path: Path) -> None:
    port = free_port()
    server = ServerProcess(
        env={"PYTHONUNBUFFERED": "1"},
        cwd=tmp_path,
        log_path=tmp_path / "server.log",
        port=port,
        command=[sys.executable, "-c", _HEALTHZ_SERVER, str(port)],
    )
    assert server.base_url == f"http://127.0.0.1:{port}"
    assert server.ws_url("/ws/ward/A") == f"ws://127.0.0.1:{port}/ws/ward/A"
    with server.start():
        assert port_is_open(port)
        assert "listening" in server.log_tail()
        assert server.stop() == -signal.SIGTERM
    assert not port_is_open(port)


async def test_server_process_astart_and_kill(tmp_path: Path) -> None:
    port = free_port()
    server = ServerProcess(
        env={},
        cwd=tmp_path,
        log_path=tmp_path / "server.log",
        port=port,
        command=[sys.executable, "-c", _HEALTHZ_SERVER, str(port)],
    )
    await server.astart()
    assert server.running
    assert server.kill() == -signal.SIGKILL
    assert not server.running


def test_server_process_failure_quotes_the_log(tmp_path: Path) -> None:
    server = ServerProcess(
        env={},
        cwd=tmp_path,
        log_path=tmp_path / "server.log",
        command=[sys.executable, "-c", "print('cannot start: no config'); raise SystemExit(3)"],
    )
    with pytest.raises(AssertionError, match=r"exited with status 3(.|\n)*cannot start: no config"):
        server.start()
