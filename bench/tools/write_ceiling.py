"""How many API writes a second the servers take, by concurrency (closed loop, no sockets).

Starts N `whiteboard serve` processes (default 2) on a private PostgreSQL and Redis (or SQLite
with --sqlite), loads 80 wards × 25 beds with every second bed occupied, then for each
concurrency runs that many writers back to back for a few seconds (PATCH bed state / stay
news2 with If-Match, spread over the wards and the processes, over several tokens so the
per-token write throttle does not bind) and reports calls/s, latency and CPU. When calls/s
stop growing with concurrency while the servers' CPU stays low, something other than CPU —
a lock, a pool, a single thread — is the limit.

With --hot-wards N only the first N wards are written to: every write queues on a few wards'
row locks, as in the saturation ramp of bench/fanout_cluster.py, so calls/s is the most one
ward takes across the processes.

Run: .venv/bin/python bench/tools/write_ceiling.py [--servers 2] [--sqlite] [--seconds 8] [--hot-wards N] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common as c


async def closed_loop(
    servers: list[c.Service], tokens: list[str], resources: list[c.Resource], concurrency: int, seconds: float
) -> dict[str, Any]:
    pools = [c.HttpPool("127.0.0.1", s.port, concurrency) for s in servers]
    free = list(resources)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + seconds

    async def worker(k: int) -> None:
        i = k
        while time.monotonic() < deadline:
            res = free.pop(0)
            t0 = time.monotonic()
            try:
                status, _key = await c._write_api(pools[i % len(pools)], tokens[i % len(tokens)], res)
            finally:
                free.append(res)
            latencies.append(time.monotonic() - t0)
            statuses[status] = statuses.get(status, 0) + 1
            i += concurrency

    t0 = time.monotonic()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    wall = time.monotonic() - t0
    for p in pools:
        p.close()
    ok = statuses.get(200, 0)
    return {
        "concurrency": concurrency,
        "calls_s": round(ok / wall, 1),
        "statuses": statuses,
        **c.summary_ms(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--sqlite", action="store_true", help="one process on SQLite instead")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", default="1,2,4,8,16,32,64")
    parser.add_argument(
        "--tokens",
        type=int,
        default=32,
        help="writers' tokens: enough that the per-token write throttle does not bind (with 8, "
        "a process answering ~2,000 writes a second hit it: 429s in the statuses column)",
    )
    parser.add_argument(
        "--hot-wards", type=int, default=0, help="write to only the first N wards (the lock-bound case)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (server logs, cprofile.out)"
    )
    parser.add_argument("--source", choices=["head", "worktree"], default="head")
    parser.add_argument("--variant", default="", help="candidate changes (bench/tools/serve_variant.py)")
    args = parser.parse_args()
    c.raise_nofile()
    tmp = Path(tempfile.mkdtemp(prefix="wb-bench-writes-"))
    source = c.source_tree(args.source, tmp / "src")
    with contextlib.ExitStack() as stack:
        if args.sqlite:
            env = c.base_env(
                {
                    "WHITEBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'wb.db'}",
                    "WHITEBOARD_SECRET_KEY": c.SECRET_KEY,
                    **source["env"],
                }
            )
            n_servers, store_pids = 1, list
        else:
            db_url, pg_pids = stack.enter_context(c.postgres_database())
            redis_url, prefix, _redis_pids = stack.enter_context(c.redis_server())
            env = c.base_env(
                {
                    "WHITEBOARD_DATABASE_URL": db_url,
                    "WHITEBOARD_REDIS_URL": redis_url,
                    "WHITEBOARD_REDIS_PREFIX": prefix,
                    "WHITEBOARD_SECRET_KEY": c.SECRET_KEY,
                    **source["env"],
                }
            )
            n_servers, store_pids = args.servers, pg_pids
        wards = c.write_layout(tmp / "layout.json", 80, 25)
        c.wb_cli(env, tmp, "layout", "load", str(tmp / "layout.json"))
        tokens = [c.make_token(env, tmp, f"writer{i}", "nurse") for i in range(args.tokens)]
        servers = [c.Service.whiteboard(f"whiteboard {k}", env, tmp, args.variant) for k in range(n_servers)]
        try:
            for s in servers:
                s.start()
            listed, _ = c.admit_and_list([("127.0.0.1", s.port) for s in servers], tokens[0], wards)
            # Round-robin over the wards, as the burst sends them: listed ward by ward, every
            # writer would be on the same ward at once, queueing on its lock.
            by_ward: dict[str, list[c.Resource]] = {}
            for r in listed:
                by_ward.setdefault(r.ward, []).append(r)
            if args.hot_wards:
                by_ward = dict(list(by_ward.items())[: args.hot_wards])
            resources = [
                r for group in itertools.zip_longest(*by_ward.values()) for r in group if r is not None
            ]
            meter = c.CpuMeter(
                {
                    **{s.name: (lambda s=s: [s.pid]) for s in servers},
                    "database": store_pids,
                    "this client": lambda: [],
                }
            )
            print(
                f"commit {source['commit']}; {n_servers} process(es) on {'SQLite' if args.sqlite else 'PostgreSQL'}"
            )
            print("| concurrency | calls/s | p50 ms | p99 ms | max ms | statuses | CPU % (one core) |")
            print("|---|---|---|---|---|---|---|")
            for conc in (int(x) for x in args.concurrency.split(",")):
                if "cprofile" in args.variant:
                    for s in servers:
                        os.kill(s.pid, signal.SIGUSR1)  # profile this step only
                meter.start()
                r = asyncio.run(closed_loop(servers, tokens, resources, conc, args.seconds))
                cpu = meter.stop()
                cpu_text = ", ".join(f"{k} {v:.0f}" for k, v in cpu.items() if k != "this client")
                print(
                    f"| {conc} | {r['calls_s']} | {r['p50']} | {r['p99']} | {r['max']} | {r['statuses']} | {cpu_text} |",
                    flush=True,
                )
        finally:
            for s in servers:
                s.stop()
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
