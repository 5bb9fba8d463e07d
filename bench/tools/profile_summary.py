"""Summarise a py-spy 'raw' (collapsed stacks) profile of a whiteboard server by what the time
was spent on: the write path, the fanout's per-ward and per-socket parts, socket set-up, the
Redis broker, the hub's catch-up loop, and the rest.

Run: .venv/bin/python bench/tools/profile_summary.py bench/results/profiles/saturation-whiteboard-a.txt
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common as c

#: (bucket, substrings any of which marks a stack as belonging to it), first match wins
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    (
        "socket set-up (handshake, auth, snapshot)",
        ("_handshake", "first_frames", "Hub.join"),
    ),
    ("fanout, per socket: pump → send", ("Hub.pump", "StarletteSink", "_repair")),
    ("fanout, per ward: decode, render, queue to sockets", ("WardChannel", "_on_news", "decode_event")),
    ("hub catch-up / revocation loop", ("_catch_up", "_end_revoked", "Hub._every")),
    ("redis broker", ("redis/", "RedisBroker")),
    ("HTTP API (parse, auth, commit, respond)", ("RequestResponseCycle", "httptools_impl")),
    ("write thread (SQL)", ("Thread.run", "_bootstrap", "_worker")),
    ("uvicorn websocket protocol (pings, frames in)", ("websockets_sansio_impl",)),
]


def summarise(path: Path, top: int = 12) -> str:
    buckets: Counter[str] = Counter()
    leaves: dict[str, Counter[str]] = {}
    total = 0
    for stack, n in c.collapsed_stacks(path):
        frames = stack.split(";")
        if frames[-1].startswith(("EpollSelector.select", "select (")):
            continue  # idle
        total += n
        if not frames[0].startswith(("<module>", "Thread._bootstrap")):
            # SQLAlchemy's async layer runs the synchronous SQL code in greenlets: py-spy shows
            # those stacks with their own roots (Repository._attempt, Connection.execute, ...)
            name = "SQL in greenlets (transactions and reads via SQLAlchemy + asyncpg)"
        else:
            name = next((b for b, keys in BUCKETS if any(k in stack for k in keys)), "event loop and other")
        buckets[name] += n
        leaves.setdefault(name, Counter())[frames[-1]] += n
    out = [f"{path.name}: {total} busy samples"]
    for name, n in buckets.most_common():
        out.append(f"  {100 * n / max(total, 1):5.1f} %  {name}")
        for leaf, k in leaves[name].most_common(top if name.startswith("fanout, per socket") else 3):
            out.append(f"            {100 * k / max(total, 1):5.1f} %  {leaf}")
    return "\n".join(out)


def main() -> None:
    for arg in sys.argv[1:]:
        print(summarise(Path(arg)))
        print()


if __name__ == "__main__":
    main()
