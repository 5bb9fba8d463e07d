"""The tablet board in a real browser: editing, the 412 path, moves by hand, roles, accessibility."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from playwright.async_api import Locator, Page, expect

from tests.browser.conftest import NewPage, sign_in
from tests.browser.hospital import Hospital

pytestmark = pytest.mark.browser


def card(page: Page, bed: str) -> Locator:
    return page.locator(f'.bed-card[data-bed="{bed}"]')


async def open_board(page: Page, hospital: Hospital, user: str, ward: str = "T3") -> None:
    await sign_in(page, hospital.server.base_url, user, f"/wards/{ward}")
    await expect(page.locator(".bed-card")).not_to_have_count(0)


async def test_signing_in_is_required(hospital: Hospital, new_page: NewPage) -> None:
    page = await new_page()
    base = hospital.server.base_url
    await page.goto(f"{base}/wards/T3")
    await page.wait_for_url(re.compile(r"/login\?next=/wards/T3$"))
    csrf = page.locator('input[name="form_token"]')
    assert await csrf.get_attribute("type") == "hidden"


async def test_an_edit_round_trips_through_the_api(hospital: Hospital, new_page: NewPage) -> None:
    stay = await hospital.admit("T3-B1-1", "Peter", "Wong")
    page = await new_page()
    await open_board(page, hospital, "nurse1")
    target = card(page, "T3-B1-1")
    await expect(target).to_contain_text("WONG, Peter")
    number = stay["patient"]["nhs_number"]
    await expect(target).to_contain_text(f"{number[:3]} {number[3:6]} {number[6:]}")
    csrf = await page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert csrf

    await target.click()
    panel = page.locator("#stay-panel")
    await expect(panel).to_be_visible()
    edd = (dt.date.today() + dt.timedelta(days=5)).isoformat()
    await panel.get_by_label("Expected discharge date (EDD)").fill(edd)
    await panel.get_by_label("Red day").check()
    await panel.get_by_label("NEWS2 score").fill("6")
    await panel.get_by_label("Named nurse").fill("Alex")
    await panel.get_by_label("Falls risk").check()
    await panel.get_by_label("Medically optimised").check()
    await panel.get_by_label("Discharge pathway").select_option("1")
    await panel.get_by_label("What is holding up discharge").fill("awaiting package of care")
    await panel.get_by_role("button", name="Save changes").click()
    await expect(panel.locator("#stay-status")).to_contain_text("Saved")

    saved = await hospital.stay("T3", stay["id"])
    assert saved["edd"] == edd
    assert saved["day_status"] == "red"
    assert saved["news2"] == 6
    assert saved["named_nurse"] == "Alex"
    assert saved["alerts"] == ["falls_risk"]
    assert saved["discharge"]["medically_optimised"] is True
    assert saved["discharge"]["pathway"] == 1
    assert saved["discharge"]["blockers"] == "awaiting package of care"
    assert saved["consultant"] == "Dr R Shah"  # untouched fields stay as they were
    await panel.get_by_role("button", name="Close").click()
    await expect(target).to_contain_text("NEWS2 6")
    await expect(target).to_contain_text("Red day")


async def test_a_stale_save_says_changed_by_someone_else_and_overwrites_nothing(
    hospital: Hospital, new_page: NewPage
) -> None:
    stay = await hospital.admit("T3-B1-2", "Mary", "Jones")
    page = await new_page()
    await open_board(page, hospital, "doctor1")
    await card(page, "T3-B1-2").click()
    panel = page.locator("#stay-panel")
    await panel.get_by_label("Named nurse").fill("Tablet Nurse")
    await panel.get_by_label("Green day").check()

    # Behind the tablet's back, someone else saves first.
    other_edd = (dt.date.today() + dt.timedelta(days=9)).isoformat()
    latest = await hospital.patch_stay(stay, {"edd": other_edd, "named_nurse": "Api Nurse"})

    await panel.get_by_role("button", name="Save changes").click()
    conflict = panel.locator("#conflict")
    await expect(conflict).to_be_visible()
    await expect(conflict).to_contain_text("Changed by someone else")
    await expect(conflict).to_contain_text("Tablet Nurse")  # what was not saved is listed
    await expect(panel.get_by_label("Named nurse")).to_have_value("Api Nurse")
    await expect(panel.get_by_label("Expected discharge date (EDD)")).to_have_value(other_edd)

    now: dict[str, Any] = await hospital.stay("T3", stay["id"])
    assert now["version"] == latest["version"]
    assert now["named_nurse"] == "Api Nurse"
    assert now["day_status"] is None

    # Saving again from the latest state works.
    await panel.get_by_label("Green day").check()
    await panel.get_by_role("button", name="Save changes").click()
    await expect(panel.locator("#stay-status")).to_contain_text("Saved")
    assert (await hospital.stay("T3", stay["id"]))["day_status"] == "green"


async def test_admit_transfer_and_discharge_by_hand(hospital: Hospital, new_page: NewPage) -> None:
    page = await new_page()
    await open_board(page, hospital, "nurse1")
    await card(page, "T3-B2-5").click()
    panel = page.locator("#bed-panel")
    await panel.get_by_label("Given name").fill("Hand")
    await panel.get_by_label("Family name").fill("Admitted")
    await panel.get_by_label("Hospital number (MRN)").fill("H123456")
    await panel.get_by_role("button", name="Admit patient").click()
    await expect(card(page, "T3-B2-5")).to_contain_text("ADMITTED, Hand")

    await card(page, "T3-B2-5").click()
    stay_panel = page.locator("#stay-panel")
    await stay_panel.get_by_label("Move to bed").select_option("T3-B2-6")
    await stay_panel.get_by_role("button", name="Move patient").click()
    await expect(card(page, "T3-B2-6")).to_contain_text("ADMITTED, Hand")
    await expect(card(page, "T3-B2-5")).to_contain_text("Dirty")

    await card(page, "T3-B2-6").click()
    await stay_panel.get_by_role("button", name="Discharge patient").click()
    await stay_panel.get_by_role("button", name="Yes, discharge now").click()
    await expect(card(page, "T3-B2-6")).to_contain_text("Dirty")
    await expect(card(page, "T3-B2-6")).not_to_contain_text("ADMITTED")

    # The bed is cleaned: a bed-state change through the bed panel.
    await card(page, "T3-B2-6").click()
    await panel.get_by_label("Available").check()
    await panel.get_by_role("button", name="Set bed state").click()
    await expect(card(page, "T3-B2-6")).to_contain_text("Available")


async def test_a_viewer_sees_no_way_to_change_anything(hospital: Hospital, new_page: NewPage) -> None:
    await hospital.admit("T3-B2-7", "Vera", "Viewed")
    page = await new_page()
    await open_board(page, hospital, "viewer1")
    await card(page, "T3-B2-7").click()
    panel = page.locator("#stay-panel")
    await expect(panel).to_be_visible()
    await expect(panel.get_by_role("button", name="Save changes")).to_have_count(0)
    await expect(panel.get_by_role("button", name="Discharge patient")).to_have_count(0)
    await expect(panel.locator("#flag-form")).to_have_count(0)
    assert await panel.get_by_label("Named nurse").is_disabled()


CONTRAST_SCRIPT = """
(root) => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
  };
  const lum = ({r, g, b}) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const over = (top, under) => ({
    r: top.r * top.a + under.r * (1 - top.a),
    g: top.g * top.a + under.g * (1 - top.a),
    b: top.b * top.a + under.b * (1 - top.a),
    a: 1,
  });
  const background = (el) => {
    const layers = [];
    for (let node = el; node; node = node.parentElement) {
      const style = getComputedStyle(node);
      if (style.backgroundImage !== 'none') return null;
      const bg = parse(style.backgroundColor);
      if (bg && bg.a > 0) { layers.push(bg); if (bg.a >= 1) break; }
    }
    let colour = {r: 255, g: 255, b: 255, a: 1};
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return colour;
  };
  const failures = [];
  let checked = 0;
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent.trim();
    const el = node.parentElement;
    if (!text || !el || el.closest('svg, script, style, title, option')) continue;
    if (!el.checkVisibility({checkOpacity: true, visibilityProperty: true})) continue;
    const rect = el.getBoundingClientRect();
    if (rect.width === 0 || rect.height === 0) continue;
    const style = getComputedStyle(el);
    const bg = background(el);
    const fg = parse(style.color);
    if (!bg || !fg) continue;
    const colour = over(fg, bg);
    const [hi, lo] = [lum(colour), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    checked += 1;
    if (ratio < 4.5) {
      const on = `rgb(${bg.r},${bg.g},${bg.b})`;
      failures.push(`${text.slice(0, 40)} (${style.color} on ${on}): ${ratio.toFixed(2)}`);
    }
  }
  return {checked, failures};
}
"""

LABEL_SCRIPT = """
(root) => [...root.querySelectorAll('input:not([type=hidden]), select, textarea')]
  .filter((el) => !(el.labels && el.labels.length))
  .filter((el) => !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
  .map((el) => el.outerHTML.slice(0, 120))
"""


async def test_the_tablet_page_is_accessible(hospital: Hospital, new_page: NewPage) -> None:
    stay = await hospital.admit("T3-SR-9", "Alice", "Access")
    await hospital.raise_flag(stay["patient"]["id"], "MRSA", "confirmed", "contact")
    await hospital.patch_stay(
        await hospital.stay("T3", stay["id"]), {"day_status": "green", "news2": 7, "alerts": ["dementia"]}
    )
    page = await new_page()
    await open_board(page, hospital, "nurse1")
    await expect(card(page, "T3-SR-9")).to_contain_text("MRSA")

    unlabelled = await page.evaluate(LABEL_SCRIPT, await page.query_selector("body"))
    assert unlabelled == [], unlabelled
    result = await page.evaluate(CONTRAST_SCRIPT, await page.query_selector("body"))
    assert result["checked"] > 30
    assert result["failures"] == [], result["failures"]

    # Every control can be reached and used from the keyboard: open a bed with Enter.
    await card(page, "T3-SR-9").focus()
    await page.keyboard.press("Enter")
    panel = page.locator("#stay-panel")
    await expect(panel).to_be_visible()
    result = await page.evaluate(CONTRAST_SCRIPT, await page.query_selector("#stay-panel"))
    assert result["failures"] == [], result["failures"]
    await page.keyboard.press("Escape")
    await expect(panel).to_be_hidden()

    # Touch targets: every button and control is at least 44px tall.
    small = await page.evaluate(
        """() => [...document.querySelectorAll(
              'button, select, .choice, input:not([type=hidden]):not([type=checkbox]):not([type=radio])')]
            .filter((el) => el.checkVisibility())
            .map((el) => [el.outerHTML.slice(0, 80), el.getBoundingClientRect().height])
            .filter(([, h]) => h > 0 && h < 44)"""
    )
    assert small == [], small
