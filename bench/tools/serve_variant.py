"""`whiteboard serve` with candidate changes patched in at run time.

The benchmarks use it (`--variant uvloop,release-first-frames`) to measure what a change to
`whiteboard/` would buy before anyone makes it. Nothing here is used in production; each
variant mirrors a change proposed in docs/benchmarks.md:

- `uvloop`: run the server on uvicorn's own loop factory (uvloop, installed with
  uvicorn[standard]) instead of `asyncio.run`'s default selector loop — i.e. make
  `whiteboard.server.run` call `server.run(sockets=[...])` instead of `asyncio.run(serve(...))`.
- `release-first-frames`: let go of a socket's first frames (its snapshot, up to ~20 KB of
  text) once they are sent, instead of keeping them alive for the socket's whole life.
- `patient-catch-up`: the hub's catch-up loop reads a ward's log only when the ward is still
  behind the seq the store had one tick earlier (news missing, not merely in flight), and
  ticks every 0.5 s instead of 1 s so a lost publish is still repaired within about a second.
- `gc-log`: no change in behaviour; every garbage collection of 2 ms or more is appended to
  `gc-pauses.log` in the server's working folder (generation, milliseconds, objects collected).
- `gc-freeze`: `gc.freeze()` once the server is up, and a higher generation-0 threshold, so
  the long-lived objects of start-up and of idle sockets are not traversed again and again.
- `staggered-heartbeats`: beat each ward at its own phase of the heartbeat period (1/25 of
  the wards every 0.2 s) instead of every socket of the process at the same instant, which
  queues one frame per socket ahead of any change that arrives just after.

Run: .venv/bin/python bench/tools/serve_variant.py --variant uvloop -- --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import sys
from typing import Any


def apply(variants: set[str]) -> None:
    import whiteboard.server as server_mod

    if "uvloop" in variants:
        import uvicorn

        def run(settings: Any, host: str, port: int) -> None:
            server = uvicorn.Server(server_mod.uvicorn_config(settings, host, port))
            server.run(sockets=[server_mod.listen_socket(host, port)])  # uvicorn's loop factory: uvloop

        server_mod.run = run

    if "release-first-frames" in variants:
        from whiteboard.fanout.hub import Hub

        original = Hub.pump

        async def pump(self: Hub, client: Any, initial: list[tuple[int, str]], start_seq: int) -> None:
            for _seq, text in initial:
                await client.sink.send_text(text)
            initial.clear()  # the caller holds the same list: the snapshot text is freed now
            await original(self, client, [], start_seq)

        Hub.pump = pump  # type: ignore[method-assign]

    if "staggered-heartbeats" in variants:
        import asyncio

        from whiteboard.fanout.hub import Hub

        original_start = Hub.start
        slices = 25

        async def staggered(self: Hub) -> None:
            k = 0
            while True:
                await asyncio.sleep(self.heartbeat_seconds / slices)
                for channel in list(self.channels.values()):
                    if hash(channel.ward) % slices == k:
                        channel.beat()
                k = (k + 1) % slices

        async def start(self: Hub) -> None:
            await original_start(self)
            for task in self._tasks:
                if task.get_name() == "hub-heartbeat":
                    task.cancel()
            self._tasks = [t for t in self._tasks if t.get_name() != "hub-heartbeat"]
            self._tasks.append(asyncio.create_task(staggered(self), name="hub-heartbeat-staggered"))

        Hub.start = start  # type: ignore[method-assign]

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

    if "patient-catch-up" in variants:
        from whiteboard.fanout.hub import Hub

        original_start_cu = Hub.start

        async def catch_up(self: Hub) -> None:
            if not self.channels:
                return
            await self._end_revoked()
            seqs = await self.repo.ward_seqs(list(self.channels))
            before: dict[str, int] = getattr(self, "_store_seqs_last_tick", {})
            for ward, seq in seqs.items():
                channel = self.channels.get(ward)
                if channel is None or seq <= channel.last_seq or not channel.inbox.empty():
                    continue
                if channel.last_seq < before.get(ward, 0):  # behind what the store had a tick ago
                    channel.inbox.put_nowait(None)
            self._store_seqs_last_tick = seqs  # type: ignore[attr-defined]

        async def start_cu(self: Hub) -> None:
            self.catch_up_seconds = min(self.catch_up_seconds, 0.5)
            await original_start_cu(self)

        Hub._catch_up = catch_up  # type: ignore[method-assign]
        Hub.start = start_cu  # type: ignore[method-assign]

    known = {
        "uvloop",
        "release-first-frames",
        "staggered-heartbeats",
        "patient-catch-up",
        "gc-log",
        "gc-freeze",
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
