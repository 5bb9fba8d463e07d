"""`whiteboard serve` with tracemalloc: creating $TRACED_SNAPSHOT_DIR/trigger-N makes it dump
snapshot N to snap-N.bin (allocations) and snap-N.types.json (live gc objects by type).

Tracing starts at the first trigger (tracing the start-up would make it minutes long), so
later snapshots show what was allocated, and is still alive, since then. A watcher thread
polls for the trigger files (signals are not delivered promptly under uvloop).

Used by bench/tools/memory_per_socket.py. Run: .venv/bin/python bench/tools/traced_serve.py --port 8000
"""

from __future__ import annotations

import collections
import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path

FRAMES = int(os.environ.get("TRACED_FRAMES", "30"))


def watch(out: Path) -> None:
    n = 0
    while True:
        if (out / f"trigger-{n}").exists():
            if not tracemalloc.is_tracing():
                tracemalloc.start(FRAMES)
            gc.collect()
            path = out / f"snap-{n}.bin"
            tracemalloc.take_snapshot().dump(str(path))
            types = collections.Counter(
                f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects()
            )
            path.with_suffix(".types.json").write_text(json.dumps(dict(types.most_common(300))))
            path.with_suffix(".done").write_text("ok")
            n += 1
        time.sleep(0.2)


def main() -> None:
    out = Path(os.environ.get("TRACED_SNAPSHOT_DIR", "."))
    threading.Thread(target=watch, args=(out,), daemon=True).start()
    variant = os.environ.get("TRACED_VARIANT")
    if variant:  # candidate changes, as bench/tools/serve_variant.py applies them
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from serve_variant import apply

        apply(set(variant.split(",")))
    from whiteboard.cli import main as whiteboard_main

    whiteboard_main(["serve", *sys.argv[1:]])


if __name__ == "__main__":
    main()
