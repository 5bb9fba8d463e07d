"""Watch a ward live from a terminal: prints each frame as it arrives.

.venv/bin/python scripts/watch.py J12 wbt_… [--view display] [--url ws://127.0.0.1:8000]
"""

from __future__ import annotations

import argparse
import asyncio
import json

from websockets.asyncio.client import connect


async def watch(url: str, ward: str, token: str, view: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(f"{url}/ws/wards/{ward}?view={view}", additional_headers=headers, max_size=None) as ws:
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "snapshot":
                taken = sum(1 for b in frame["beds"] if b["stay"])
                print(f"snapshot seq {frame['seq']}: {len(frame['beds'])} beds, {taken} occupied")
            elif frame["type"] == "change":
                bed = frame.get("bed") or {}
                stay = bed.get("stay") or {}
                who = (stay.get("patient") or {}).get("initials", "")
                where = bed.get("code", "(unplaced list)")
                print(f"change   seq {frame['seq']}: {where} {bed.get('state', '')} {who}")
            else:
                print(f"{frame['type']:<8} seq {frame['seq']} at {frame['at']}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ward")
    parser.add_argument("token")
    parser.add_argument("--view", default="clinical", choices=["clinical", "display"])
    parser.add_argument("--url", default="ws://127.0.0.1:8000")
    args = parser.parse_args()
    asyncio.run(watch(args.url.rstrip("/"), args.ward, args.token, args.view))


if __name__ == "__main__":
    main()
