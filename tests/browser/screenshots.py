"""Take the screenshots in docs/screenshots/ from a demo hospital: `python -m tests.browser.screenshots`.

It runs `whiteboard demo` on a temporary database (the seeded two-site hospital with its
simulated feed), spreads the seed's events over the last week so the capacity chart has a
history, adds a user and a wall display with the CLI, then signs in with Chromium and saves
one PNG per screen (each kept under 300 KB).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.async_api import Page, async_playwright

from tests.browser.conftest import ARGS, CHROMIUM
from tests.browser.hospital import PASSWORD, SECRET
from tests.helpers import WHITEBOARD_EXE, ServerProcess, free_port

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
LIMIT = 300 * 1024


def spread_events_over_a_week(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM events ORDER BY id")]
        now = dt.datetime.now(dt.UTC)
        for n, event_id in enumerate(ids):
            moment = now - dt.timedelta(days=7) + dt.timedelta(days=6.9) * (n + 1) / len(ids)
            stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            conn.execute("UPDATE events SET at = ? WHERE id = ?", (stamp, event_id))


async def shoot(page: Page, name: str) -> None:
    path = OUT / f"{name}.png"
    await page.screenshot(path=str(path))
    size = path.stat().st_size
    print(f"{path.relative_to(OUT.parents[1])}: {size // 1024} KB")
    if size > LIMIT:
        raise SystemExit(f"{path} is {size} bytes, over the {LIMIT} limit")


async def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="wb-shots-"))
    port = free_port()
    env = {
        "WHITEBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'demo.db'}",
        "WHITEBOARD_SECRET_KEY": SECRET,
        "WHITEBOARD_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
    }
    command = [str(WHITEBOARD_EXE), "demo", "--host", "127.0.0.1", "--port", str(port)]
    demo = ServerProcess(env=env, cwd=folder, log_path=folder / "demo.log", port=port, command=command)
    await demo.astart(wait=120)  # the first start seeds the hospital
    demo.stop()
    spread_events_over_a_week(folder / "demo.db")

    def cli(*args: str, stdin: str = "") -> str:
        done = subprocess.run(
            [str(WHITEBOARD_EXE), *args],
            input=stdin,
            env=demo.env,
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        return done.stdout

    cli("user", "add", "sister.jones", "--role", "admin", stdin=PASSWORD + "\n")
    code = cli("display", "add", "--ward", "J12").strip().splitlines()[-1].split("#", 1)[1]
    code_portrait = cli("display", "add", "--ward", "C4").strip().splitlines()[-1].split("#", 1)[1]
    await demo.astart()
    base = demo.base_url
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            wall = await (await browser.new_context(viewport={"width": 1920, "height": 1080})).new_page()
            await wall.goto(f"{base}/displays/pair")
            await shoot(wall, "pairing")
            await wall.goto("about:blank")  # a fragment-only change would not load the page again
            await wall.goto(f"{base}/displays/pair#{code}")
            await wall.wait_for_selector(".tile")
            await wall.wait_for_timeout(1500)
            await shoot(wall, "wall-1080p")
            tall = await (await browser.new_context(viewport={"width": 1080, "height": 1920})).new_page()
            await tall.goto(f"{base}/displays/pair?profile=portrait-1080p#{code_portrait}")
            await tall.wait_for_selector(".tile")
            await tall.wait_for_timeout(1500)
            await shoot(tall, "wall-portrait")

            staff = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
            await staff.goto(f"{base}/login")
            await shoot(staff, "sign-in")
            await staff.get_by_label("Username").fill("sister.jones")
            await staff.get_by_label("Password").fill(PASSWORD)
            await staff.get_by_role("button", name="Sign in").click()
            await staff.wait_for_url(f"{base}/")
            await shoot(staff, "wards")
            await staff.goto(f"{base}/wards/J12")
            await staff.wait_for_selector(".bed-card")
            await staff.wait_for_timeout(1000)
            await shoot(staff, "tablet")
            await staff.locator(".bed-card--occupied").first.click()
            await staff.wait_for_timeout(500)
            await shoot(staff, "tablet-edit")
            await staff.goto(f"{base}/ipc")
            await staff.wait_for_selector("#flags tr")
            await staff.wait_for_timeout(1000)
            await shoot(staff, "ipc")
            await staff.goto(f"{base}/capacity")
            await staff.locator("#chart-title").scroll_into_view_if_needed()
            await staff.wait_for_timeout(500)
            await shoot(staff, "capacity")
            await browser.close()
    finally:
        demo.kill()


if __name__ == "__main__":
    if not CHROMIUM.exists():
        sys.exit("Chromium is missing: apt-get install chromium")
    asyncio.run(main())
