"""pytest plugin: real Redis and PostgreSQL servers for the tests.

Load it from tests/conftest.py with ``pytest_plugins = ["tests.services"]``.

Fixtures
--------
``redis_url`` (session) -> str
    WHITEBOARD_TEST_REDIS_URL when set (it must answer PING), else a private
    ``redis-server`` on a free port, started for the run and stopped after it.
``redis_server`` (function) -> RedisServer
    Always a fresh private ``redis-server`` for one test, for fault tests:
    ``.url``, ``.port``, ``.pid``, ``.stop()``, ``.start()`` (same port), ``.pause()``, ``.resume()``.
``pg_admin_url`` (session) -> str
    WHITEBOARD_TEST_DATABASE_URL when set (it must accept a connection), else a private
    PostgreSQL cluster in a temporary folder. A ``postgresql+asyncpg://`` URL of a
    superuser connection to the ``postgres`` database.
``pg_database_url`` (function) -> str
    A fresh, empty database ``wbtest_<hex>`` on that server, dropped after the test.
``private_postgres`` (function) -> PostgresCluster
    Always a fresh private PostgreSQL cluster for one test, to stop and start under a server:
    ``.url``, ``.port``, ``.stop()``, ``.start(port)``.

Nothing here skips: a missing program or an unreachable server fails the test with the
reason. Only the processes these fixtures started are ever stopped, by their PID.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from sqlalchemy.engine import URL, make_url

from tests.helpers import free_port, port_is_open, timeout

REDIS_URL_ENV = "WHITEBOARD_TEST_REDIS_URL"
DATABASE_URL_ENV = "WHITEBOARD_TEST_DATABASE_URL"

# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------


def _resp_command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_line(sock: socket.socket) -> bytes:
    buf = b""
    while b"\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
        if len(buf) > 65536:
            raise ConnectionError("reply too long")
    return buf.split(b"\r\n", 1)[0]


def redis_ping_reply(
    host: str,
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
    wait: float = 0.5,
) -> str:
    """Send PING over a raw socket; return the reply line, or a description of the failure."""
    try:
        with socket.create_connection((host, port), timeout=wait) as sock:
            if password is not None:
                auth = ("AUTH", username, password) if username else ("AUTH", password)
                sock.sendall(_resp_command(*auth))
                reply = _read_line(sock).decode(errors="replace")
                if not reply.startswith("+OK"):
                    return f"AUTH failed: {reply}"
            sock.sendall(b"PING\r\n")
            return _read_line(sock).decode(errors="replace")
    except TimeoutError:
        return f"no answer within {wait}s"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def redis_ping(host: str, port: int, *, wait: float = 0.5) -> bool:
    """Whether a password-less Redis on host:port answers PING with +PONG within `wait` s."""
    return redis_ping_reply(host, port, wait=wait) == "+PONG"


def redis_url_ping_reply(url: str, wait: float = 2.0) -> str:
    parts = urlsplit(url)
    if parts.scheme != "redis":
        return f"unsupported scheme {parts.scheme!r} (only redis:// is probed)"
    return redis_ping_reply(
        parts.hostname or "127.0.0.1",
        parts.port or 6379,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        wait=wait,
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a daemon's zombie may linger until its new parent reaps it
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _redis_server_exe() -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail(
            "redis-server is not installed (as root: apt-get install redis-server; scripts/test does it)"
        )
    return exe


class RedisServer:
    """A private redis-server (daemonized, no persistence) on 127.0.0.1:port."""

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        self.exe = _redis_server_exe()
        self.port = port if port is not None else free_port()
        self._own_workdir = workdir is None
        self.workdir = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="wb-redis-"))
        self.pidfile = self.workdir / "redis.pid"
        self.logfile = self.workdir / "redis.log"
        self._pid: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._pid is None:
            raise RuntimeError("redis-server is not running")
        return self._pid

    @property
    def running(self) -> bool:
        return self._pid is not None and pid_alive(self._pid)

    def ping(self, wait: float = 0.5) -> bool:
        return redis_ping("127.0.0.1", self.port, wait=wait)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "<no log>"

    def _log_since(self, offset: int) -> str:
        try:
            with self.logfile.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def start(self) -> None:
        """Start (again) on the same port; returns once it answers PING."""
        if self.running:
            return
        self.pidfile.unlink(missing_ok=True)
        cmd = [
            self.exe,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "yes",
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.logfile),
            "--dir", str(self.workdir),
        ]  # fmt: skip
        log_offset = self.logfile.stat().st_size if self.logfile.exists() else 0
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.fail(
                f"redis-server failed to start ({proc.returncode}): {proc.stderr}\n{self._log_tail()}"
            )
        deadline = time.monotonic() + timeout(10)
        while True:
            # Only our daemon writes our pidfile (after it has bound the port), so a PONG
            # then comes from our server, not from whoever else might hold the port.
            pid = self._read_pidfile()
            if pid is not None and self.ping(wait=0.2):
                self._pid = pid
                return
            log = self._log_since(log_offset)
            if "Address already in use" in log or "Failed listening" in log or time.monotonic() >= deadline:
                self._kill_from_pidfile()
                pytest.fail(f"redis-server on port {self.port} did not answer PING:\n{log}")
            time.sleep(0.01)

    def _read_pidfile(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):  # not there, or written but not yet complete
            return None

    def _kill_from_pidfile(self) -> None:
        pid = self._read_pidfile()
        if pid is not None:
            self._pid = pid
            self._terminate(signal.SIGKILL)

    def _is_ours(self, pid: int) -> bool:
        """Whether `pid` is still our redis-server (not a recycled PID)."""
        if not pid_alive(pid):
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return True  # no /proc to tell: trust the pidfile
        # redis-server retitles itself "redis-server 127.0.0.1:PORT".
        return b"redis-server" in cmdline and f":{self.port}".encode() in cmdline

    def _signal(self, pid: int, sig: int) -> None:
        if self._is_ours(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _terminate(self, sig: int) -> None:
        pid = self._pid
        if pid is None:
            return
        self._signal(pid, sig)
        if sig != signal.SIGKILL:
            self._signal(pid, signal.SIGCONT)  # a paused server handles SIGTERM only once resumed
        deadline = time.monotonic() + timeout(10)
        while self._is_ours(pid) or port_is_open(self.port, wait=0.1):
            if time.monotonic() >= deadline:
                if sig != signal.SIGKILL and self._is_ours(pid):
                    self._signal(pid, signal.SIGKILL)
                    sig = signal.SIGKILL
                    deadline = time.monotonic() + timeout(10)
                    continue
                raise AssertionError(f"redis-server {pid} on port {self.port} would not stop")
            time.sleep(0.01)
        self._pid = None

    def stop(self) -> None:
        """SIGTERM (SIGKILL if it lingers) and wait until the port is closed."""
        self._terminate(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL and wait until the port is closed."""
        self._terminate(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: connections are still accepted by the kernel, but nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        os.kill(self.pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop it for good and remove its folder."""
        try:
            self._terminate(signal.SIGTERM)
        finally:
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)


def _start_private_redis() -> RedisServer:
    # The free port may be taken between choosing and binding: try a few.
    for attempt in range(3):
        server = RedisServer()
        try:
            server.start()
        except pytest.fail.Exception:
            server.close()
            if attempt == 2:
                raise
        else:
            return server
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis for the whole run (shared: use per-test key prefixes / channel names)."""
    given = os.environ.get(REDIS_URL_ENV)
    if given:
        reply = redis_url_ping_reply(given)
        if reply != "+PONG":
            parts = urlsplit(given)
            safe = given.replace(f":{parts.password}@", ":***@") if parts.password else given
            pytest.fail(f"{REDIS_URL_ENV}={safe} does not answer PING: {reply}")
        yield given
        return
    server = _start_private_redis()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private Redis for this test only, to stop, restart, pause and resume."""
    server = _start_private_redis()
    try:
        yield server
    finally:
        server.close()


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def _pg_bindir() -> Path:
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        pytest.fail(
            "PostgreSQL's initdb is not installed (no /usr/lib/postgresql/*/bin/initdb; "
            "as root: apt-get install postgresql; scripts/test does it)"
        )

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    return Path(max(found, key=version)).parent


def _psql_exe() -> str:
    exe = shutil.which("psql")
    if exe:
        return exe
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))
    if not found:
        pytest.fail("psql is not installed (apt-get install postgresql-client)")
    return found[-1]


def asyncpg_url(url: str | URL) -> str:
    """`url` with the SQLAlchemy driver set to asyncpg, password included."""
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def libpq_url(url: str | URL) -> str:
    """`url` as a plain postgresql:// DSN (for asyncpg.connect or psql), password included."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def psql(url: str | URL, sql: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `sql` with psql against the database of `url` (host, port, user, password taken from it)."""
    u = make_url(url)
    env = {**os.environ, "PGCONNECT_TIMEOUT": "5"}
    if u.password is not None:
        env["PGPASSWORD"] = str(u.password)
    cmd = [
        _psql_exe(), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
        "-h", u.host or "127.0.0.1",
        "-p", str(u.port or 5432),
        "-U", u.username or "postgres",
        "-d", u.database or "postgres",
        "-c", sql,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=timeout(60))
    if check and proc.returncode != 0:
        raise AssertionError(f"psql {sql!r} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


class PostgresCluster:
    """A private PostgreSQL cluster in a temporary folder, trust auth, on 127.0.0.1:port.

    As root the cluster belongs to the ``postgres`` user (PostgreSQL refuses to run as root);
    otherwise to the current user. The superuser is called ``postgres`` either way.
    """

    def __init__(self) -> None:
        self.bindir = _pg_bindir()
        self.as_root = os.geteuid() == 0
        # The postgres user must be able to reach the folder: /tmp rather than a TMPDIR under /root.
        self.base = Path(tempfile.mkdtemp(prefix="wb-pg-", dir="/tmp" if self.as_root else None))
        self.datadir = self.base / "data"
        self.logfile = self.base / "postgres.log"
        self.port = 0
        self._started = False
        if self.as_root:
            try:
                shutil.chown(self.base, "postgres", "postgres")
            except LookupError:
                shutil.rmtree(self.base, ignore_errors=True)
                pytest.fail("running as root but there is no 'postgres' user to own the private cluster")
            self.base.chmod(0o755)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.as_root:
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            cmd = [runuser, "-u", "postgres", "--", *cmd]
        # cwd: the postgres user may not be allowed into the current directory.
        return subprocess.run(
            cmd, cwd=self.base, capture_output=True, text=True, check=False, timeout=timeout(120)
        )

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "<no log>"

    def init(self) -> None:
        proc = self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.datadir),
            "-U", "postgres",
            "--auth=trust",
            "-E", "UTF8",
            "--locale=C.UTF-8",
            "-N",
        )  # fmt: skip
        if proc.returncode != 0:
            pytest.fail(f"initdb failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")

    def start(self, port: int) -> bool:
        """Start on `port`; False if it did not come up (e.g. the port was taken)."""
        self.port = port
        options = " ".join(
            [
                f"-p {port}",
                "-c listen_addresses=127.0.0.1",
                f"-k {shlex.quote(str(self.datadir))}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=300",
            ]
        )
        proc = self._run(
            str(self.bindir / "pg_ctl"),
            "-D", str(self.datadir),
            "-l", str(self.logfile),
            "-w", "-t", str(int(timeout(60))),
            "-o", options,
            "start",
        )  # fmt: skip
        self._started = proc.returncode == 0
        return self._started

    def stop(self) -> None:
        if self._started:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
            self._started = False

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def _start_private_postgres() -> PostgresCluster:
    cluster = PostgresCluster()
    try:
        cluster.init()
        for _attempt in range(3):
            if cluster.start(free_port()):
                return cluster
        pytest.fail(f"the private PostgreSQL did not start:\n{cluster._log_tail()}")
    except BaseException:
        cluster.close()
        raise


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """postgresql+asyncpg:// URL of a superuser connection to a PostgreSQL for the whole run."""
    given = os.environ.get(DATABASE_URL_ENV)
    if given:
        try:
            url = make_url(given)
        except Exception as exc:
            pytest.fail(f"{DATABASE_URL_ENV}={given!r} is not a database URL: {exc}")
        if url.get_backend_name() != "postgresql":
            pytest.fail(f"{DATABASE_URL_ENV} must be a postgresql+asyncpg:// URL, not {url.drivername}://")
        proc = psql(url, "SELECT 1", check=False)
        if proc.returncode != 0:
            safe = url.render_as_string(hide_password=True)
            pytest.fail(f"{DATABASE_URL_ENV}={safe} does not accept a connection: {proc.stderr.strip()}")
        yield asyncpg_url(url)
        return
    cluster = _start_private_postgres()
    try:
        yield cluster.url
    finally:
        cluster.close()


@pytest.fixture
def pg_database_url(pg_admin_url: str) -> Iterator[str]:
    """postgresql+asyncpg:// URL of a new empty database for this test; dropped afterwards."""
    name = f"wbtest_{secrets.token_hex(6)}"
    psql(pg_admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield asyncpg_url(make_url(pg_admin_url).set(database=name))
    finally:
        psql(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def private_postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of this test's own, so stopping it disturbs nobody else."""
    pg = _start_private_postgres()
    try:
        yield pg
    finally:
        pg.close()
