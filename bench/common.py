"""Shared pieces of the fanout benchmarks: processes, services, load generators and statistics.

Nothing here imports `whiteboard`: the benchmarks drive real `whiteboard serve` processes
through their public contracts (CLI, HTTP API, WebSocket), the way a deployment would.

The load generator runs in child processes (multiprocessing, spawn), apart from the servers:
- socket workers hold many WebSocket clients. Every client is a small asyncio Protocol that
  does the upgrade by hand, answers pings, and for each text frame reads only the frame type
  and `seq` (a byte search, no JSON parse) to check seq contiguity and record arrival times.
  A few clients per ward are *probes*: they also parse each change frame fully, to learn which
  API call it reports (bed code + version, or stay id + version) and the server's time stamp.
- a writer issues API calls on an open-loop schedule (call i is due at t0 + i/rate whether or
  not earlier calls have answered), over a small keep-alive HTTP/1.1 client, and records the
  *scheduled* time of each call, so queueing anywhere counts in the latency (no coordinated
  omission).
Both use CLOCK_MONOTONIC (`time.monotonic`), which is one clock for every process on the host.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime as dt
import glob
import math
import multiprocessing as mp
import os
import platform
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DOCS = ROOT / "docs" / "benchmarks.md"
RESULTS = BENCH / "results"
PYTHON = sys.executable
WHITEBOARD_EXE = str(Path(sys.executable).parent / "whiteboard")
REFERENCE_SERVER = BENCH / "reference" / "server.py"
SECRET_KEY = "bench-secret-key-" + "x" * 32  # only ever used by private benchmark servers

# --------------------------------------------------------------------------------------------
# The machine, limits, and process accounting
# --------------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": model,
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg()[0],
    }


def raise_nofile() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def proc_rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children_of(pid: int) -> list[int]:
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(Path(stat).read_text().rpartition(")")[2].split()[1]) == pid:
                out.append(int(stat.split("/")[2]))
    return out


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


class CpuMeter:
    """CPU used by named groups of processes between start() and stop(), in % of one core."""

    def __init__(self, groups: dict[str, Callable[[], Iterable[int]]]) -> None:
        self.groups = groups
        self._start: dict[str, dict[int, float]] = {}
        self._t0 = 0.0
        self._machine0 = (0, 0)
        self.wall = 0.0

    def _sample(self) -> dict[str, dict[int, float]]:
        return {name: {pid: proc_cpu_seconds(pid) for pid in pids()} for name, pids in self.groups.items()}

    def start(self) -> None:
        self._start = self._sample()
        self._t0 = time.monotonic()
        self._machine0 = machine_jiffies()

    def stop(self) -> dict[str, float]:
        end = self._sample()
        wall = max(time.monotonic() - self._t0, 1e-6)
        self.wall = wall
        busy1, total1 = machine_jiffies()
        out: dict[str, float] = {}
        for name, pids in end.items():
            before = self._start.get(name, {})
            used = sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in pids.items())
            out[name] = round(100 * used / wall, 1)
        ncpu = os.cpu_count() or 1
        busy0, total0 = self._machine0
        out["machine busy % (all cores)"] = round(100 * (busy1 - busy0) / max(total1 - total0, 1), 1)
        ours = sum(v for k, v in out.items() if not k.startswith("machine"))
        out["other processes (est.)"] = round(max(0.0, out["machine busy % (all cores)"] * ncpu - ours), 1)
        return out


# --------------------------------------------------------------------------------------------
# Servers as subprocesses
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _child_limits() -> None:  # preexec_fn: runs in the child before exec
    raise_nofile()


def base_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHITEBOARD_")}
    env.update(extra)
    return env


class Service:
    """A server subprocess on 127.0.0.1:port, in its own session, with its log in a file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: Path, port: int) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.cwd = cwd
        self.port = port
        self.log_path = cwd / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def whiteboard(cls, name: str, env: dict[str, str], cwd: Path, variant: str = "") -> Service:
        """`whiteboard serve`; with `variant`, through bench/tools/serve_variant.py (candidate changes)."""
        port = free_port()
        cmd = [WHITEBOARD_EXE, "serve", "--host", "127.0.0.1", "--port", str(port)]
        if variant:
            cmd = [PYTHON, str(BENCH / "tools" / "serve_variant.py"), "--variant", variant, "--", *cmd[2:]]
        return cls(name, cmd, env, cwd, port)

    @classmethod
    def reference(cls, name: str, impl: str, cwd: Path, frame_bytes: int) -> Service:
        port = free_port()
        cmd = [PYTHON, str(REFERENCE_SERVER), "--impl", impl, "--port", str(port)]
        cmd += ["--frame-bytes", str(frame_bytes)]
        return cls(name, cmd, base_env({}), cwd, port)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_kib(self) -> int:
        return proc_rss_kib(self.pid)

    def start(self, wait: float = 60.0) -> Service:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_child_limits,
        )
        log.close()
        deadline = time.monotonic() + wait
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}):\n{self.log_tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not healthy in {wait}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, n: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)

    def log_tracebacks(self, limit: int = 5) -> list[str]:
        """The last `limit` error reports of its log, each with its whole traceback."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        blocks: list[str] = []
        i = 0
        while i < len(lines):
            if re.search(r"\b(ERROR|CRITICAL)\b", lines[i]):
                block = [lines[i]]
                j = i + 1
                while j < len(lines) and (
                    lines[j].startswith((" ", "Traceback", "During handling", "The above"))
                    or (j > i + 1 and lines[j - 1].startswith("    ") and not lines[j].startswith("INFO"))
                    or not lines[j].strip()
                ):
                    block.append(lines[j])
                    j += 1
                    if len(block) > 200:
                        break
                blocks.append("\n".join(block))
                i = j
            else:
                i += 1
        return blocks[-limit:]

    def log_problems(self) -> list[str]:
        """Lines of its log that report errors or warnings (for the report)."""
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").splitlines()
            return [ln for ln in lines if re.search(r"\b(ERROR|WARNING|CRITICAL|Traceback)\b", ln)]
        return []


def wb_cli(env: dict[str, str], cwd: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [WHITEBOARD_EXE, *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"whiteboard {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def make_token(env: dict[str, str], cwd: Path, name: str, role: str = "nurse") -> str:
    return wb_cli(env, cwd, "token", "create", "--name", name, "--role", role).strip().splitlines()[-1]


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------


def ward_codes(n_wards: int) -> list[str]:
    return [f"W{w:02d}" for w in range(1, n_wards + 1)]


def bed_codes(ward: str, beds_per_ward: int) -> list[str]:
    # Bays of six; the last bed of the ward is a side room.
    return [f"{ward}-B{i // 6 + 1}-{i % 6 + 1}" for i in range(beds_per_ward)]


def write_layout(path: Path, n_wards: int, beds_per_ward: int) -> dict[str, list[str]]:
    wards = {w: bed_codes(w, beds_per_ward) for w in ward_codes(n_wards)}
    doc = {
        "sites": [
            {
                "code": "BENCH",
                "name": "Benchmark General",
                "wards": [
                    {
                        "code": w,
                        "name": f"Ward {w}",
                        "specialty": "general medicine",
                        "beds": [
                            {
                                "code": b,
                                "bay": b.split("-")[1],
                                "kind": "side_room" if i == len(beds) - 1 else "bay",
                            }
                            for i, b in enumerate(beds)
                        ],
                    }
                    for w, beds in wards.items()
                ],
            }
        ]
    }
    path.write_bytes(orjson.dumps(doc))
    return wards


# --------------------------------------------------------------------------------------------
# Private Redis and PostgreSQL (the same recipe as tests/services.py, without pytest)
# --------------------------------------------------------------------------------------------


def _redis_ping(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="wb-bench-redis-"))
        self.pidfile = self.dir / "redis.pid"
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        subprocess.run(
            [
                exe,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--pidfile",
                str(self.pidfile),
                "--logfile",
                str(self.dir / "redis.log"),
                "--dir",
                str(self.dir),
            ],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 10
        while not (self.pidfile.exists() and _redis_ping(self.port)):
            if time.monotonic() > deadline:
                raise RuntimeError("private redis-server did not answer PING")
            time.sleep(0.02)
        self.pid = int(self.pidfile.read_text().strip())
        return self

    def stop(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
                if b"redis-server" in cmdline and f":{self.port}".encode() in cmdline:
                    os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while Path(f"/proc/{self.pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_bindir() -> Path:
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    return Path(max(found, key=lambda p: int(Path(p).parent.parent.name.split(".")[0]))).parent


def _psql_exe() -> str:
    return shutil.which("psql") or str(_pg_bindir() / "psql")


def psql(url: str, sql: str) -> str:
    from sqlalchemy.engine import make_url  # the venv has SQLAlchemy (the server's dependency)

    u = make_url(url)
    env = {**os.environ, "PGCONNECT_TIMEOUT": "5"}
    if u.password is not None:
        env["PGPASSWORD"] = str(u.password)
    cmd = [
        _psql_exe(),
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        u.host or "127.0.0.1",
        "-p",
        str(u.port or 5432),
        "-U",
        u.username or "postgres",
        "-d",
        u.database or "postgres",
        "-c",
        sql,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"psql {sql!r}: {proc.stderr.strip()}")
    return proc.stdout


class PrivatePostgres:
    """A throw-away cluster (fsync off) on a free port; as root it belongs to `postgres`."""

    def __init__(self) -> None:
        self.bindir = _pg_bindir()
        self.as_root = os.geteuid() == 0
        self.base = Path(tempfile.mkdtemp(prefix="wb-bench-pg-", dir="/tmp" if self.as_root else None))
        self.data = self.base / "data"
        self.port = 0
        self.started = False
        if self.as_root:
            shutil.chown(self.base, "postgres", "postgres")
            self.base.chmod(0o755)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.as_root:
            cmd = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, cwd=self.base, capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> PrivatePostgres:
        p = self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "-N",
        )
        if p.returncode != 0:
            raise RuntimeError(f"initdb failed: {p.stderr}")
        for _ in range(3):
            self.port = free_port()
            opts = " ".join(
                [
                    f"-p {self.port}",
                    "-c listen_addresses=127.0.0.1",
                    f"-k {shlex.quote(str(self.data))}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c max_connections=300",
                ]
            )
            p = self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.base / "pg.log"),
                "-w",
                "-t",
                "60",
                "-o",
                opts,
                "start",
            )
            if p.returncode == 0:
                self.started = True
                return self
        raise RuntimeError(f"PostgreSQL did not start: {p.stderr}")

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        return None

    def stop(self) -> None:
        if self.started:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.started = False
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def postgres_database() -> Iterator[tuple[str, Callable[[], list[int]]]]:
    """(asyncpg URL of a fresh database, a function listing the PostgreSQL server's PIDs).

    WHITEBOARD_TEST_DATABASE_URL when set (a new database on it, dropped afterwards), else a
    private cluster started for this run and stopped after it."""
    from sqlalchemy.engine import make_url

    given = os.environ.get("WHITEBOARD_TEST_DATABASE_URL")
    name = f"wbbench_{secrets.token_hex(4)}"
    if given:
        admin = make_url(given).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
        psql(admin, f'CREATE DATABASE "{name}"')
        try:
            yield make_url(admin).set(database=name).render_as_string(hide_password=False), list
        finally:
            psql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    cluster = PrivatePostgres().start()
    try:
        psql(cluster.url, f'CREATE DATABASE "{name}"')

        def pids() -> list[int]:
            pm = cluster.postmaster_pid()
            return [] if pm is None else [pm, *children_of(pm)]

        yield make_url(cluster.url).set(database=name).render_as_string(hide_password=False), pids
    finally:
        cluster.stop()


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, str, Callable[[], list[int]]]]:
    """(Redis URL, channel prefix for this run, PIDs of the Redis server if ours)."""
    prefix = f"wbbench-{secrets.token_hex(4)}"
    given = os.environ.get("WHITEBOARD_TEST_REDIS_URL")
    if given:
        yield given, prefix, list
        return
    server = PrivateRedis().start()
    try:
        yield server.url, prefix, lambda: [server.pid] if server.pid else []
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100); NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary_ms(values: Iterable[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max in milliseconds of values in seconds."""
    v = sorted(values)
    return {
        "n": len(v),
        "p50": round(percentile(v, 50) * 1000, 2),
        "p90": round(percentile(v, 90) * 1000, 2),
        "p99": round(percentile(v, 99) * 1000, 2),
        "p99.9": round(percentile(v, 99.9) * 1000, 2),
        "max": round(v[-1] * 1000, 2) if v else math.nan,
    }


def median(values: Sequence[float]) -> float:
    """The middle value; the mean of the middle two for an even count (not the lower one, which
    would flatter a two-round run)."""
    if not values:
        return math.nan
    return statistics.median(values)


def fmt(x: Any, digits: int = 1) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return "–"
        return f"{x:,.{digits}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def ratio(ours: float, ref: float, digits: int = 2) -> str:
    if not ref or math.isnan(ref) or math.isnan(ours):
        return "–"
    return f"{ours / ref:.{digits}f}×"


# --------------------------------------------------------------------------------------------
# docs/benchmarks.md
# --------------------------------------------------------------------------------------------

DOC_HEADER = """# Benchmarks

Measured with the scripts in `bench/` (see `bench/README.md`). Each section below is rewritten
by its own script, between its markers; everything else here is kept as it is. Figures come
from a shared, noisy 2-core machine: compare them with the reference measured in the same run
(the ratios), not across runs.
"""


def write_doc_section(name: str, body: str) -> None:
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    text = DOCS.read_text() if DOCS.exists() else DOC_HEADER
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, _, rest = text.partition(start)
        _, _, after = rest.partition(end)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOCS.write_text(text)


def save_results(name: str, data: dict[str, Any], experiment: bool = False) -> Path:
    """bench/results/NAME.json; runs with candidate changes or changed parameters go to
    bench/results/experiments/ instead, so they never pass for the real figures."""
    folder = RESULTS / "experiments" if experiment else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return path


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        out.append("| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# A small keep-alive HTTP/1.1 client (cheap enough to offer hundreds of calls a second)
# --------------------------------------------------------------------------------------------


class HttpError(Exception):
    pass


class NotSent(Exception):
    """The phase ended while this call still waited for a connection: it was never sent."""


class HttpConn(asyncio.Protocol):
    """One keep-alive connection, one call at a time, each answer parsed as it arrives.

    A Protocol rather than asyncio's streams, and no `wait_for` (a task per call on Python
    3.11): with streams the writer process spent ~270 µs of CPU a call, a seventh of a core at
    500 calls/s on a 2-core machine it shares with the servers it measures."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.answer: asyncio.Future[tuple[int, dict[bytes, bytes], bytes]] | None = None
        self.lost = False
        self.last_used = time.monotonic()

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConn:
        _transport, conn = await asyncio.get_running_loop().create_connection(cls, host, port)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answer = self.answer
        if answer is None or answer.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(self.buffer[:end]).split(b"\r\n")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get(b"content-length", b"0"))
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        answer.set_result((int(lines[0].split(b" ", 2)[1]), headers, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.answer is not None and not self.answer.done():
            # As streams would say it: closed cleanly with (part of) an answer or none at all.
            error = exc or asyncio.IncompleteReadError(bytes(self.buffer), None)
            self.answer.set_exception(error)

    async def request(self, head: bytes, body: bytes = b"") -> tuple[int, dict[bytes, bytes], bytes]:
        if self.lost or self.transport is None:
            raise ConnectionResetError("the connection was closed")
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(head + body)
        return await self.answer

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class HttpPool:
    """Up to `size` keep-alive connections to one server; callers queue for a free one."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self.free: list[HttpConn] = []
        self.opened = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def head(
        self, method: str, path: str, token: str, extra: dict[str, str] | None = None, body_len: int = 0
    ) -> bytes:
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Authorization: Bearer {token}",
        ]
        if body_len or method in ("POST", "PATCH", "PUT"):
            lines += ["Content-Type: application/json", f"Content-Length: {body_len}"]
        for k, v in (extra or {}).items():
            lines.append(f"{k}: {v}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _acquire(self, not_after: float | None = None) -> tuple[HttpConn, bool]:
        """A connection, and whether it was used before (a server may have closed it since).
        Past `not_after` (monotonic), give up instead of waiting: NotSent."""
        while True:
            if not_after is not None and time.monotonic() > not_after:
                raise NotSent
            while self.free:
                conn = self.free.pop()
                if time.monotonic() - conn.last_used < 2.0:  # uvicorn closes idle ones after 5 s
                    return conn, True
                conn.close()
                self.opened -= 1
            if self.opened < self.size:
                self.opened += 1
                try:
                    return await HttpConn.open(self.host, self.port), False
                except BaseException:
                    self._release(None)
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            await waiter

    def _release(self, conn: HttpConn | None) -> None:
        if conn is None:
            self.opened -= 1
        else:
            conn.last_used = time.monotonic()
            self.free.append(conn)
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    async def request(
        self,
        method: str,
        path: str,
        token: str,
        body: Any = None,
        extra: dict[str, str] | None = None,
        timeout: float = 120.0,
        not_after: float | None = None,
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        data = b"" if body is None else orjson.dumps(body)
        head = self.head(method, path, token, extra, len(data))
        for attempt in (1, 2):
            conn, reused = await self._acquire(not_after if attempt == 1 else None)
            try:
                async with asyncio.timeout(timeout):
                    result = await conn.request(head, data)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                conn.close()
                self._release(None)
                # A kept-alive connection the server had just closed: nothing was read, so the call
                # never ran (and If-Match would refuse a second application anyway). Once more.
                if (
                    reused
                    and attempt == 1
                    and (not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial)
                ):
                    continue
                raise
            except BaseException:
                conn.close()
                self._release(None)
                raise
            if result[1].get(b"connection", b"").lower() == b"close":
                conn.close()
                self._release(None)
            else:
                self._release(conn)
            return result
        raise AssertionError("unreachable")

    def close(self) -> None:
        for conn in self.free:
            conn.close()
        self.free.clear()


# --------------------------------------------------------------------------------------------
# WebSocket clients: the upgrade by hand, frames counted, seq checked
# --------------------------------------------------------------------------------------------

OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 1, 2, 8, 9, 10
C_CHANGE, C_HEARTBEAT, C_SNAPSHOT = ord("c"), ord("h"), ord("s")


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients must mask), for pongs and the close frame."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode, 0x80 | n]) if n < 126 else bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2)
    key = int.from_bytes((mask * (n // 4 + 1))[:n] or b"\0") if n else 0
    body = (int.from_bytes(payload) ^ key).to_bytes(n) if n else b""
    return head + mask + body


def probe_key(frame: dict[str, Any]) -> tuple[Any, ...]:
    """Which write a change frame reports: the stay (id, version) or the empty bed (code, version)."""
    bed = frame.get("bed")
    if isinstance(bed, dict):
        stay = bed.get("stay")
        if isinstance(stay, dict) and "id" in stay:
            return ("stay", stay["id"], stay["version"])
        if "code" in bed and "version" in bed:
            return ("bed", bed["code"], bed["version"])
    return ("seq", frame["ward"], frame["seq"])


class WsClient(asyncio.Protocol):
    """One socket. Counts frames and bytes, checks that change seqs follow on without gaps."""

    __slots__ = (
        "arrivals",
        "buf",
        "bytes",
        "change_bytes",
        "changes",
        "close_code",
        "dupes",
        "frames",
        "gaps",
        "handshake_status",
        "hb_behind",
        "hb_times",
        "heartbeats",
        "host",
        "idx",
        "key",
        "last_frame",
        "last_seq",
        "mark_change_bytes",
        "mark_changes",
        "mark_hb",
        "mark_seq",
        "max_gap",
        "missing",
        "open",
        "path",
        "port",
        "probe",
        "probes",
        "ready",
        "record",
        "server",
        "snap_seq",
        "tag",
        "token",
        "transport",
        "upgraded",
        "ward",
    )

    def __init__(
        self,
        idx: int,
        host: str,
        port: int,
        path: str,
        token: str,
        ward: str,
        server: int,
        probe: bool,
        record: bool,
        ready: asyncio.Future[int],
    ) -> None:
        self.idx, self.host, self.port, self.path, self.token = idx, host, port, path, token
        self.ward, self.server, self.probe, self.record, self.ready = ward, server, probe, record, ready
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        self.handshake_status = 0
        self.open = False
        self.close_code: int | None = None
        self.snap_seq = -1
        self.last_seq = -1
        self.frames = self.bytes = self.changes = self.heartbeats = 0
        self.change_bytes = self.mark_change_bytes = 0
        self.gaps = self.missing = self.dupes = self.hb_behind = 0
        self.last_frame = 0.0
        self.max_gap = 0.0
        self.mark_seq = -1
        self.mark_changes = self.mark_hb = 0
        self.arrivals: list[tuple[int, float]] = []
        self.probes: list[tuple[Any, ...]] = []
        self.hb_times: list[float] = []
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.tag = ""

    # -- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        req = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key}\r\nSec-WebSocket-Version: 13\r\n"
        )
        if self.token:
            req += f"Authorization: Bearer {self.token}\r\n"
        transport.write((req + "\r\n").encode())  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.close_code is None:
            self.close_code = 1006
        if not self.ready.done():
            self.ready.set_result(self.handshake_status or -1)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self.transport.write(masked_frame(OP_CLOSE, (1000).to_bytes(2)))
            self.transport.close()

    # -- reading -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            status = int(buf[9:12])
            self.handshake_status = status
            if status != 101:
                self.close_code = -status
                self.transport.close()  # type: ignore[union-attr]
                if not self.ready.done():
                    self.ready.set_result(status)
                return
            self.upgraded = self.open = True
            self.last_frame = time.monotonic()
            buf = buf[end + 4 :]
        n = len(buf)
        i = 0
        while n - i >= 2:
            b1 = buf[i + 1] & 0x7F
            h = 2
            if b1 == 126:
                if n - i < 4:
                    break
                b1 = int.from_bytes(buf[i + 2 : i + 4])
                h = 4
            elif b1 == 127:
                if n - i < 10:
                    break
                b1 = int.from_bytes(buf[i + 2 : i + 10])
                h = 10
            if n - i < h + b1:
                break
            op = buf[i] & 0x0F
            payload = buf[i + h : i + h + b1]
            i += h + b1
            if op == OP_TEXT:
                self.on_text(payload)
            elif op == OP_PING:
                self.transport.write(masked_frame(OP_PONG, payload))  # type: ignore[union-attr]
            elif op == OP_CLOSE:
                self.close_code = int.from_bytes(payload[:2]) if len(payload) >= 2 else 1005
                self.open = False
                with contextlib.suppress(Exception):
                    self.transport.write(masked_frame(OP_CLOSE, payload[:2]))  # type: ignore[union-attr]
                self.transport.close()  # type: ignore[union-attr]
                return
        self.buf = buf[i:] if i < n else b""

    def on_text(self, payload: bytes) -> None:
        now = time.monotonic()
        self.frames += 1
        self.bytes += len(payload)
        gap = now - self.last_frame
        if gap > self.max_gap:
            self.max_gap = gap
        self.last_frame = now
        kind = payload[9]  # {"type":"X...
        p = payload.find(b'"seq":', 18) + 6
        seq = int(payload[p : payload.find(b",", p)])
        if kind == C_CHANGE:
            self.changes += 1
            self.change_bytes += len(payload)
            last = self.last_seq
            if seq == last + 1:
                self.last_seq = seq
            elif seq <= last:
                self.dupes += 1
            else:
                self.gaps += 1
                self.missing += seq - last - 1
                self.last_seq = seq
            if self.record:
                self.arrivals.append((seq, now))
            if self.probe:
                frame = orjson.loads(payload)
                self.probes.append(
                    (probe_key(frame), frame["ward"], seq, now, time.time(), frame.get("at"), self.idx)
                )
        elif kind == C_HEARTBEAT:
            self.heartbeats += 1
            if self.probe:
                self.hb_times.append(now)
            if seq > self.last_seq:
                self.hb_behind += 1
        elif kind == C_SNAPSHOT:
            self.snap_seq = self.last_seq = seq
            if not self.ready.done():
                self.ready.set_result(101)

    # -- accounting --------------------------------------------------------------------------

    def mark(self) -> None:
        self.mark_seq = self.last_seq
        self.mark_changes = self.changes
        self.mark_hb = self.heartbeats
        self.mark_change_bytes = self.change_bytes
        self.max_gap = 0.0

    def stats(self) -> tuple[Any, ...]:
        return (
            self.idx,
            self.ward,
            self.server,
            self.probe,
            self.open,
            self.close_code,
            self.snap_seq,
            self.mark_seq,
            self.last_seq,
            self.changes - self.mark_changes,
            self.heartbeats - self.mark_hb,
            round(self.max_gap, 3),
            self.gaps,
            self.missing,
            self.dupes,
            self.hb_behind,
            self.frames,
            self.bytes,
            self.change_bytes - self.mark_change_bytes,
        )


STAT_FIELDS = (
    "idx",
    "ward",
    "server",
    "probe",
    "open",
    "close_code",
    "snap_seq",
    "mark_seq",
    "last_seq",
    "changes",
    "heartbeats",
    "max_gap",
    "gaps",
    "missing",
    "dupes",
    "hb_behind",
    "frames",
    "bytes",
    "change_bytes",
)


@dataclass
class SocketSpec:
    idx: int
    host: str
    port: int
    path: str
    ward: str
    server: int
    probe: bool
    tag: str = ""


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _socket_worker_main(conn: Any) -> None:
    loop = asyncio.get_running_loop()
    clients: list[WsClient] = []
    samples: list[tuple[float, int]] = []

    async def sampler() -> None:
        while True:
            samples.append((time.monotonic(), sum(c.changes for c in clients)))
            if len(samples) > 20000:
                del samples[:10000]
            await asyncio.sleep(0.25)

    sample_task = asyncio.create_task(sampler())

    async def open_all(specs: list[SocketSpec], token: str, concurrency: int, record: bool) -> dict[str, Any]:
        sem = asyncio.Semaphore(concurrency)
        statuses: dict[str, int] = {}
        t0 = time.monotonic()
        handshake_times: list[float] = []

        async def one(spec: SocketSpec) -> None:
            async with sem:
                for attempt in range(5):
                    ready: asyncio.Future[int] = loop.create_future()
                    client = WsClient(
                        spec.idx,
                        spec.host,
                        spec.port,
                        spec.path,
                        token,
                        spec.ward,
                        spec.server,
                        spec.probe,
                        record,
                        ready,
                    )
                    client.tag = spec.tag
                    started = time.monotonic()
                    try:
                        await loop.create_connection(lambda c=client: c, spec.host, spec.port)
                        status = await asyncio.wait_for(ready, 60)
                    except (OSError, TimeoutError) as exc:
                        status = -1
                        statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
                        client.close()
                    if status == 101 and client.open:
                        handshake_times.append(time.monotonic() - started)
                        clients.append(client)
                        return
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
                    await asyncio.sleep(0.2 * (attempt + 1))

        before = len(clients)
        await asyncio.gather(*(one(s) for s in specs))
        return {
            "opened": sum(1 for c in clients[before:] if c.open),
            "seconds": round(time.monotonic() - t0, 2),
            "failures": statuses,
            "handshake": summary_ms(handshake_times),
        }

    async def wait_caught_up(targets: dict[str, int], timeout: float) -> dict[str, Any]:
        t0 = time.monotonic()
        while True:
            behind = [c for c in clients if c.open and c.last_seq < targets.get(c.ward, -1)]
            if not behind or time.monotonic() - t0 > timeout:
                return {"seconds": round(time.monotonic() - t0, 3), "behind": len(behind)}
            await asyncio.sleep(0.05)

    while True:
        msg = await loop.run_in_executor(None, conn.recv)
        cmd = msg["cmd"]
        reply: dict[str, Any] = {}
        if cmd == "open":
            reply = await open_all(
                msg["specs"], msg["token"], msg.get("concurrency", 64), msg.get("record", True)
            )
        elif cmd == "record":
            for c in clients:
                c.record = msg["on"]
        elif cmd == "mark":
            for c in clients:
                c.mark()
        elif cmd == "stats":
            reply = {"stats": [c.stats() for c in clients]}
        elif cmd == "take":
            reply = {
                "arrivals": [(c.ward, c.server, c.arrivals) for c in clients if c.arrivals],
                "probes": [p for c in clients for p in c.probes],
                "heartbeats": {c.idx: c.hb_times for c in clients if c.hb_times},
            }
            for c in clients:
                c.arrivals = []
                c.probes = []
                c.hb_times = []
        elif cmd == "samples":
            reply = {"samples": list(samples)}
        elif cmd == "wait":
            reply = await wait_caught_up(msg["targets"], msg["timeout"])
        elif cmd == "close":  # all of them, or those of one tag
            tag = msg.get("tag")
            closing = [c for c in clients if tag is None or c.tag == tag]
            for c in closing:
                c.close()
            await asyncio.sleep(0.5)
            clients[:] = [c for c in clients if c not in closing]
        elif cmd == "quit":
            sample_task.cancel()
            conn.send({"cpu": _cpu_self()})
            return
        reply["cpu"] = _cpu_self()
        reply["pid"] = os.getpid()
        conn.send(reply)


def socket_worker(conn: Any) -> None:
    raise_nofile()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(_socket_worker_main(conn))


# --------------------------------------------------------------------------------------------
# The writer: open-loop API calls (or reference triggers) on a schedule
# --------------------------------------------------------------------------------------------


@dataclass
class Resource:
    """What one write changes: an empty bed (state toggled) or an occupied bed's stay (news2)."""

    kind: str  # "bed" | "stay"
    ward: str
    ref: str  # bed code or stay id
    version: int
    value: str | int  # bed state, or stay news2
    busy: bool = False


@dataclass
class WriteRecord:
    key: tuple[Any, ...] | None
    ward: str
    target: int
    t_sched: float
    t_sent: float
    t_done: float
    status: int


async def _write_api(
    pool: HttpPool, token: str, res: Resource, not_after: float | None = None
) -> tuple[int, tuple[Any, ...] | None]:
    if_match = {"If-Match": f'"{res.version}"'}
    if res.kind == "bed":
        new: str | int = "reserved" if res.value == "available" else "available"
        path, body = f"/api/v1/beds/{res.ref}", {"state": new}
    else:
        new = (int(res.value) + 1) % 7
        path, body = f"/api/v1/stays/{res.ref}", {"news2": new}
    status, headers, _ = await pool.request("PATCH", path, token, body, if_match, not_after=not_after)
    if status == 200:
        res.version = int(headers[b"etag"].strip(b'"'))
        res.value = new
        return status, (res.kind, res.ref, res.version)
    if status == 412:  # stale (an earlier call timed out on our side but committed): re-read it
        _s, _h, body = await pool.request("GET", f"/api/v1/wards/{res.ward}", token)
        for bed in orjson.loads(body).get("beds", []):
            stay = bed.get("stay")
            if res.kind == "bed" and bed["code"] == res.ref:
                res.version, res.value = bed["version"], bed["state"]
            elif res.kind == "stay" and stay and stay["id"] == res.ref:
                res.version, res.value = stay["version"], stay["news2"] or 0
    return status, None


async def _writer_main(conn: Any) -> None:
    loop = asyncio.get_running_loop()
    pools: dict[tuple[str, int], HttpPool] = {}
    controls: dict[tuple[str, int], Any] = {}
    ref_seq: dict[str, int] = {}

    async def control(host: str, port: int) -> Any:
        from websockets.asyncio.client import connect

        key = (host, port)
        if key not in controls:
            controls[key] = await connect(f"ws://{host}:{port}/control", max_size=None, ping_interval=None)
        return controls[key]

    async def run(msg: dict[str, Any]) -> dict[str, Any]:
        targets: list[dict[str, Any]] = msg["targets"]
        rate: float = msg["rate"]
        duration: float = msg["duration"]
        token: str = msg.get("token", "")
        # Writes spread over several tokens, as many users' would be (one token would meet the
        # server's per-token write throttle long before the server's own limits).
        tokens: list[str] = msg.get("tokens") or [token]
        mode: str = msg["mode"]  # "api" | "reference"
        timeout = msg.get("timeout", 120.0)
        n = max(1, round(rate * duration))
        records: list[WriteRecord] = []
        skipped = unsent = 0
        errors: dict[str, int] = {}
        by_ward: dict[str, list[Resource]] = {}
        if mode == "api":
            resources: list[Resource] = msg["resources"]
            for r in resources:
                by_ward.setdefault(r.ward, []).append(r)
            for t in targets:
                key = (t["host"], t["port"])
                if key not in pools:
                    pools[key] = HttpPool(t["host"], t["port"], msg.get("pool", 32))
        wards: list[str] = msg.get("wards") or sorted(by_ward)
        pointers = dict.fromkeys(wards, 0)
        tasks: set[asyncio.Task[None]] = set()

        def pick(i: int) -> Resource | None:
            ward = wards[i % len(wards)]
            group = by_ward[ward]
            for k in range(len(group)):
                j = (pointers[ward] + k) % len(group)
                if not group[j].busy:
                    pointers[ward] = j + 1
                    return group[j]
            return None

        async def do_api(res: Resource, t_sched: float, target: int, token: str) -> None:
            nonlocal unsent
            t = targets[target]
            res.busy = True
            t_sent = time.monotonic()
            try:
                # Calls still queued for a connection when the phase is over are dropped, not sent
                # late; calls already sent are awaited (cancelling them would leave the server
                # committing changes the accounting no longer expects).
                status, key = await _write_api(pools[(t["host"], t["port"])], token, res, not_after)
            except NotSent:
                unsent += 1
                return
            except Exception as exc:  # a timeout or a reset: counted, the run goes on
                status, key = -1, None
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            finally:
                res.busy = False
            records.append(WriteRecord(key, res.ward, target, t_sched, t_sent, time.monotonic(), status))

        socks = []
        if mode == "reference":
            socks = [await control(t["host"], t["port"]) for t in targets]
        t0 = time.monotonic() + 0.1
        not_after = t0 + n / rate + msg.get("grace", 1.0)
        for i in range(n):
            t_sched = t0 + i / rate
            delay = t_sched - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if mode == "reference":
                ward = wards[i % len(wards)]
                seq = ref_seq.get(ward, 0) + 1
                ref_seq[ward] = seq
                data = orjson.dumps({"ward": ward, "seq": seq})
                t_sent = time.monotonic()
                for s in socks:  # every reference process holds part of the sockets
                    await s.send(data, text=True)
                records.append(
                    WriteRecord(("seq", ward, seq), ward, 0, t_sched, t_sent, time.monotonic(), 200)
                )
                continue
            res = pick(i)
            if res is None:
                skipped += 1
                continue
            task = asyncio.create_task(do_api(res, t_sched, i % len(targets), tokens[i % len(tokens)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        t_end = time.monotonic()
        if tasks:
            await asyncio.wait(list(tasks), timeout=timeout)
        for task in list(tasks):
            task.cancel()
        return {
            "records": records,
            "skipped": skipped,
            "unsent": unsent,
            "errors": errors,
            "t0": t0,
            "t0_wall": time.time() - (time.monotonic() - t0),  # to line the round up with server logs
            "t_end_sched": t0 + n / rate,
            "t_end_sent": t_end,
            "resources": msg.get("resources"),
            "ref_seq": dict(ref_seq),
        }

    while True:
        msg = await loop.run_in_executor(None, conn.recv)
        if msg["cmd"] == "quit":
            for p in pools.values():
                p.close()
            for c in controls.values():
                with contextlib.suppress(Exception):
                    await c.close()
            conn.send({"cpu": _cpu_self()})
            return
        if msg["cmd"] == "reset":
            for p in pools.values():
                p.close()
            pools.clear()
            for c in controls.values():
                with contextlib.suppress(Exception):
                    await c.close()
            controls.clear()
            ref_seq.clear()
            conn.send({"cpu": _cpu_self()})
            continue
        reply = await run(msg)
        reply["cpu"] = _cpu_self()
        conn.send(reply)


def writer_worker(conn: Any) -> None:
    raise_nofile()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(_writer_main(conn))


# --------------------------------------------------------------------------------------------
# The orchestrator's handles on the load generator processes
# --------------------------------------------------------------------------------------------


class Worker:
    """A load-generator child process driven over a pipe, one command at a time."""

    def __init__(self, target: Callable[[Any], None], name: str) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=target, args=(child,), name=name, daemon=True)
        self.process.start()
        self.name = name
        self.cpu = 0.0

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    def call(self, msg: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
        self.conn.send(msg)
        if not self.conn.poll(timeout):
            raise RuntimeError(f"{self.name}: no answer to {msg['cmd']} in {timeout}s")
        reply: dict[str, Any] = self.conn.recv()
        self.cpu = reply.get("cpu", self.cpu)
        return reply

    def send(self, msg: dict[str, Any]) -> None:
        self.conn.send(msg)

    def recv(self, timeout: float = 600.0) -> dict[str, Any]:
        if not self.conn.poll(timeout):
            raise RuntimeError(f"{self.name}: no answer in {timeout}s")
        reply: dict[str, Any] = self.conn.recv()
        self.cpu = reply.get("cpu", self.cpu)
        return reply

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self.process.is_alive():
                self.call({"cmd": "quit"}, timeout=10)
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


class Sockets:
    """Many WebSocket clients spread over `n` socket worker processes."""

    def __init__(self, n: int) -> None:
        self.workers = [Worker(socket_worker, f"sockets-{i}") for i in range(n)]

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def _all(self, msg: dict[str, Any], timeout: float = 600.0) -> list[dict[str, Any]]:
        for w in self.workers:
            w.send(msg)
        return [w.recv(timeout) for w in self.workers]

    def open(
        self, specs: list[SocketSpec], token: str, concurrency: int = 64, record: bool = True
    ) -> dict[str, Any]:
        n = len(self.workers)
        for i, w in enumerate(self.workers):
            w.send(
                {
                    "cmd": "open",
                    "specs": specs[i::n],
                    "token": token,
                    "concurrency": max(1, concurrency // n),
                    "record": record,
                }
            )
        replies = [w.recv() for w in self.workers]
        failures: dict[str, int] = {}
        for r in replies:
            for k, v in r["failures"].items():
                failures[k] = failures.get(k, 0) + v
        return {
            "opened": sum(r["opened"] for r in replies),
            "seconds": max(r["seconds"] for r in replies),
            "failures": failures,
            "handshake_p50_ms": median([r["handshake"]["p50"] for r in replies]),
            "handshake_p99_ms": max(r["handshake"]["p99"] for r in replies),
        }

    def mark(self) -> None:
        self._all({"cmd": "mark"})

    def record(self, on: bool) -> None:
        self._all({"cmd": "record", "on": on})

    def stats(self) -> list[dict[str, Any]]:
        return [
            dict(zip(STAT_FIELDS, s, strict=True)) for r in self._all({"cmd": "stats"}) for s in r["stats"]
        ]

    def take(self) -> tuple[list[Any], list[Any], dict[int, list[float]]]:
        """Arrival times of change frames, the probes' parsed frames, the probes' heartbeat times."""
        arrivals: list[Any] = []
        probes: list[Any] = []
        heartbeats: dict[int, list[float]] = {}
        for r in self._all({"cmd": "take"}):
            arrivals += r["arrivals"]
            probes += r["probes"]
            heartbeats.update(r["heartbeats"])
        return arrivals, probes, heartbeats

    def samples(self) -> list[list[tuple[float, int]]]:
        return [r["samples"] for r in self._all({"cmd": "samples"})]

    def wait(self, targets: dict[str, int], timeout: float) -> dict[str, Any]:
        replies = self._all({"cmd": "wait", "targets": targets, "timeout": timeout}, timeout + 30)
        return {"seconds": max(r["seconds"] for r in replies), "behind": sum(r["behind"] for r in replies)}

    def close(self, tag: str | None = None) -> None:
        """Close every socket, or only those opened with `tag`."""
        self._all({"cmd": "close", "tag": tag})

    def stop(self) -> None:
        for w in self.workers:
            w.stop()


def delivered_between(samples: list[list[tuple[float, int]]], t0: float, t1: float) -> float:
    """Change frames received by all sockets between t0 and t1 (interpolated from 0.25 s samples)."""

    def at(series: list[tuple[float, int]], t: float) -> float:
        if not series:
            return 0.0
        if t <= series[0][0]:
            return float(series[0][1])
        for (ta, ca), (tb, cb) in zip(series, series[1:], strict=False):
            if ta <= t <= tb:
                return ca + (cb - ca) * (t - ta) / max(tb - ta, 1e-9)
        return float(series[-1][1])

    return sum(at(s, t1) - at(s, t0) for s in samples)


# --------------------------------------------------------------------------------------------
# Putting a phase's numbers together
# --------------------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    name: str
    offered_rate: float
    duration: float
    writes_ok: int = 0
    writes_failed: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    unsent: int = 0
    achieved_rate: float = 0.0
    api_ms: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)  # scheduled call -> every socket
    probe_ms: dict[str, float] = field(default_factory=dict)  # scheduled call -> probe sockets
    stamp_ms: dict[str, float] = field(default_factory=dict)  # server time stamp -> probe (wall clock)
    expected_frames: int = 0
    delivered_frames: int = 0
    lost_frames: int = 0
    gaps: int = 0
    dupes: int = 0
    closed: dict[str, int] = field(default_factory=dict)
    frames_per_s: float = 0.0
    catch_up_s: float = 0.0
    unmatched_writes: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def analyse_phase(
    result: PhaseResult,
    write_reply: dict[str, Any],
    arrivals: list[Any],
    probes: list[Any],
    stats_before_close: list[dict[str, Any]],
    final_seqs: dict[str, int],
    heartbeats: dict[int, list[float]] | None = None,
) -> PhaseResult:
    records: list[WriteRecord] = write_reply["records"]
    ok = [r for r in records if 200 <= r.status < 300]
    result.writes_ok = len(ok)
    failed: dict[str, int] = {}
    for r in records:
        if not 200 <= r.status < 300:
            failed[str(r.status)] = failed.get(str(r.status), 0) + 1
    for k, v in write_reply["errors"].items():
        failed[k] = failed.get(k, 0) + v
    result.writes_failed = failed
    result.skipped = write_reply["skipped"]
    result.extra["started_at"] = round(write_reply.get("t0_wall", 0.0), 3)
    result.unsent = write_reply.get("unsent", 0)
    if ok:
        span = max(r.t_done for r in ok) - write_reply["t0"]
        result.achieved_rate = round(len(ok) / max(span, 1e-6), 1)
    result.api_ms = summary_ms(r.t_done - r.t_sched for r in ok)
    # key -> scheduled time; (ward, seq) -> scheduled time, learnt from the probes' full parses
    sched = {r.key: r.t_sched for r in ok if r.key is not None}
    # the reference's triggers name (ward, seq) themselves
    by_seq: dict[tuple[str, int], float] = {
        (r.key[1], r.key[2]): r.t_sched for r in ok if r.key is not None and r.key[0] == "seq"
    }
    probe_lat = []
    stamp_lat = []
    behind_hb, clear = [], []
    for key, ward, seq, t_arr, wall, at, idx in probes:
        t_s = sched.get(tuple(key))
        if t_s is None:
            t_s = by_seq.get((ward, seq))
        if t_s is None:
            continue
        by_seq[(ward, seq)] = t_s
        probe_lat.append(t_arr - t_s)
        # Did a heartbeat reach this socket while the change was in flight? Then the change
        # may have queued behind the process's heartbeat burst.
        hbs = heartbeats.get(idx, ()) if heartbeats else ()
        (behind_hb if any(t_s <= h <= t_arr for h in hbs) else clear).append(t_arr - t_s)
        if at:
            stamp = dt.datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()
            stamp_lat.append(max(0.0, wall - stamp))
    result.unmatched_writes = sum(1 for r in ok if r.key is not None and r.key[0] != "seq") - len(
        {tuple(p[0]) for p in probes if tuple(p[0]) in sched}
    )
    lat = []
    by_second: dict[int, list[float]] = collections.defaultdict(list)
    for ward, _server, series in arrivals:
        for seq, t_arr in series:
            t_s = by_seq.get((ward, seq))
            if t_s is not None:
                lat.append(t_arr - t_s)
                by_second[int(t_s - write_reply["t0"])].append(t_arr - t_s)
    result.latency_ms = summary_ms(lat)
    # Where in the round the tail is: a warm-up cost shows as a slow first second.
    result.extra["p99_ms_by_second"] = [summary_ms(by_second[s])["p99"] for s in sorted(by_second) if s >= 0]
    result.probe_ms = summary_ms(probe_lat)
    result.stamp_ms = summary_ms(stamp_lat)
    if heartbeats:
        result.extra["probe_ms_heartbeat_in_flight"] = summary_ms(behind_hb)
        result.extra["probe_ms_no_heartbeat_in_flight"] = summary_ms(clear)
    expected = delivered = gaps = dupes = 0
    closed: dict[str, int] = {}
    for s in stats_before_close:
        target = final_seqs.get(s["ward"], s["last_seq"])
        if s["open"]:
            expected += max(0, target - s["mark_seq"])
        else:
            closed[str(s["close_code"])] = closed.get(str(s["close_code"]), 0) + 1
            expected += max(0, s["last_seq"] - s["mark_seq"])
        delivered += s["changes"]
        gaps += s["gaps"]
        dupes += s["dupes"]
    result.expected_frames = expected
    result.delivered_frames = delivered
    result.lost_frames = max(0, expected - delivered) + 0
    result.gaps = gaps
    result.dupes = dupes
    result.closed = closed
    return result


# --------------------------------------------------------------------------------------------
# Orchestration helpers shared by the benchmarks
# --------------------------------------------------------------------------------------------


def patient_body(bed: str, n: int) -> dict[str, Any]:
    return {
        "bed": bed,
        "patient": {
            "mrn": f"BENCH{n:07d}",
            "given_name": "Alex",
            "family_name": f"Bench{n}",
            "dob": "1950-01-01",
            "sex": "unknown",
        },
        "consultant": "Dr Benchmark",
        "named_nurse": "Nurse Load",
        "edd": "2030-01-01",
    }


async def _admit_and_list(
    hosts: list[tuple[str, int]], token: str, wards: dict[str, list[str]], occupy_every: int, concurrency: int
) -> tuple[list[Resource], dict[str, Any]]:
    pools = [HttpPool(h, p, concurrency) for h, p in hosts]
    beds = [(w, b) for w, codes in wards.items() for i, b in enumerate(codes) if i % occupy_every == 1]
    sem = asyncio.Semaphore(concurrency)
    statuses: dict[int, int] = {}
    t0 = time.monotonic()

    async def admit(i: int, bed: str) -> None:
        async with sem:
            for _attempt in range(50):
                status, _, body = await pools[i % len(pools)].request(
                    "POST", "/api/v1/stays", token, patient_body(bed, i)
                )
                statuses[status] = statuses.get(status, 0) + 1
                if status != 429:  # the per-token write throttle: setting up, not measuring
                    break
                await asyncio.sleep(0.2)
            if status != 201:
                raise RuntimeError(f"admit into {bed}: {status} {body[:300]!r}")

    await asyncio.gather(*(admit(i, b) for i, (_w, b) in enumerate(beds)))
    admit_seconds = time.monotonic() - t0
    resources: list[Resource] = []
    bed_bytes: list[int] = []
    for w in wards:
        status, _, body = await pools[0].request("GET", f"/api/v1/wards/{w}", token)
        if status != 200:
            raise RuntimeError(f"GET ward {w}: {status}")
        for bed in orjson.loads(body)["beds"]:
            bed_bytes.append(len(orjson.dumps(bed)))
            stay = bed["stay"]
            if stay is None:
                resources.append(Resource("bed", w, bed["code"], bed["version"], bed["state"]))
            else:
                resources.append(Resource("stay", w, stay["id"], stay["version"], stay["news2"] or 0))
    for p in pools:
        p.close()
    return resources, {
        "admitted": len(beds),
        "seconds": round(admit_seconds, 1),
        # a change frame is its bed plus ~75 bytes of envelope (type, ward, seq, at)
        "frame_bytes_estimate": round(sum(bed_bytes) / max(len(bed_bytes), 1)) + 75,
        "per_s": round(len(beds) / max(admit_seconds, 1e-6), 1),
    }


def admit_and_list(
    hosts: list[tuple[str, int]],
    token: str,
    wards: dict[str, list[str]],
    occupy_every: int = 2,
    concurrency: int = 8,
) -> tuple[list[Resource], dict[str, Any]]:
    """Admit a patient into every `occupy_every`-th bed through the API; return what writes will change."""
    return asyncio.run(_admit_and_list(hosts, token, wards, occupy_every, concurrency))


#: Seconds spent sampling RSS, and settling around warm-ups (shortened by --quick).
PACE = {"rss_s": 3.0, "settle_s": 1.5}


def steady_rss(pids: Sequence[int], seconds: float | None = None) -> dict[int, int]:
    """Median VmRSS (KiB) of each process over a few samples."""
    seconds = PACE["rss_s"] if seconds is None else seconds
    samples: dict[int, list[int]] = {pid: [] for pid in pids}
    end = time.monotonic() + seconds
    while True:
        for pid in pids:
            samples[pid].append(proc_rss_kib(pid))
        if time.monotonic() >= end:
            break
        time.sleep(0.5)
    return {pid: int(median(v)) for pid, v in samples.items()}


def warm_up(sockets: Sockets, servers: Sequence[Service], token: str, wards: Sequence[str]) -> None:
    """Open and close a few sockets on each server so that first-use code and caches are loaded
    before the 0-socket RSS is taken. Other open sockets are left alone."""
    specs = [
        SocketSpec(
            i,
            "127.0.0.1",
            s.port,
            f"/ws/wards/{wards[i % len(wards)]}?view=clinical",
            wards[i % len(wards)],
            k,
            False,
            "warm-up",
        )
        for k, s in enumerate(servers)
        for i in range(8)
    ]
    sockets.open(specs, token, concurrency=8)
    time.sleep(PACE["settle_s"])
    sockets.close("warm-up")
    time.sleep(PACE["settle_s"])


def socket_specs(
    servers: Sequence[Service],
    wards: Sequence[str],
    n: int,
    probes_per_ward_server: int = 1,
    view: str = "clinical",
) -> list[SocketSpec]:
    """n sockets: socket i on ward i mod W, server (i div W) mod S; the first ones are probes."""
    specs = []
    nw, ns = len(wards), len(servers)
    for i in range(n):
        w = wards[i % nw]
        k = (i // nw) % ns
        probe = i < nw * ns * probes_per_ward_server
        specs.append(SocketSpec(i, "127.0.0.1", servers[k].port, f"/ws/wards/{w}?view={view}", w, k, probe))
    return specs


def scrape_metrics(service: Service) -> dict[str, float]:
    out: dict[str, float] = {}
    with contextlib.suppress(OSError, urllib.error.URLError):
        with urllib.request.urlopen(f"http://127.0.0.1:{service.port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("whiteboard_") and not line.startswith("whiteboard_commit_seconds_bucket"):
                    name, _, value = line.rpartition(" ")
                    with contextlib.suppress(ValueError):
                        out[name] = float(value)
    return out


def sqlite_seqs(db_path: Path) -> Callable[[], dict[str, int]]:
    import sqlite3

    def seqs() -> dict[str, int]:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
        try:
            return {code: int(seq) for code, seq in con.execute("SELECT code, seq FROM wards")}
        finally:
            con.close()

    return seqs


def postgres_seqs(url: str) -> Callable[[], dict[str, int]]:
    def seqs() -> dict[str, int]:
        out = {}
        rows = psql(url, "SELECT code, seq FROM wards").strip().splitlines()
        for row in rows:
            code, _, seq = row.partition("|")
            out[code] = int(seq)
        return out

    return seqs


def settled(read: Callable[[], dict[str, int]], timeout: float = 60.0) -> dict[str, int]:
    """`read()` once two reads 0.5 s apart agree (the servers have committed what they were given)."""
    last = read()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = read()
        if now == last:
            return now
        last = now
    return last


def run_phase(
    name: str,
    sockets: Sockets,
    writer: Worker,
    write_msg: dict[str, Any],
    final_seqs: Callable[[dict[str, Any]], dict[str, int]],
    meter: CpuMeter,
    catch_up_timeout: float = 15.0,
    record: bool = True,
) -> PhaseResult:
    """One write phase: mark the sockets, run the writer, wait for every socket to catch up, analyse."""
    sockets.mark()
    sockets.record(record)
    meter.start()
    reply = writer.call(write_msg, timeout=write_msg["duration"] + 300)
    finals = settled(lambda: final_seqs(reply))
    wait = sockets.wait(finals, catch_up_timeout)
    cpu = meter.stop()
    stats = sockets.stats()
    arrivals, probes, heartbeats = sockets.take()
    samples = sockets.samples()
    result = PhaseResult(name, write_msg["rate"], write_msg["duration"])
    analyse_phase(result, reply, arrivals, probes, stats, finals, heartbeats)
    window = reply["t_end_sched"] - reply["t0"]
    result.frames_per_s = round(delivered_between(samples, reply["t0"], reply["t_end_sched"]) / window, 1)
    result.catch_up_s = wait["seconds"]
    result.cpu = cpu
    result.extra["cpu_wall_s"] = round(meter.wall, 2)
    changes = sum(s["changes"] for s in stats)
    result.extra["behind_after_wait"] = wait["behind"]
    result.extra["mean_change_frame_bytes"] = round(
        sum(s["change_bytes"] for s in stats) / max(changes, 1), 1
    )
    result.extra["max_frame_gap_s"] = max((s["max_gap"] for s in stats if s["open"]), default=0.0)
    result.extra["sockets_open"] = sum(1 for s in stats if s["open"])
    result.extra["resources"] = reply.get("resources")
    result.extra["ref_seq"] = reply.get("ref_seq")
    return result


def phase_row(label: str, r: PhaseResult) -> list[Any]:
    return [
        label,
        f"{r.offered_rate:g}/s × {r.duration:g} s",
        f"{r.achieved_rate:,.1f}/s",
        r.latency_ms.get("p50", math.nan),
        r.latency_ms.get("p99", math.nan),
        r.latency_ms.get("max", math.nan),
        r.stamp_ms.get("p99", math.nan),
        f"{r.delivered_frames:,} / {r.expected_frames:,}",
        r.lost_frames,
        r.gaps,
        ", ".join(f"{k}×{v}" for k, v in r.closed.items()) or "0",
        ", ".join(f"{k}×{v}" for k, v in r.writes_failed.items()) or "0",
        f"{r.frames_per_s:,.0f}",
    ]


PHASE_HEADERS = [
    "run",
    "offered",
    "achieved",
    "p50 ms",
    "p99 ms",
    "max ms",
    "stamp→socket p99 ms",
    "frames delivered / expected",
    "lost",
    "seq gaps",
    "sockets closed",
    "failed writes",
    "frames/s",
]


# --------------------------------------------------------------------------------------------
# Profiling the servers with py-spy (optional: `--profile`)
# --------------------------------------------------------------------------------------------


class Profiler:
    """`py-spy record` attached to a server for as long as it runs (collapsed stacks, 'raw')."""

    def __init__(self, pid: int, out: Path, rate: int = 67, gil: bool = False) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.process = subprocess.Popen(
            [exe, "record", "-p", str(pid), "-o", str(out), "-f", "raw", "-r", str(rate)]
            + (["--gil"] if gil else []),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> Path:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.out


def collapsed_stacks(collapsed: Path) -> Iterator[tuple[str, int]]:
    """(stack, samples) for each line of a py-spy 'raw' profile; frames are joined by ';'."""
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            yield stack, int(count)


def top_frames(collapsed: Path, n: int = 25) -> list[tuple[str, float, float]]:
    """(frame, self %, inclusive %) of a py-spy 'raw' profile, the heaviest first by inclusive."""
    self_count: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for stack, k in collapsed_stacks(collapsed):
        total += k
        frames = stack.split(";")
        self_count[frames[-1]] = self_count.get(frames[-1], 0) + k
        for f in set(frames):
            incl[f] = incl.get(f, 0) + k
    rows = sorted(incl, key=lambda f: -incl[f])[:n]
    return [(f, 100 * self_count.get(f, 0) / max(total, 1), 100 * incl[f] / max(total, 1)) for f in rows]


def wait_quiet(max_wait: float, busy_below: float = 30.0, window: float = 5.0) -> dict[str, Any]:
    """Wait (at most `max_wait` s) until the whole machine is less than `busy_below` % busy over
    `window` s, so other tenants disturb the measurement less. Returns what it saw."""
    t0 = time.monotonic()
    busy = 100.0
    while True:
        b0, tot0 = machine_jiffies()
        time.sleep(window)
        b1, tot1 = machine_jiffies()
        busy = 100 * (b1 - b0) / max(tot1 - tot0, 1)
        waited = time.monotonic() - t0
        if busy < busy_below or waited >= max_wait:
            return {"waited_s": round(waited), "busy_pct": round(busy, 1), "quiet": busy < busy_below}
        print(
            f"  machine {busy:.0f} % busy; waiting for it to go quiet ({waited:.0f}/{max_wait:.0f} s)",
            flush=True,
        )


@contextlib.contextmanager
def profiled(enabled: bool, label: str, services: Sequence[Service], store: dict[str, Any]) -> Iterator[None]:
    """py-spy on each service for the length of the block; the heaviest frames go to `store`."""
    if not enabled:
        yield
        return
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", label)
    # --gil: only samples where a thread holds the GIL, i.e. where the Python CPU time goes
    # (threads blocked in a queue or on a socket would otherwise dominate the counts)
    profilers = [
        (
            s,
            Profiler(
                s.pid,
                RESULTS / "profiles" / f"{safe}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', s.name)}.txt",
                gil=True,
            ),
        )
        for s in services
    ]
    time.sleep(0.5)
    try:
        yield
    finally:
        for s, prof in profilers:
            path = prof.stop()
            if path.exists():
                store[f"{label} / {s.name}"] = {
                    "file": str(path.relative_to(ROOT)),
                    "top": [(f, round(a, 1), round(b, 1)) for f, a, b in top_frames(path, 60)],
                }


def combine(results: Sequence[PhaseResult], name: str) -> PhaseResult:
    """Rounds of the same phase as one row: median of each latency figure, counts summed."""
    first = results[0]
    out = PhaseResult(name, first.offered_rate, first.duration)

    def med(attr: str) -> dict[str, float]:
        keys = getattr(first, attr).keys()
        return {k: round(median([getattr(r, attr).get(k, math.nan) for r in results]), 2) for k in keys}

    out.api_ms, out.latency_ms, out.probe_ms, out.stamp_ms = (
        med("api_ms"),
        med("latency_ms"),
        med("probe_ms"),
        med("stamp_ms"),
    )
    for key in (
        "writes_ok",
        "skipped",
        "unsent",
        "expected_frames",
        "delivered_frames",
        "lost_frames",
        "gaps",
        "dupes",
    ):
        setattr(out, key, sum(getattr(r, key) for r in results))
    out.achieved_rate = median([r.achieved_rate for r in results])
    out.frames_per_s = median([r.frames_per_s for r in results])
    out.catch_up_s = max(r.catch_up_s for r in results)
    for r in results:
        for k, v in r.writes_failed.items():
            out.writes_failed[k] = out.writes_failed.get(k, 0) + v
        for k, v in r.closed.items():
            out.closed[k] = out.closed.get(k, 0) + v
    cpu_keys = first.cpu.keys()
    out.cpu = {k: median([r.cpu.get(k, 0.0) for r in results]) for k in cpu_keys}
    out.extra = {
        "rounds": len(results),
        "mean_change_frame_bytes": median([r.extra.get("mean_change_frame_bytes", 0.0) for r in results]),
        "max_frame_gap_s": max(r.extra.get("max_frame_gap_s", 0.0) for r in results),
        "p99_each_round": [r.latency_ms.get("p99") for r in results],
        "p50_each_round": [r.latency_ms.get("p50") for r in results],
    }
    for key in ("probe_ms_heartbeat_in_flight", "probe_ms_no_heartbeat_in_flight"):
        parts = [r.extra[key] for r in results if key in r.extra]
        if parts:
            out.extra[key] = {
                "n": sum(x["n"] for x in parts),
                "p50": median([x["p50"] for x in parts]),
                "p99": median([x["p99"] for x in parts]),
            }
    return out


def heartbeat_note(r: PhaseResult) -> str:
    """One sentence: how much worse changes fared when a heartbeat burst was in flight with them."""
    hb, clear = r.extra.get("probe_ms_heartbeat_in_flight"), r.extra.get("probe_ms_no_heartbeat_in_flight")
    if not hb or not clear or not (hb["n"] + clear["n"]):
        return ""
    if not hb["n"]:
        return (
            "No change arrived on a probe together with a heartbeat (heartbeats are spread over the period)."
        )
    share = 100 * hb["n"] / (hb["n"] + clear["n"])
    if hb["p50"] is None or hb["p50"] != hb["p50"]:  # too few of them for a percentile
        return (
            f"{hb['n']} of {hb['n'] + clear['n']:,} changes reached a probe together with a heartbeat"
            " (heartbeats are spread over the period)."
        )
    return (
        f"Changes during which a heartbeat reached the same probe ({share:.1f} % of probe frames): "
        f"p50 {hb['p50']:.1f} ms, p99 {hb['p99']:.1f} ms; the others: p50 {clear['p50']:.1f} ms, "
        f"p99 {clear['p99']:.1f} ms."
    )


def source_tree(mode: str, into: Path) -> dict[str, Any]:
    """Which `whiteboard` code the servers run.

    "head": the last commit, exported with `git archive` into `into` and put first on
    PYTHONPATH (ahead of the editable install), so edits in progress in the working tree
    cannot change a run half-way; "worktree": the working tree as it is."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = bool(
        subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "whiteboard", "web"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    )
    if mode == "worktree":
        return {"mode": mode, "commit": commit, "dirty": dirty, "env": {}}
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD", "whiteboard", "web"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return {"mode": mode, "commit": commit, "dirty": False, "env": {"PYTHONPATH": str(into)}}


def cpu_seconds(result: PhaseResult, prefix: str) -> float:
    """CPU seconds the processes whose meter names start with `prefix` used during the phase."""
    wall = result.extra.get("cpu_wall_s", 0.0)
    return sum(v for k, v in result.cpu.items() if k.startswith(prefix)) / 100 * wall


def apply_overrides(params: dict[str, Any], settings: Sequence[str]) -> dict[str, Any]:
    """`--set NAME=VALUE` on top of a parameter set (VALUE as JSON, else as a string)."""
    for item in settings:
        name, _, raw = item.partition("=")
        if name not in params:
            raise SystemExit(f"--set: unknown parameter {name!r} (known: {', '.join(sorted(params))})")
        try:
            params[name] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            params[name] = raw
    return params
