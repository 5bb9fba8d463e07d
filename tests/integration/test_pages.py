"""Pages, sign-in, pairing and their guards against a real `whiteboard serve` (no browser).

The server believes X-Forwarded-For from 127.0.0.1 (WHITEBOARD_TRUSTED_PROXIES), so each test
can speak from a client address of its own and the throttles of one test never touch another.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.browser.hospital import PASSWORD, Hospital
from whiteboard.routes.profiles import check_profile, profiles_dir
from whiteboard.routes.throttle import SlidingWindow

_addresses = itertools.count(1)


def address() -> str:
    n = next(_addresses)
    return f"10.9.{n // 250}.{n % 250 + 1}"


@pytest.fixture(scope="module")
async def hospital(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hospital]:
    h = Hospital(tmp_path_factory.mktemp("pages"), extra_env={"WHITEBOARD_TRUSTED_PROXIES": "127.0.0.1"})
    h.set_up(pairing_codes=7)
    await h.start()
    try:
        yield h
    finally:
        h.stop()


def client(hospital: Hospital, ip: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=hospital.server.base_url,
        headers={"X-Forwarded-For": ip or address(), "Accept": "text/html"},
        follow_redirects=False,
        timeout=10,
    )


def hidden(html: str, name: str) -> str:
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden field {name}"
    return match.group(1)


async def login(
    c: httpx.AsyncClient, username: str, password: str = PASSWORD, next_path: str = ""
) -> httpx.Response:
    page = await c.get(f"/login?next={next_path}" if next_path else "/login")
    token = hidden(page.text, "form_token")
    return await c.post(
        "/login",
        data={
            "username": username,
            "password": password,
            "form_token": token,
            "next": hidden(page.text, "next"),
        },
    )


async def pair_post(c: httpx.AsyncClient, code: str, *, with_token: bool = True) -> httpx.Response:
    page = await c.get("/displays/pair")
    data = {"code": code}
    if with_token:
        data["form_token"] = hidden(page.text, "form_token")
    return await c.post("/displays/pair", data=data)


# --- sign-in -----------------------------------------------------------------------------------------


async def test_sign_in_sets_a_session_cookie_and_pages_carry_the_csrf_token(hospital: Hospital) -> None:
    async with client(hospital) as c:
        page = await c.get("/login")
        assert page.status_code == 200
        for field in ('name="username"', 'name="password"', 'type="hidden" name="form_token"'):
            assert field in page.text
        response = await login(c, "nurse1")
        assert response.status_code == 303
        assert response.headers["location"] == "/"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("wb_session=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax") and "Path=/" in cookie
        assert "Secure" not in cookie
        home = await c.get("/")
        assert home.status_code == 200
        assert re.search(r'<meta name="csrf-token" content="[^"]+">', home.text)
        assert "Ward T1" in home.text and "Annexe Hospital" in home.text


async def test_sign_in_returns_only_to_a_local_page(hospital: Hospital) -> None:
    for target, expected in [
        ("/wards/T1", "/wards/T1"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
    ]:
        async with client(hospital) as c:
            response = await login(c, "nurse1", next_path=target)
            assert response.status_code == 303
            assert response.headers["location"] == expected, target


async def test_sign_in_over_https_behind_a_trusted_proxy_sets_secure_cookies(hospital: Hospital) -> None:
    async with client(hospital) as c:
        c.headers["X-Forwarded-Proto"] = "https"
        c.headers["Origin"] = hospital.origin  # the allowed origin list is what the page is served as
        response = await login(c, "nurse1")
        assert response.status_code == 303
        assert "Secure" in response.headers["set-cookie"]


async def test_sign_in_refuses_a_missing_or_forged_form_token_and_foreign_origins(hospital: Hospital) -> None:
    async with client(hospital) as c:
        good = hidden((await c.get("/login")).text, "form_token")
        for data, headers in [
            ({"username": "nurse1", "password": PASSWORD}, {}),
            ({"username": "nurse1", "password": PASSWORD, "form_token": "forged.token.value"}, {}),
            (
                {"username": "nurse1", "password": PASSWORD, "form_token": good},
                {"Origin": "http://evil.example"},
            ),
            ({"username": "nurse1", "password": PASSWORD, "form_token": good}, {"Origin": "null"}),
        ]:
            response = await c.post("/login", data=data, headers=headers)
            assert response.status_code == 403, (data, headers)
            assert "set-cookie" not in response.headers
        ok = await c.post(
            "/login",
            data={"username": "nurse1", "password": PASSWORD, "form_token": good},
            headers={"Origin": hospital.origin},
        )
        assert ok.status_code == 303


async def test_a_wrong_password_is_401_and_sets_nothing(hospital: Hospital) -> None:
    async with client(hospital) as c:
        for username, password in [("nurse1", "not the password at all"), ("nobody-here", PASSWORD)]:
            response = await login(c, username, password)
            assert response.status_code == 401
            assert "set-cookie" not in response.headers
            assert "username or password is not right" in response.text


async def test_ten_failures_for_one_username_then_429_with_retry_after(hospital: Hospital) -> None:
    for _ in range(10):  # from ten different addresses: the username is what counts here
        async with client(hospital) as c:
            assert (await login(c, "doctor1", "wrong password!!")).status_code == 401
    async with client(hospital) as c:
        response = await login(c, "doctor1")  # even the right password
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) > 0
        assert "set-cookie" not in response.headers
    async with client(hospital) as c:  # other users are not affected
        assert (await login(c, "nurse1")).status_code == 303


async def test_ten_failures_from_one_address_then_429(hospital: Hospital) -> None:
    ip = address()
    async with client(hospital, ip) as c:
        for n in range(10):
            assert (await login(c, f"someone{n}", "wrong password!!")).status_code == 401
        response = await login(c, "nurse1")
        assert response.status_code == 429
        assert 0 < int(response.headers["retry-after"]) <= 15 * 60
    async with client(hospital) as c:  # another address still signs in
        assert (await login(c, "nurse1")).status_code == 303


async def test_sign_out_needs_the_csrf_token_and_clears_the_cookie(hospital: Hospital) -> None:
    async with client(hospital) as c:
        await login(c, "nurse1")
        page = await c.get("/logout")
        assert page.status_code == 200
        csrf = hidden(page.text, "csrf")
        refused = await c.post("/logout", data={"csrf": "wrong"})
        assert refused.status_code == 403
        assert (await c.get("/")).status_code == 200  # still signed in
        response = await c.post("/logout", data={"csrf": csrf})
        assert response.status_code == 303 and response.headers["location"] == "/login"
        assert re.search(r'wb_session=""?;.*Max-Age=0', response.headers["set-cookie"])
        c.cookies.clear()
        assert (await c.get("/")).status_code == 303


async def test_staff_pages_send_strangers_to_sign_in(hospital: Hospital) -> None:
    async with client(hospital) as c:
        for path in ("/", "/wards/T1", "/ipc", "/capacity"):
            response = await c.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"] == f"/login?next={path}"
        api = await c.get("/api/v1/ipc", headers={"Accept": "application/json"})
        assert api.status_code == 401


# --- pairing -------------------------------------------------------------------------------------


async def test_pairing_with_a_good_code_sets_the_display_cookie(hospital: Hospital) -> None:
    code = hospital.pairing_code()
    async with client(hospital) as c:
        page = await c.get("/displays/pair")
        assert page.status_code == 200
        assert code not in page.text
        # Crockford codes are read case-insensitively, ignoring spaces and hyphens.
        messy = f"{code[:4].lower()}-{code[4:]} "
        response = await pair_post(c, messy)
        assert response.status_code == 303
        assert response.headers["location"] == "/wards/T1/display"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("wb_display=")
        for part in ("HttpOnly", "Path=/", "Max-Age="):
            assert part in cookie
        assert "samesite=lax" in cookie.lower() and "Secure" not in cookie
        assert int(re.search(r"Max-Age=(\d+)", cookie).group(1)) > 300 * 24 * 3600  # type: ignore[union-attr]
        wall = await c.get("/wards/T1/display")
        assert wall.status_code == 200
        assert 'data-ward="T1"' in wall.text
        # A display reads only its own ward: another ward's wall sends it home.
        other = await c.get("/wards/T2/display")
        assert other.status_code == 303 and other.headers["location"] == "/wards/T1/display"
        # And `/` on a paired screen goes to its wall.
        home = await c.get("/")
        assert home.status_code == 303 and home.headers["location"] == "/wards/T1/display"
        kiosk = await c.get("/?profile=portrait-1080p")  # a kiosk's start page after a reboot
        assert kiosk.headers["location"] == "/wards/T1/display?profile=portrait-1080p"


async def test_a_used_code_is_refused(hospital: Hospital) -> None:
    code = hospital.pairing_code()
    async with client(hospital) as c:
        assert (await pair_post(c, code)).status_code == 303
    async with client(hospital) as c:
        again = await pair_post(c, code)
        assert again.status_code == 400
        assert "set-cookie" not in again.headers


async def test_an_expired_code_is_refused(hospital: Hospital) -> None:
    code = hospital.pairing_code()
    with sqlite3.connect(hospital.folder / "wb.db") as db:
        changed = db.execute(
            "UPDATE displays SET pair_expires_at = '2000-01-01T00:00:00.000Z' WHERE pair_code_hash = ?",
            (hashlib.sha256(code.encode()).hexdigest(),),
        ).rowcount
    assert changed == 1
    async with client(hospital) as c:
        response = await pair_post(c, code)
        assert response.status_code == 400
        assert "set-cookie" not in response.headers
        assert "more than 10 minutes old" in response.text


async def test_a_wrong_code_or_a_missing_hidden_field_is_400(hospital: Hospital) -> None:
    code = hospital.pairing_code()
    async with client(hospital) as c:
        wrong = await pair_post(c, "ZZZZZZZZ")
        assert wrong.status_code == 400 and "set-cookie" not in wrong.headers
        missing = await pair_post(c, code, with_token=False)
        assert missing.status_code == 400 and "set-cookie" not in missing.headers
        foreign = await c.post(
            "/displays/pair",
            data={"code": code, "form_token": hidden((await c.get("/displays/pair")).text, "form_token")},
            headers={"Origin": "http://evil.example"},
        )
        assert foreign.status_code == 400 and "set-cookie" not in foreign.headers
        # None of those spent the code.
        assert (await pair_post(c, code)).status_code == 303


async def test_ten_pairing_failures_from_one_address_then_429(hospital: Hospital) -> None:
    ip = address()
    code = hospital.pairing_code()
    async with client(hospital, ip) as c:
        for n in range(10):
            response = await pair_post(c, "WRONG" + "0123456789ABCDEFGHJK"[n] * 3, with_token=n % 2 == 0)
            assert response.status_code == 400
        blocked = await pair_post(c, code)
        assert blocked.status_code == 429
        assert 0 < int(blocked.headers["retry-after"]) <= 600
        assert "set-cookie" not in blocked.headers
    async with client(hospital) as c:  # the code was not spent; another screen may use it
        assert (await pair_post(c, code)).status_code == 303


async def test_the_code_is_never_taken_from_the_url(hospital: Hospital) -> None:
    """The code belongs in the fragment, which never reaches a server; a query string is ignored."""
    code = hospital.pairing_code()
    async with client(hospital) as c:
        page = await c.get(f"/displays/pair?code={code}")
        assert page.status_code == 200
        assert "set-cookie" not in page.headers
        assert code not in page.text
        assert 'src="/static/pair.js"' in page.text
    script = (Path(__file__).resolve().parents[2] / "web" / "static" / "pair.js").read_text()
    assert "location.hash" in script and "replaceState" in script
    async with client(hospital) as c:
        assert (await pair_post(c, code)).status_code == 303  # still unspent


async def test_the_wall_without_a_display_cookie_goes_to_pairing(hospital: Hospital) -> None:
    async with client(hospital) as c:
        response = await c.get("/wards/T1/display")
        assert response.status_code == 303
        assert response.headers["location"] == "/displays/pair"
        c.cookies.set("wb_display", "forged-value")
        assert (await c.get("/wards/T1/display")).headers["location"] == "/displays/pair"


async def test_a_revoked_display_goes_back_to_pairing(hospital: Hospital) -> None:
    code = hospital.pairing_code()
    async with client(hospital) as c:
        assert (await pair_post(c, code)).status_code == 303
        with sqlite3.connect(hospital.folder / "wb.db") as db:
            (display_id,) = db.execute("SELECT id FROM displays ORDER BY paired_at DESC LIMIT 1").fetchone()
        assert display_id in hospital.cli("display", "list")
        hospital.cli("display", "revoke", display_id)
        response = await c.get("/wards/T1/display")
        assert response.status_code == 303 and response.headers["location"] == "/displays/pair"


async def test_a_signed_in_member_of_staff_may_see_a_wall(hospital: Hospital) -> None:
    async with client(hospital) as c:
        await login(c, "viewer1")
        response = await c.get("/wards/T1/display")
        assert response.status_code == 200
        assert "csrf-token" not in response.text  # the wall never writes
        assert (await c.get("/wards/NOPE/display")).status_code == 404


# --- headers, data, profiles ---------------------------------------------------------------------


async def test_every_html_response_carries_the_security_headers(hospital: Hospital) -> None:
    async with client(hospital) as c:
        anonymous = [await c.get(p) for p in ("/login", "/displays/pair", "/wards/T1", "/no-such-page")]
        await login(c, "nurse1")
        signed_in = [
            await c.get(p)
            for p in ("/", "/wards/T1", "/ipc", "/capacity", "/logout", "/wards/NOPE", "/wards/T1/display")
        ]
        pair_fail = await pair_post(c, "WRONGONE")
    responses = [*anonymous, *signed_in, pair_fail]
    statuses = {r.status_code for r in responses}
    assert {200, 303, 400, 404} <= statuses
    for response in responses:
        csp = response.headers["content-security-policy"]
        directives = {d.strip().split(" ")[0]: d.strip() for d in csp.split(";") if d.strip()}
        assert "'unsafe-inline'" not in directives["script-src"]
        assert directives["frame-ancestors"] == "frame-ancestors 'none'"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"]
    for response in responses:
        if response.headers.get("content-type", "").startswith("text/html"):
            assert "<script>" not in response.text and " style=" not in response.text
            assert not re.search(r"\son[a-z]+=", response.text), "inline event handler"


async def test_static_files_are_served_with_the_right_types(hospital: Hospital) -> None:
    async with client(hospital) as c:
        for name, kind in [("live.js", "javascript"), ("wall.css", "text/css"), ("nhs.css", "text/css")]:
            response = await c.get(f"/static/{name}")
            assert response.status_code == 200
            assert kind in response.headers["content-type"]
            assert response.headers["x-content-type-options"] == "nosniff"


async def test_the_ipc_read_lists_flags_side_rooms_and_conflicts(hospital: Hospital) -> None:
    in_bay = await hospital.admit("T1-B2-8", "Connie", "Flict")
    in_room = await hospital.admit("T2-SR-3", "Sidney", "Room")
    await hospital.raise_flag(in_bay["patient"]["id"], "CDIFF", "suspected", "contact")
    await hospital.raise_flag(in_room["patient"]["id"], "TB", "confirmed", "airborne")
    async with client(hospital) as c:
        await login(c, "viewer1")
        response = await c.get("/api/v1/ipc", headers={"Accept": "application/json"})
    assert response.status_code == 200
    data = response.json()
    codes = {(f["code"], f["patient"]["family_name"], f["stay"]["bed"]) for f in data["flags"]}
    assert {("CDIFF", "Flict", "T1-B2-8"), ("TB", "Room", "T2-SR-3")} <= codes
    assert all(f["days"] == 0 for f in data["flags"])
    conflicts = {c["stay"]["bed"] for c in data["conflicts"]}
    assert "T1-B2-8" in conflicts and "T2-SR-3" not in conflicts
    rooms = {r["ward"]: r for r in data["side_rooms"]}
    assert rooms["T2"]["total"] == 1 and rooms["T2"]["free"] == []
    assert "A1" not in rooms  # no side rooms there
    async with hospital.api("wbt_not-a-real-token") as api:
        assert (await api.get("/api/v1/ipc")).status_code == 401


async def test_the_capacity_page_counts_beds_and_draws_the_week(hospital: Hospital) -> None:
    await hospital.admit("A1-B1-1", "Cap", "Acity")
    await hospital.set_bed_state("A1-B1-3", "closed", ward="A1")
    async with client(hospital) as c:
        await login(c, "viewer1")
        page = (await c.get("/capacity")).text
    row = re.search(r'<tr data-ward="A1">(.*?)</tr>', page, re.S)
    assert row
    cells = dict(re.findall(r'data-col="([a-z0-9-]+)">(\d+)<', row.group(1)))
    assert cells["occupied"] == "1" and cells["free"] == "1" and cells["closed"] == "1"
    assert '<svg class="chart" id="occupancy-chart"' in page
    assert "Annexe Hospital" in page


def test_every_display_profile_is_valid() -> None:
    folder = profiles_dir()
    files = sorted(folder.glob("*.json"))
    names = {f.stem for f in files}
    assert {"landscape-1080p", "landscape-4k", "portrait-1080p"} <= names
    profiles = [check_profile(orjson.loads(f.read_bytes()), f.name) for f in files]
    assert sum(p["default"] for p in profiles) == 1
    for bad, why in [
        ({"name": "x"}, "title"),
        ({**profiles[0], "columns": 0}, "columns"),
        ({**profiles[0], "extra": 1}, "unknown field"),
        ({**profiles[0], "width": 1000, "height": 2000}, "orientation"),
    ]:
        with pytest.raises(ValueError, match=why):
            check_profile(bad, f"{profiles[0]['name']}.json")
    with pytest.raises(ValueError, match="file name"):
        check_profile(profiles[0], "other.json")


def test_the_sliding_window_blocks_after_the_limit_and_forgets_old_failures() -> None:
    now = [1000.0]
    window = SlidingWindow(limit=3, window=60.0, clock=lambda: now[0])
    for _ in range(3):
        assert window.retry_after("k") is None
        window.fail("k")
        now[0] += 10
    assert window.retry_after("k") == 30  # the first failure (at 1000) ages out at 1060
    assert window.blocked(["other", "k"]) == 30
    now[0] += 30
    assert window.retry_after("k") is None
    window.fail("k")
    assert window.retry_after("k") is not None
    window.reset("k")
    assert window.retry_after("k") is None


async def test_a_keepalive_slides_the_session_and_needs_csrf(hospital: Hospital) -> None:
    async with client(hospital) as c:
        await login(c, "nurse1")
        csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', (await c.get("/")).text)
        assert csrf
        refused = await c.post("/session/keepalive", headers={"X-CSRF-Token": "wrong"})
        assert refused.status_code == 403
        ok = await c.post("/session/keepalive", headers={"X-CSRF-Token": csrf.group(1)})
        assert ok.status_code == 200 and ok.headers["set-cookie"].startswith("wb_session=")
        assert (await c.get("/")).text.count(csrf.group(1)) >= 1  # the CSRF token stays the same
    async with client(hospital) as c:
        assert (await c.post("/session/keepalive")).status_code == 401


def test_the_kiosk_script_opens_the_pairing_path_then_remembers_the_server(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "displays" / "kiosk.sh"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "WB_KIOSK_DIR": str(tmp_path / "k"),
        "CHROMIUM": "echo",
    }
    first = subprocess.run(
        ["bash", str(script), "https://wb.example/displays/pair#K7M2Q9XD", "portrait-1080p"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "--kiosk" in first.stdout
    assert first.stdout.strip().endswith("https://wb.example/displays/pair?profile=portrait-1080p#K7M2Q9XD")
    again = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True)
    assert again.stdout.strip().endswith("https://wb.example/?profile=portrait-1080p")
