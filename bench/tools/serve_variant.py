"""`whiteboard serve` with candidate changes patched in at run time.

The benchmarks use it (`--variant reorder-window,gc-log`) to measure what a change to
`whiteboard/` would buy before anyone makes it. Nothing here is used in production; each
variant mirrors a change proposed in docs/benchmarks.md. Variants that proved their worth
(uvloop, TCP_NODELAY, staggered heartbeats, the patient catch-up, letting go of a socket's
first frames) are now in `whiteboard/` itself; their runs are in bench/results/experiments/.


- `reorder-window`: news that arrives ahead of a missing seq (two processes publish the same
  ward's news through their own Redis connections, so it can arrive out of order) is held for
  up to 50 ms for the missing news to arrive, before the ward reads the gap from the log.
- `gc-log`: no change in behaviour; every garbage collection of 2 ms or more is appended to
  `gc-pauses.log` in the server's working folder (generation, milliseconds, objects collected).
- `gc-freeze`: `gc.freeze()` once the server is up, and a higher generation-0 threshold, so
  the long-lived objects of start-up and of idle sockets are not traversed again and again.
- `ws-sansio`, `ws-wsproto`, `ws-websockets`: uvicorn's own WebSocket protocol of that name
  (`websockets-sansio`, `wsproto`, the legacy `websockets`) instead of the server's
  `whiteboard.wsprotocol.LeanWebSocketProtocol`. `wsproto` is not a dependency: put it on
  PYTHONPATH (`pip install --target DIR wsproto`) to run that one.
- `reader-pool-N`: SQLite engines with a pool of N connections and no overflow (SQLAlchemy's
  default for them is 5 + 10 overflow: a connect storm grows the reader pool to 15 aiosqlite
  connections, a thread and a page cache each, kept afterwards).
- `warm-pool-N`: N PostgreSQL connections opened when the hub starts (and handed back to the
  pool), so the first burst does not open them, with their start-up and type set-up, on the way.
- `gc-garbage`: the collections keep what they find unreachable (cyclic garbage), and every
  5 s a count of it by type is appended to `gc-garbage.log` and it is let go: what makes the
  collections that stop a process in a burst.
- `connect-log`: no change in behaviour; the time of every new database connection the pool
  opens is appended to `connects.log` in the server's working folder (a first burst that opens
  connections on its way shows there).
- `cprofile`: no change in behaviour; the whole server runs under cProfile and its stats go
  to `cprofile.out` in the server's working folder when it stops (read them with `pstats`);
  SIGUSR1 throws away what it has so far (`write_ceiling.py` sends it as each step starts).
  Deterministic, so it sees every call py-spy's sampling misses, at about twice the CPU.
- `keep-scope-headers`: the socket endpoint keeps the handshake's headers in its scope, as it
  did before it emptied them on accept.

Run: .venv/bin/python bench/tools/serve_variant.py --variant gc-log -- --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import sys
from typing import Any


def apply(variants: set[str]) -> None:
    if "reorder-window" in variants:
        import asyncio

        from whiteboard.fanout.hub import WardChannel

        original_handle = WardChannel._handle

        async def handle(self: WardChannel, item: Any) -> None:
            pending: dict[int, Any] = self.__dict__.setdefault("_pending", {})
            if item is not None and item.seq > self.last_seq + 1:
                pending[item.seq] = item
                if not self.__dict__.get("_waiting"):
                    self._waiting = True  # type: ignore[attr-defined]

                    def give_up() -> None:
                        self._waiting = False  # type: ignore[attr-defined]
                        if any(seq > self.last_seq for seq in pending):
                            self.inbox.put_nowait(None)  # still missing: read the log as before

                    asyncio.get_running_loop().call_later(0.05, give_up)
                return
            await original_handle(self, item)
            for seq in [seq for seq in pending if seq <= self.last_seq]:
                del pending[seq]
            while self.last_seq + 1 in pending:
                self.deliver(pending.pop(self.last_seq + 1))

        WardChannel._handle = handle  # type: ignore[method-assign]

    if "gc-log" in variants:
        import gc
        import time as _time

        started: dict[str, float] = {}
        log_file = open("gc-pauses.log", "a", buffering=1)  # noqa: SIM115 - open for the process's life

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started["t"] = _time.perf_counter()
            else:
                ms = (_time.perf_counter() - started.get("t", _time.perf_counter())) * 1000
                if ms >= 2.0:
                    log_file.write(
                        f"{_time.time():.3f} gen{info['generation']} {ms:.1f} ms {info['collected']}\n"
                    )

        gc.callbacks.append(on_gc)

    if "gc-freeze" in variants:
        import asyncio
        import gc

        from whiteboard.fanout.hub import Hub

        original_hub_start = Hub.start

        async def hub_start(self: Hub) -> None:
            await original_hub_start(self)

            async def freeze_later() -> None:
                await asyncio.sleep(2.0)
                gc.collect()
                gc.freeze()

            self._tasks.append(asyncio.create_task(freeze_later(), name="gc-freeze"))

        gc.set_threshold(50_000, 20, 100)
        Hub.start = hub_start  # type: ignore[method-assign]

    if "cprofile" in variants:
        import atexit
        import cProfile
        import signal
        import time as _time

        # Timed by the thread's own CPU clock, not the wall clock: on a busy machine a process
        # is often preempted right after it wakes another (a write to PostgreSQL's socket), and
        # wall-clock profiles charge that wait to whatever was running.
        profiling = [cProfile.Profile(_time.thread_time)]

        def dump(*_: Any) -> None:
            profiling[0].disable()
            profiling[0].dump_stats("cprofile.out")

        def start_afresh(*_: Any) -> None:
            profiling[0].disable()
            profiling[0] = cProfile.Profile(_time.thread_time)
            profiling[0].enable()

        def dump_and_exit(signum: int, _frame: Any) -> None:
            dump()
            raise SystemExit(128 + signum)

        # uvicorn re-raises SIGTERM once it has shut down, after putting back the handler it
        # found: this one, so the stats are written before the process goes.
        signal.signal(signal.SIGTERM, dump_and_exit)
        signal.signal(signal.SIGUSR1, start_afresh)
        atexit.register(dump)
        profiling[0].enable()

    if "gc-garbage" in variants:
        import asyncio
        import collections
        import gc
        import time as _time

        from whiteboard.fanout.hub import Hub as GarbageHub

        garbage_file = open("gc-garbage.log", "a", buffering=1)  # noqa: SIM115 - open for the process's life
        original_garbage_start = GarbageHub.start

        async def garbage_start(self: GarbageHub) -> None:
            await original_garbage_start(self)

            async def census() -> None:
                # What the collections find unreachable (cyclic garbage), by type: every
                # collection keeps it in gc.garbage, counted and let go every 5 s.
                gc.set_debug(gc.DEBUG_SAVEALL)
                while True:
                    await asyncio.sleep(5.0)
                    kinds = collections.Counter(type(o).__qualname__ for o in gc.garbage)
                    found = len(gc.garbage)
                    gc.garbage.clear()
                    garbage_file.write(f"{_time.time():.3f} {found} {kinds.most_common(12)}\n")

            self._tasks.append(asyncio.create_task(census(), name="gc-census"))

        GarbageHub.start = garbage_start  # type: ignore[method-assign]

    if "connect-log" in variants:
        import time as _time

        from sqlalchemy import event
        from sqlalchemy.pool import Pool

        connect_file = open("connects.log", "a", buffering=1)  # noqa: SIM115 - open for the process's life

        @event.listens_for(Pool, "connect")
        def on_connect(_dbapi_connection: Any, _record: Any) -> None:
            connect_file.write(f"{_time.time():.3f} connect\n")

    warm = [v for v in variants if v.startswith("warm-pool-")]
    if warm:
        from whiteboard.fanout.hub import Hub as WarmHub

        count = int(warm[0].removeprefix("warm-pool-"))
        original_start = WarmHub.start

        async def warm_start(self: WarmHub) -> None:
            await original_start(self)
            engine = self.repo.writer
            if engine.dialect.name != "sqlite":
                opened = [await engine.connect() for _ in range(count)]
                for conn in opened:
                    await conn.close()

        WarmHub.start = warm_start  # type: ignore[method-assign]

    protocols = {"ws-sansio": "websockets-sansio", "ws-wsproto": "wsproto", "ws-websockets": "websockets"}
    chosen = [protocols[v] for v in variants if v in protocols]
    if chosen:
        import whiteboard.server

        original_config = whiteboard.server.uvicorn_config

        def uvicorn_config(*args: Any, **kwargs: Any) -> Any:
            config = original_config(*args, **kwargs)
            config.ws = chosen[0]
            return config

        whiteboard.server.uvicorn_config = uvicorn_config  # type: ignore[assignment]

    if "keep-scope-headers" in variants:
        from starlette.websockets import WebSocket

        kept: list[Any] = []  # sockets are opened, not closed, in the memory runs
        original_accept = WebSocket.accept

        async def accept(self: WebSocket, *args: Any, **kwargs: Any) -> None:
            kept.append(self.scope["headers"])
            await original_accept(self, *args, **kwargs)

        WebSocket.accept = accept  # type: ignore[method-assign]

    pools = [v for v in variants if v.startswith("reader-pool-")]
    if pools:
        from sqlalchemy.ext import asyncio as sa_asyncio

        import whiteboard.store.engine as engine

        size = int(pools[0].removeprefix("reader-pool-"))
        original_create = sa_asyncio.create_async_engine

        def create_async_engine(url: Any, **kwargs: Any) -> Any:
            if str(url).startswith("sqlite"):
                kwargs.update(pool_size=size, max_overflow=0)
            return original_create(url, **kwargs)

        engine.create_async_engine = create_async_engine  # type: ignore[assignment]

    known = {
        *protocols,
        *pools,
        *warm,
        "keep-scope-headers",
        "reorder-window",
        "gc-log",
        "gc-freeze",
        "connect-log",
        "gc-garbage",
        "cprofile",
        "",
    }
    unknown = variants - known
    if unknown:
        raise SystemExit(f"unknown variant(s): {', '.join(sorted(unknown))}")


def main() -> None:
    args = sys.argv[1:]
    variants: set[str] = set()
    if args[:1] == ["--variant"]:
        variants = set(args[1].split(","))
        args = args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    apply(variants)
    from whiteboard.cli import main as whiteboard_main

    whiteboard_main(["serve", *args])


if __name__ == "__main__":
    main()
