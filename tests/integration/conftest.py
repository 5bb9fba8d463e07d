"""Shared pieces for tests that run a real `whiteboard serve` and talk to it like a client does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.helpers import WHITEBOARD_EXE, ServerProcess, free_port, timeout

SECRET = "integration-secret-key-0123456789abcdef0123456789"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database on each store we support: the embedded SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/board.db"
    url: str = request.getfixturevalue("pg_database_url")
    return url


def layout(wards: int = 4, beds: int = 6, site: str = "SJH") -> dict[str, Any]:
    """Ward codes W01.., beds W01-B1-1.. in bays of six; the last bed of each ward a side room."""
    ward_list = []
    for w in range(1, wards + 1):
        code = f"W{w:02d}"
        bed_list = []
        for b in range(1, beds + 1):
            side = b == beds
            bay = "SR" if side else f"B{(b - 1) // 6 + 1}"
            bed_list.append(
                {
                    "code": f"{code}-{'SR' if side else bay}-{b}",
                    "bay": bay,
                    "kind": "side_room" if side else "bay",
                }
            )
        ward_list.append(
            {"code": code, "name": f"Ward {code}", "specialty": "General Medicine", "beds": bed_list}
        )
    return {"sites": [{"code": site, "name": "Test General", "wards": ward_list}]}


def bed_code(ward: int, bed: int, beds: int = 6) -> str:
    code = f"W{ward:02d}"
    return f"{code}-SR-{bed}" if bed == beds else f"{code}-B{(bed - 1) // 6 + 1}-{bed}"


@dataclass
class Hospital:
    """A server process with its own folder and database, set up through the CLI."""

    workdir: Path
    env: dict[str, str]
    server: ServerProcess
    token: str = ""

    def cli(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(WHITEBOARD_EXE), *args],
            cwd=self.workdir,
            env={**self.server.env, **self.env},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"whiteboard {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc

    def new_token(self, name: str, role: str) -> str:
        return self.cli("token", "create", "--name", name, "--role", role).stdout.strip().splitlines()[-1]

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token or self.token}"} if token != "" else {}
        return httpx.AsyncClient(base_url=self.server.base_url, headers=headers, timeout=10)

    def ws_url(self, ward: str, view: str = "clinical", since: int | None = None) -> str:
        url = self.server.ws_url(f"/ws/wards/{ward}?view={view}")
        return url if since is None else f"{url}&since={since}"

    @property
    def origin(self) -> str:
        return self.server.base_url


def make_hospital(tmp: Path, *, wards: int = 4, beds: int = 6, env: dict[str, str] | None = None) -> Hospital:
    port = free_port()
    base_env = {
        "WHITEBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/wb.db",
        "WHITEBOARD_SECRET_KEY": SECRET,
        "WHITEBOARD_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
        "WHITEBOARD_LOG_LEVEL": "INFO",
        # Every write checks the process's cached boards against the store.
        "WHITEBOARD_VERIFY_BOARD_CACHE": "1",
        **(env or {}),
    }
    server = ServerProcess(env=base_env, cwd=tmp, log_path=tmp / f"server-{port}.log", port=port)
    hospital = Hospital(tmp, base_env, server)
    (tmp / "layout.json").write_text(json.dumps(layout(wards, beds)))
    hospital.cli("db", "upgrade")
    hospital.cli("layout", "load", str(tmp / "layout.json"))
    hospital.token = hospital.new_token("test-admin", "admin")
    return hospital


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hospital]:
    """One running server per test module, with four wards of six beds (W01..W04)."""
    h = make_hospital(tmp_path_factory.mktemp("hospital"))
    h.server.start()
    try:
        yield h
    finally:
        if h.server.running:
            h.server.stop()


@dataclass
class Socket:
    """A WebSocket client that keeps every JSON frame it receives, with its arrival time."""

    conn: ClientConnection
    frames: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        try:
            async for raw in self.conn:
                self.frames.append((time.perf_counter(), json.loads(raw)))
        except Exception:
            pass
        finally:
            self.closed.set()

    def mark(self) -> int:
        return len(self.frames)

    async def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], within: float = 5.0, start: int = 0
    ) -> dict[str, Any]:
        deadline = time.perf_counter() + timeout(within)
        i = start
        while True:
            while i < len(self.frames):
                frame = self.frames[i][1]
                i += 1
                with contextlib.suppress(KeyError, TypeError, IndexError):
                    if pred(frame):
                        return frame
            if time.perf_counter() > deadline:
                kinds = [(f.get("type"), f.get("seq")) for _, f in self.frames[start:]]
                raise AssertionError(f"no matching frame within {within}s; saw {kinds}")
            await asyncio.sleep(0.01)

    def changes(self, start: int = 0) -> list[dict[str, Any]]:
        return [f for _, f in self.frames[start:] if f["type"] == "change"]


@contextlib.asynccontextmanager
async def open_socket(
    url: str, *, token: str | None = None, origin: str | None = None, cookie: str | None = None, **kw: Any
) -> AsyncIterator[Socket]:
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if cookie:
        headers["Cookie"] = cookie
    conn = await connect(url, additional_headers=headers, origin=origin, open_timeout=timeout(10), **kw)  # type: ignore[arg-type]
    sock = Socket(conn)
    sock.task = asyncio.create_task(sock._read())
    try:
        yield sock
    finally:
        await conn.close()
        sock.task.cancel()
        with contextlib.suppress(BaseException):
            await sock.task


def patient(n: int, **over: Any) -> dict[str, Any]:
    """A made-up patient with a valid synthetic NHS number (999 range)."""
    numbers = [
        "9990000018",
        "9990000026",
        "9990000034",
        "9990000042",
        "9990000050",
        "9990000069",
        "9990000077",
        "9990000085",
        "9990000093",
        "9990000107",
        "9990000115",
        "9990000123",
    ]
    base = {
        "nhs_number": numbers[n % len(numbers)],
        "mrn": f"M{n:05d}",
        "given_name": f"Given{n}",
        "family_name": f"Family{n}",
        "dob": "1950-01-01",
        "sex": "female",
    }
    return {**base, **over}
