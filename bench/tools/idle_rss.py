"""RSS per idle socket, and CPU per frame sent, for a few server arms A/B'd in turns.

Each arm is `NAME=SOURCE[:VARIANTS]`: SOURCE `head` (the last commit), `worktree`, or a folder
holding a copy of the `whiteboard` package (frozen while others edit the tree), VARIANTS
as bench/tools/serve_variant.py takes them. Every round starts each arm's server afresh (one
SQLite database for all), in a rotated order, and measures what bench/fanout_single.py does
for idle memory: VmRSS after a warm-up and with N idle sockets, divided by N; then, with
`--rate`, the server's CPU per frame while changes go out to those sockets. Medians over the
rounds; raw figures to bench/results/experiments/idle_rss-NAMES.json.

Run: .venv/bin/python bench/tools/idle_rss.py --arm base=head --arm lean=worktree [--sockets 1000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common as c


def measure(
    server: c.Service,
    sockets: c.Sockets,
    writer: c.Worker,
    token: str,
    wards: list[str],
    args: Any,
    state: dict[str, Any],
) -> dict[str, Any]:
    meter = c.CpuMeter({"server": lambda: [server.pid]})
    c.warm_up(sockets, [server], token, wards)
    rss0 = c.steady_rss([server.pid])[server.pid]
    meter.start()
    opened = sockets.open(c.socket_specs([server], wards, args.sockets), token)["opened"]
    connect = meter.stop()
    time.sleep(args.idle)
    rss1 = c.steady_rss([server.pid])[server.pid]
    out: dict[str, Any] = {
        "sockets": opened,
        "rss0_kib": rss0,
        "rss1_kib": rss1,
        "kib_per_socket": round((rss1 - rss0) / max(opened, 1), 2),
        "connect_cpu_ms_per_socket": round(connect["server"] / 100 * meter.wall * 1000 / max(opened, 1), 3),
    }
    if args.rate:
        msg = {
            "cmd": "write",
            "mode": "api",
            "targets": [{"host": "127.0.0.1", "port": server.port}],
            "token": token,
            "tokens": state["writer_tokens"],
            "resources": state["resources"],
            "rate": args.rate,
            "duration": args.duration,
        }
        r = c.run_phase("frames", sockets, writer, msg, lambda _r: state["seqs"](), meter)
        state["resources"] = r.extra.pop("resources")
        cpu_s = r.cpu["server"] / 100 * r.extra["cpu_wall_s"]
        out.update(
            frames=r.delivered_frames,
            lost=r.lost_frames,
            frames_per_s=r.frames_per_s,
            achieved_rate=r.achieved_rate,
            p99_ms=r.latency_ms.get("p99"),
            server_cpu_pct=r.cpu["server"],
            cpu_us_per_frame=round(cpu_s * 1e6 / max(r.delivered_frames, 1), 2),
        )
    sockets.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arm", action="append", required=True, metavar="NAME=SOURCE[:VARIANTS]")
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--wards", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds idle before the RSS is read")
    parser.add_argument("--rate", type=float, default=0.0, help="changes/s after the idle RSS (0: none)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--socket-procs", type=int, default=1)
    args = parser.parse_args()
    c.raise_nofile()
    tmp = Path(tempfile.mkdtemp(prefix="wb-bench-idle-"))
    arms: list[tuple[str, dict[str, str], str]] = []
    for spec in args.arm:
        name, _, rest = spec.partition("=")
        source, _, variant = rest.partition(":")
        if source in ("head", "worktree"):
            arm_env = c.source_tree(source, tmp / f"src-{name}")["env"]
        else:  # a folder holding a `whiteboard` package: a tree frozen for the whole A/B
            arm_env = {"PYTHONPATH": str(Path(source).resolve())}
        arms.append((name, arm_env, variant))
    db = tmp / "whiteboard.db"
    env = c.base_env(
        {"WHITEBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{db}", "WHITEBOARD_SECRET_KEY": c.SECRET_KEY}
    )
    wards = c.write_layout(tmp / "layout.json", args.wards, 25)
    c.wb_cli(env, tmp, "layout", "load", str(tmp / "layout.json"))
    token = c.make_token(env, tmp, "bench", "nurse")
    state: dict[str, Any] = {
        "writer_tokens": [c.make_token(env, tmp, "writer0", "nurse")],
        "seqs": c.sqlite_seqs(db),
    }
    sockets = c.Sockets(args.socket_procs)
    writer = c.Worker(c.writer_worker, "writer")
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in arms}
    try:
        for i in range(args.rounds):
            for k in range(len(arms)):
                name, arm_env, variant = arms[(i + k) % len(arms)]
                server = c.Service.whiteboard(f"{name}-{i}", {**env, **arm_env}, tmp, variant)
                try:
                    server.start()
                    if "resources" not in state:
                        state["resources"], _ = c.admit_and_list([("127.0.0.1", server.port)], token, wards)
                    r = measure(server, sockets, writer, token, list(wards), args, state)
                finally:
                    server.stop()
                results[name].append(r)
                print(f"round {i + 1} {name}: {r}", flush=True)
    finally:
        sockets.stop()
        writer.stop()
    keys = ["kib_per_socket", "connect_cpu_ms_per_socket", "cpu_us_per_frame", "frames_per_s", "p99_ms"]
    rows = []
    for name, runs in results.items():
        rows.append(
            [name, *(c.median([r[k] for r in runs if r.get(k) is not None] or [float("nan")]) for k in keys)]
        )
    print(c.table(["arm", "KiB/socket", "connect CPU ms/socket", "CPU µs/frame", "frames/s", "p99 ms"], rows))
    label = "+".join(name for name, _, _ in arms)
    path = c.save_results(
        f"idle_rss-{label}-{args.sockets}",
        {"args": vars(args), "machine": c.machine(), "results": results},
        experiment=True,
    )
    print(f"raw: {path}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
