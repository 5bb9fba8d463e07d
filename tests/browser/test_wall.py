"""The wall screen in a real browser: pairing, live changes, privacy, symbols, paging."""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest
from playwright.async_api import Locator, Page, WebSocket, expect

from tests.browser.conftest import NewPage, sign_in
from tests.browser.hospital import Hospital, nhs
from tests.helpers import timeout

pytestmark = pytest.mark.browser


async def pair(page: Page, hospital: Hospital, ward: str = "T1", query: str = "") -> str:
    code = hospital.pairing_code(ward)
    await page.goto(f"{hospital.server.base_url}/displays/pair{query}#{code}")
    await page.wait_for_url(re.compile(rf"/wards/{ward}/display"))
    await expect(page.locator("#waiting")).to_have_count(0)
    return code


def tile(page: Page, bed: str) -> Locator:
    return page.locator(f'.tile[data-bed="{bed}"]')


async def test_pairing_from_the_fragment_then_an_api_change_shows_within_a_second(
    hospital: Hospital, new_page: NewPage
) -> None:
    page = await new_page(1920, 1080)
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    code = await pair(page, hospital)

    # The code never left the browser: not in any request URL, not in the server's log.
    assert all(code not in url for url in requested), requested
    assert code not in hospital.server.log_tail(400)
    assert "#" not in page.url
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies["wb_display"]["httpOnly"] and cookies["wb_display"]["sameSite"] == "Lax"

    await expect(tile(page, "T1-B1-3")).to_contain_text("Free")
    started = time.monotonic()
    await hospital.admit("T1-B1-3", "Winifred", "Quayle")
    await expect(tile(page, "T1-B1-3")).to_contain_text("W.Q.", timeout=timeout(1) * 1000)
    assert time.monotonic() - started < timeout(1.5)
    await expect(page.locator("#sum-occupied")).not_to_have_text("0")


async def test_the_wall_never_holds_a_name_nhs_number_or_organism(
    hospital: Hospital, new_page: NewPage
) -> None:
    page = await new_page(1920, 1080)
    frames: list[str] = []

    def on_socket(ws: WebSocket) -> None:
        ws.on("framereceived", lambda payload: frames.append(payload if isinstance(payload, str) else ""))

    page.on("websocket", on_socket)
    number = nhs()
    stay = await hospital.admit("T1-B2-5", "Bartholomew", "Featherstonehaugh", number=number)
    await pair(page, hospital)
    await expect(tile(page, "T1-B2-5")).to_contain_text("B.F.")
    await hospital.raise_flag(stay["patient"]["id"], "NOROVIRUS", "confirmed", "contact")
    await hospital.patch_stay(
        await hospital.stay("T1", stay["id"]),
        {
            "alerts": ["falls_risk", "dnacpr", "allergy"],
            "discharge": {"blockers": "awaiting Featherstonehaugh family"},
        },
    )
    await expect(tile(page, "T1-B2-5").locator("svg[data-precaution=contact]")).to_have_count(1)
    await expect(tile(page, "T1-B2-5")).to_contain_text("FALLS")

    html = await page.content()
    text = await page.locator("body").inner_text()
    spaced = f"{number[:3]} {number[3:6]} {number[6:]}"
    for secret in (
        "Bartholomew",
        "Featherstonehaugh",
        number,
        spaced,
        "NOROVIRUS",
        "DNACPR",
        "dnacpr",
        stay["patient"]["mrn"],
    ):
        assert secret not in html, secret
        assert secret not in text, secret
    assert frames, "no WebSocket frames were seen"
    for frame in frames:
        for secret in (
            "Bartholomew",
            "Featherstonehaugh",
            number,
            "NOROVIRUS",
            "dnacpr",
            "allergy",
            "blockers",
            stay["patient"]["mrn"],
        ):
            assert secret not in frame, (secret, frame[:300])


async def test_an_ipc_flag_raised_on_the_ipc_board_appears_on_the_wall(
    hospital: Hospital, new_page: NewPage
) -> None:
    stay = await hospital.admit("T1-B1-4", "Ivy", "Ngata")
    wall = await new_page(1920, 1080)
    await pair(wall, hospital)
    symbols = tile(wall, "T1-B1-4").locator("svg[data-precaution]")
    await expect(symbols).to_have_count(0)

    ipc = await new_page(1280, 900)
    base = hospital.server.base_url
    await sign_in(ipc, base, "ipc1", "/ipc")
    await ipc.get_by_label("Ward", exact=True).select_option("T1")
    await expect(ipc.get_by_label("Patient", exact=True)).to_contain_text("NGATA")
    patient = await ipc.locator("#r-patient option", has_text="NGATA").get_attribute("value")
    await ipc.get_by_label("Patient", exact=True).select_option(patient)
    await ipc.get_by_label("Organism", exact=True).select_option("COVID19")
    await ipc.get_by_label("Precaution", exact=True).select_option("droplet")
    await ipc.get_by_label("Suspected").check()
    await ipc.get_by_role("button", name="Raise flag").click()

    droplet = tile(wall, "T1-B1-4").locator("svg[data-precaution=droplet]")
    await expect(droplet).to_have_count(1)
    assert await droplet.get_attribute("data-status") == "suspected"
    # Confirm it on the IPC board: the wall's symbol becomes solid.
    row = ipc.locator("tr", has_text="Ngata")
    await row.get_by_role("button", name=re.compile("Confirm")).click()
    await expect(droplet).to_have_attribute("data-status", "confirmed")
    assert stay["patient"]["initials"] == "IN"


async def test_a_ward_too_long_for_the_screen_is_paged(hospital: Hospital, new_page: NewPage) -> None:
    page = await new_page(1280, 420)
    await pair(page, hospital, query="?profile=landscape-1080p")
    indicator = page.locator("#page-indicator")
    await expect(indicator).to_have_text(re.compile(r"Page 1 of [2-9]"))
    first = await page.locator(".bay:not([hidden]) .bay__name").all_inner_texts()
    await page.keyboard.press("PageDown")
    await expect(indicator).to_have_text(re.compile(r"Page 2 of"))
    second = await page.locator(".bay:not([hidden]) .bay__name").all_inner_texts()
    assert first and second and set(first).isdisjoint(second)


async def test_profiles_change_the_layout(hospital: Hospital, new_page: NewPage) -> None:
    page = await new_page(1080, 1920)
    await pair(page, hospital, query="?profile=portrait-1080p")
    assert await page.locator("body").get_attribute("data-columns") == "4"
    assert "wall--portrait" in (await page.locator("body").get_attribute("class") or "")


async def test_edd_today_and_overdue_stand_out(hospital: Hospital, new_page: NewPage) -> None:
    today = dt.date.today()
    await hospital.admit("T1-B2-6", "Tess", "Today", edd=today)
    await hospital.admit("T1-B2-7", "Owen", "Overdue", edd=today - dt.timedelta(days=2))
    page = await new_page(1920, 1080)
    await pair(page, hospital)
    await expect(tile(page, "T1-B2-6").locator(".edd--today")).to_have_count(1)
    await expect(tile(page, "T1-B2-7").locator(".edd--overdue")).to_contain_text("Overdue")


async def test_a_staff_member_may_look_at_a_wall_without_pairing(
    hospital: Hospital, new_page: NewPage
) -> None:
    page = await new_page()
    base = hospital.server.base_url
    await page.goto(f"{base}/wards/T1/display")
    await page.wait_for_url(f"{base}/displays/pair")
    await sign_in(page, base, "nurse1", "/wards/T1/display")
    await expect(page.locator(".tile")).not_to_have_count(0)
