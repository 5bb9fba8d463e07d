"""A server outage in a real browser: "Not live since HH:MM" within 20 s, then recovery by itself."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import expect

from tests.browser.conftest import NewPage, running_hospital, sign_in
from tests.browser.hospital import Hospital
from tests.helpers import timeout

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
async def hospital(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hospital]:
    """A server of this module's own: the test stops and restarts it."""
    async with running_hospital(tmp_path_factory, pairing_codes=1) as h:
        yield h


async def test_a_stopped_server_shows_not_live_and_a_restarted_one_recovers(
    hospital: Hospital, new_page: NewPage
) -> None:
    base = hospital.server.base_url
    wall = await new_page(1920, 1080)
    await wall.goto(f"{base}/displays/pair#{hospital.pairing_code()}")
    await wall.wait_for_url(re.compile(r"/wards/T1/display"))
    tablet = await new_page()
    await sign_in(tablet, base, "nurse1", "/wards/T1")
    await expect(tablet.locator(".bed-card")).not_to_have_count(0)
    banners = [wall.locator("#stale-banner"), tablet.locator("#stale-banner")]
    for banner in banners:
        await expect(banner).to_be_hidden()

    london = ZoneInfo("Europe/London")
    stopped_at = dt.datetime.now(london)
    await asyncio.to_thread(hospital.server.stop)
    started = time.monotonic()
    for banner in banners:
        await expect(banner).to_have_text(
            re.compile(r"^Not live since \d\d:\d\d$"), timeout=timeout(20) * 1000
        )
    assert time.monotonic() - started < timeout(20)
    text = await banners[0].inner_text()
    allowed = {(stopped_at - dt.timedelta(minutes=m)).strftime("%H:%M") for m in (0, 1)}
    assert text.removeprefix("Not live since ") in allowed, (text, allowed)

    await hospital.server.astart()  # the same port
    for banner in banners:
        await expect(banner).to_be_hidden(timeout=timeout(20) * 1000)
    await hospital.admit("T1-B1-1", "Rosa", "Returned")
    await expect(wall.locator('.tile[data-bed="T1-B1-1"]')).to_contain_text("R.R.", timeout=timeout(2) * 1000)
    await expect(tablet.locator('.bed-card[data-bed="T1-B1-1"]')).to_contain_text("RETURNED, Rosa")

    # Revoked while its socket was down: back online, the wall finds it is no longer allowed
    # (the socket is refused, the API says 401) and goes back to the pairing page.
    with sqlite3.connect(hospital.folder / "wb.db") as db:
        (display_id,) = db.execute("SELECT id FROM displays WHERE paired_at IS NOT NULL").fetchone()
    await asyncio.to_thread(hospital.server.stop)
    await asyncio.to_thread(hospital.cli, "display", "revoke", display_id)
    await hospital.server.astart()
    await wall.wait_for_url(f"{base}/displays/pair", timeout=timeout(30) * 1000)


LIVE_HARNESS = """
async () => {
  const sockets = [];
  class FakeSocket extends EventTarget {
    static OPEN = 1;
    constructor(url) { super(); this.url = url; this.readyState = 1; sockets.push(this); }
    close() { this.readyState = 3; }
    frame(data) { this.dispatchEvent(new MessageEvent('message', {data: JSON.stringify(data)})); }
  }
  window.WebSocket = FakeSocket;
  const live = await import('/static/live.js');
  const seen = [];
  const client = new live.LiveWard({
    ward: 'T1', view: 'display',
    onSnapshot: (f) => seen.push(['snapshot', f.seq]),
    onChange: (f) => seen.push(['change', f.seq]),
  });
  client.start();
  const first = sockets[0];
  first.frame({type: 'snapshot', ward: 'T1', seq: 5, view: 'display', beds: [], unplaced: []});
  first.frame({type: 'change', ward: 'T1', seq: 6, at: 'x', bed: {}});
  first.frame({type: 'change', ward: 'T1', seq: 6, at: 'x', bed: {}});   // duplicate: dropped
  first.frame({type: 'change', ward: 'T1', seq: 5, at: 'x', bed: {}});   // old: dropped
  first.frame({type: 'change', ward: 'T1', seq: 8, at: 'x', bed: {}});   // gap: reconnect
  await new Promise((r) => setTimeout(r, 50));
  const second = sockets[1];
  second.frame({type: 'change', ward: 'T1', seq: 7, at: 'x', bed: {}});
  second.frame({type: 'change', ward: 'T1', seq: 8, at: 'x', bed: {}});
  second.frame({type: 'heartbeat', ward: 'T1', seq: 9, at: 'x'});        // ahead: reconnect
  await new Promise((r) => setTimeout(r, 50));
  client.stop();
  const delays = [];
  for (let attempt = 0; attempt < 8; attempt++) {
    delays.push([live.backoffDelay(attempt, () => 0), live.backoffDelay(attempt, () => 0.999999)]);
  }
  return {seen, urls: sockets.map((s) => s.url), delays};
}
"""


async def test_the_live_client_drops_duplicates_repairs_gaps_and_backs_off(
    hospital: Hospital, new_page: NewPage
) -> None:
    page = await new_page()
    await page.goto(f"{hospital.server.base_url}/login")
    result = await page.evaluate(LIVE_HARNESS)
    assert result["seen"] == [["snapshot", 5], ["change", 6], ["change", 7], ["change", 8]]
    base = f"ws://127.0.0.1:{hospital.port}/ws/wards/T1?view=display"
    assert result["urls"] == [base, f"{base}&since=6", f"{base}&since=8"]
    expected = [500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]
    for (low, high), middle in zip(result["delays"], expected, strict=True):
        assert low == pytest.approx(middle * 0.5) and high == pytest.approx(middle * 1.5, rel=1e-3)
