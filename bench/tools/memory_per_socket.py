"""Where the memory of an idle socket goes, in a `whiteboard serve` process (SQLite).

Starts the server under tracemalloc (bench/tools/traced_serve.py), opens N idle sockets
(clinical view) over W wards, and compares Python allocations and live objects before and
after, per socket. tracemalloc's own bookkeeping inflates RSS here: read the RSS figure from
bench/fanout_single.py, and this one for *where* the Python memory goes.

Run: .venv/bin/python bench/tools/memory_per_socket.py [--sockets 1000] [--wards 40]
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common as c


def _watcher_lines() -> range:
    tree = ast.parse((c.BENCH / "tools" / "traced_serve.py").read_text())
    watch = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "watch")
    return range(watch.lineno, (watch.end_lineno or watch.lineno) + 1)


WATCHER_LINES = _watcher_lines()


def snapshot(server: c.Service, out: Path, n: int) -> tuple[tracemalloc.Snapshot, dict[str, int]]:
    done = out / f"snap-{n}.done"
    (out / f"trigger-{n}").write_text("")
    deadline = time.monotonic() + 120
    while not done.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("no snapshot")
        time.sleep(0.2)
    snap = tracemalloc.Snapshot.load(str(out / f"snap-{n}.bin"))
    # The watcher thread's own allocations are not the server's. Match its lines only: the
    # server's stacks also start in traced_serve.py (main), and under uvloop they are shallow
    # enough for that frame to be kept, so matching the whole file dropped most of them.
    snap = snap.filter_traces(
        [
            tracemalloc.Filter(False, "*traced_serve.py", lineno=line, all_frames=True)
            for line in WATCHER_LINES
        ]
    )
    types = json.loads((out / f"snap-{n}.types.json").read_text())
    return snap, types


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--wards", type=int, default=40)
    parser.add_argument("--no-admit", action="store_true")
    parser.add_argument("--variant", default="", help="candidate changes (see bench/tools/serve_variant.py)")
    parser.add_argument("--source", choices=["head", "worktree"], default="head")
    args = parser.parse_args()
    c.raise_nofile()
    tmp = Path(tempfile.mkdtemp(prefix="wb-bench-mem-"))
    db = tmp / "whiteboard.db"
    source = c.source_tree(args.source, tmp / "src")
    env = c.base_env(
        {
            "WHITEBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
            "WHITEBOARD_SECRET_KEY": c.SECRET_KEY,
            "TRACED_SNAPSHOT_DIR": str(tmp),
            "TRACED_FRAMES": "12",
            "TRACED_VARIANT": args.variant,
            **source["env"],
        }
    )
    wards = c.write_layout(tmp / "layout.json", args.wards, 25)
    c.wb_cli(env, tmp, "layout", "load", str(tmp / "layout.json"))
    token = c.make_token(env, tmp, "bench", "nurse")
    port = c.free_port()
    cmd = [c.PYTHON, str(c.BENCH / "tools" / "traced_serve.py"), "--host", "127.0.0.1", "--port", str(port)]
    server = c.Service("traced", cmd, env, tmp, port)
    sockets = c.Sockets(1)
    try:
        server.start()
        if not args.no_admit:
            c.admit_and_list([("127.0.0.1", port)], token, wards)
        c.warm_up(sockets, [server], token, list(wards))
        snap0, types0 = snapshot(server, tmp, 0)
        rss0 = c.steady_rss([server.pid])[server.pid]
        opened = sockets.open(c.socket_specs([server], list(wards), args.sockets), token)["opened"]
        time.sleep(3)
        snap1, types1 = snapshot(server, tmp, 1)
        rss1 = c.steady_rss([server.pid])[server.pid]
    finally:
        sockets.stop()
        server.stop()
    traced0 = sum(s.size for s in snap0.statistics("filename"))
    traced1 = sum(s.size for s in snap1.statistics("filename"))
    print(
        f"{opened} sockets; RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB ({(rss1 - rss0) / opened:.1f} KiB/socket, "
        f"tracemalloc overhead included); Python allocations {traced0 / 2**20:.1f} -> {traced1 / 2**20:.1f} MiB "
        f"({(traced1 - traced0) / 1024 / opened:.1f} KiB/socket)\n"
    )
    print("## Live objects per socket (gc-tracked types, growth / sockets)\n")
    grown = sorted(((types1.get(k, 0) - types0.get(k, 0), k) for k in types1), reverse=True)
    for d, k in grown[:30]:
        if d > 0:
            print(f"{d / opened:7.2f}  {k}")
    print("\n## Allocation growth by file (KiB per socket)\n")
    for st in snap1.compare_to(snap0, "filename")[:20]:
        if st.size_diff > 0:
            print(f"{st.size_diff / 1024 / opened:7.2f}  {st.traceback[0].filename.replace(str(c.ROOT), '')}")
    print("\n## Allocation growth by line (KiB per socket)\n")
    for st in snap1.compare_to(snap0, "lineno")[:30]:
        if st.size_diff > 0:
            f = st.traceback[0]
            print(f"{st.size_diff / 1024 / opened:7.2f}  {f.filename.split('site-packages/')[-1]}:{f.lineno}")
    print(
        "\n## Allocation growth by call path: the first whiteboard/uvicorn/starlette frame (KiB per socket)\n"
    )
    by_origin: dict[str, int] = {}
    for st in snap1.compare_to(snap0, "traceback"):
        if st.size_diff <= 0:
            continue
        frames = [
            f
            for f in st.traceback
            if "/whiteboard/" in f.filename or "uvicorn" in f.filename or "starlette" in f.filename
        ]
        # the innermost frame of ours or the server stack that led to this allocation
        key = "other"
        if frames:
            f = frames[
                -1
            ]  # tracebacks run oldest -> most recent: the deepest frame of ours / the server stack
            key = f"{f.filename.split('site-packages/')[-1].replace(str(c.ROOT) + '/', '')}:{f.lineno}"
        by_origin[key] = by_origin.get(key, 0) + st.size_diff
    for key, size in sorted(by_origin.items(), key=lambda kv: -kv[1])[:25]:
        print(f"{size / 1024 / opened:7.2f}  {key}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
