"""Browser tests: Playwright's async API driving Debian's Chromium against a real server.

One browser for the whole session; each test gets a fresh context (no shared cookies). A page
that throws, or that the Content-Security-Policy had to refuse something on, fails its test.
Every test leaves a screenshot under test-artifacts/ whether it passed or not.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.browser.hospital import PASSWORD, Hospital
from tests.helpers import timeout

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# Assertions wait up to 10 s (scaled): a busy CI machine must not make a live screen look broken.
expect.set_options(timeout=timeout(10) * 1000)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: as root, apt-get install -y chromium (scripts/test does it)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(scope="session")
async def hospital(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hospital]:
    """One hospital and server shared by the browser tests (each module keeps to its own ward:
    T1 for the wall, T3 for the tablet), with T1 pairing codes made ahead. A module that stops
    its server defines a `hospital` of its own."""
    async with running_hospital(tmp_path_factory, pairing_codes=8) as h:
        yield h


@contextlib.asynccontextmanager
async def running_hospital(
    tmp_path_factory: pytest.TempPathFactory, pairing_codes: int = 0
) -> AsyncIterator[Hospital]:
    h = Hospital(tmp_path_factory.mktemp("hospital"))
    h.set_up(pairing_codes=pairing_codes)
    await h.start()
    try:
        yield h
    finally:
        h.stop()


class PageProblems:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self.errors.append(f"console: {msg.text}")
                if msg.type == "error" and "Content Security Policy" in msg.text
                else None
            ),
        )


NewPage = Callable[..., Awaitable[Page]]


@pytest.fixture
async def new_page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[NewPage]:
    """Open pages in fresh contexts: `await new_page(width=..., height=...)`."""
    contexts: list[BrowserContext] = []
    pages: list[Page] = []
    problems = PageProblems()

    async def make(width: int = 1280, height: int = 900) -> Page:
        context = await browser.new_context(viewport={"width": width, "height": height}, locale="en-GB")
        context.set_default_timeout(timeout(10) * 1000)
        contexts.append(context)
        page = await context.new_page()
        problems.watch(page)
        pages.append(page)
        return page

    try:
        yield make
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        for n, page in enumerate(pages):
            if not page.is_closed():
                # A screenshot is a courtesy: it must never hide the real failure.
                with contextlib.suppress(Exception):
                    await page.screenshot(path=str(ARTIFACTS / f"{name}-{n}.png"))
        for context in contexts:
            await context.close()
    assert not problems.errors, "page problems:\n" + "\n".join(problems.errors)


async def sign_in(page: Page, base_url: str, username: str, next_path: str = "/") -> None:
    await page.goto(f"{base_url}/login?next={next_path}")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base_url}{next_path}")
