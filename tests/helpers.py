"""Small helpers shared by the tests: ports, time-outs, polling and a `whiteboard serve` process."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

#: Multiplier for every time-out in the tests (slow machines: WHITEBOARD_TEST_TIMEOUT_SCALE=3).
TIMEOUT_UNIT: float = float(os.environ.get("WHITEBOARD_TEST_TIMEOUT_SCALE") or "1.0")

#: The `whiteboard` console script of the interpreter running the tests.
WHITEBOARD_EXE: Path = Path(sys.executable).parent / "whiteboard"


def timeout(seconds: float) -> float:
    """`seconds` scaled by WHITEBOARD_TEST_TIMEOUT_SCALE."""
    return seconds * TIMEOUT_UNIT


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_open(port: int, host: str = "127.0.0.1", wait: float = 0.2) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=wait):
            return True
    except OSError:
        return False


async def wait_until(
    predicate: Callable[[], object | Awaitable[object]],
    timeout: float,
    interval: float = 0.02,
    message: str | None = None,
) -> object:
    """Poll `predicate` (sync or async) until it returns something truthy, and return that.

    `timeout` is in seconds and is used as given: scale it with `timeout(...)` at the call
    site. Raises AssertionError when it runs out; exceptions from the predicate propagate.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = None
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        last = result
        if loop.time() >= deadline:
            what = message or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"timed out after {timeout:.2f}s waiting for {what} (last value: {last!r})")
        await asyncio.sleep(interval)


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<could not read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _inherited_env() -> dict[str, str]:
    # The developer's own WHITEBOARD_* settings must not leak into servers under test.
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("WHITEBOARD_") or key.startswith("WHITEBOARD_TEST_")
    }


class ServerProcess:
    """A `whiteboard serve` subprocess on 127.0.0.1:port, in a session of its own.

    `env` is laid over the test run's environment (minus its WHITEBOARD_* settings other
    than WHITEBOARD_TEST_*). stdout and stderr go to `log_path`; failures quote its tail.
    `command` replaces the whole command line (for tests of this class).
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        command: Sequence[str] | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port()
        self.cwd = cwd
        self.log_path = log_path
        self.env = {**_inherited_env(), **env}
        self.command: list[str] = (
            list(command)
            if command is not None
            else [str(WHITEBOARD_EXE), "serve", "--host", self.host, "--port", str(self.port), *extra_args]
        )
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- addresses -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://{self.host}:{self.port}/{path.lstrip('/')}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "server not started"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        if self._log is not None:
            self._log.flush()
        return _tail(self.log_path, lines)

    # -- life cycle ------------------------------------------------------------------------

    def _spawn(self) -> None:
        assert not self.running, "server already running"
        self._close_log()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _health_status(self, client: httpx.Client) -> int | None:
        try:
            return client.get(f"{self.base_url}/healthz").status_code
        except httpx.HTTPError:
            return None

    def _fail_start(self, why: str) -> None:
        tail = self.log_tail()
        self.kill()
        raise AssertionError(f"{' '.join(self.command)} {why}; log {self.log_path}:\n{tail}")

    def start(self, wait: float | None = None) -> Self:
        """Start and block until GET /healthz answers 200 (default wait: timeout(20))."""
        self._spawn()
        deadline = time.monotonic() + (wait if wait is not None else timeout(20))
        last: int | None = None
        with httpx.Client(timeout=1.0) as client:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    self._fail_start(f"exited with status {self.process.returncode} before it was healthy")
                last = self._health_status(client)
                if last == 200:
                    return self
                if time.monotonic() >= deadline:
                    self._fail_start(f"not healthy in time (last /healthz status: {last})")
                time.sleep(0.05)

    async def astart(self, wait: float | None = None) -> Self:
        """Like start(), without blocking the event loop while it waits."""
        self._spawn()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (wait if wait is not None else timeout(20))
        last: int | None = None
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    self._fail_start(f"exited with status {self.process.returncode} before it was healthy")
                try:
                    last = (await client.get(f"{self.base_url}/healthz")).status_code
                except httpx.HTTPError:
                    last = None
                if last == 200:
                    return self
                if loop.time() >= deadline:
                    self._fail_start(f"not healthy in time (last /healthz status: {last})")
                await asyncio.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, wait: float | None = None) -> int:
        """Send `sig` to the server and wait for it to exit; return its exit status.

        If it has not exited in time, its whole process group is killed and AssertionError
        raised (with the log tail).
        """
        if self.process is None:
            raise AssertionError("server was never started")
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(wait if wait is not None else timeout(15))
            except subprocess.TimeoutExpired:
                tail = self.log_tail()
                self.kill()
                raise AssertionError(
                    f"server did not exit after signal {sig}; killed. log {self.log_path}:\n{tail}"
                ) from None
        self._kill_group()
        self._close_log()
        return self.process.returncode

    def kill(self) -> int | None:
        """SIGKILL the server's whole process group and reap it; return its exit status."""
        if self.process is None:
            return None
        self._kill_group()
        self.process.wait()
        self._close_log()
        return self.process.returncode

    def _kill_group(self) -> None:
        # The server leads its own session/process group: take any children with it.
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
