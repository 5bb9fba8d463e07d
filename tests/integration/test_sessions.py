"""Staff sessions live on the server: signing out, idling out and being disabled end them, and
their sockets close (1008) within 2 s."""

from __future__ import annotations

import asyncio
import re
import time

import httpx

from tests.helpers import timeout
from tests.integration.conftest import Hospital, make_hospital, open_socket

PASSWORD = "correct horse battery staple"


async def sign_in(h: Hospital, username: str) -> tuple[httpx.AsyncClient, str]:
    """A browser-like client signed in as `username`, and the page's CSRF token."""
    c = httpx.AsyncClient(base_url=h.server.base_url, headers={"Origin": h.origin}, timeout=10)
    page = await c.get("/login")
    token = re.search(r'name="form_token" value="([^"]*)"', page.text)
    assert token
    r = await c.post(
        "/login", data={"username": username, "password": PASSWORD, "form_token": token.group(1)}
    )
    assert r.status_code == 303, r.text[:200]
    wards = await c.get("/")
    csrf = re.search(r'<meta name="csrf-token" content="([^"]*)"', wards.text)
    assert csrf, wards.text[:300]
    return c, csrf.group(1)


def cookie_header(c: httpx.AsyncClient) -> str:
    return "; ".join(f"{k}={v}" for k, v in c.cookies.items())


async def test_signing_out_ends_the_session_and_closes_its_sockets(tmp_path) -> None:
    h = make_hospital(tmp_path, wards=1)
    h.cli("user", "add", "sister", "--role", "nurse", stdin=PASSWORD + "\n")
    await h.server.astart()
    try:
        c, csrf = await sign_in(h, "sister")
        async with open_socket(h.ws_url("W01"), cookie=cookie_header(c), origin=h.origin) as sock:
            await sock.wait_for(lambda f: f["type"] == "snapshot")
            r = await c.post("/logout", data={"csrf": csrf})
            assert r.status_code == 303
            started = time.perf_counter()
            await asyncio.wait_for(sock.closed.wait(), timeout(3))
            assert sock.conn.close_code == 1008
            assert time.perf_counter() - started < 2.5
            # The old cookie is worthless now, even if a copy of it was kept.
            stolen = httpx.AsyncClient(base_url=h.server.base_url, cookies=dict(c.cookies))
            async with stolen:
                assert (await stolen.get("/api/v1/wards")).status_code == 401
        await c.aclose()
    finally:
        h.server.stop()


async def test_an_idle_session_ends_and_disabling_a_user_ends_theirs(tmp_path) -> None:
    h = make_hospital(tmp_path, wards=1, env={"WHITEBOARD_SESSION_IDLE_MINUTES": "1"})
    for name in ("idle", "leaver"):
        h.cli("user", "add", name, "--role", "viewer", stdin=PASSWORD + "\n")
    await h.server.astart()
    try:
        idle, _ = await sign_in(h, "idle")
        leaver, _ = await sign_in(h, "leaver")
        async with open_socket(h.ws_url("W01"), cookie=cookie_header(leaver), origin=h.origin) as sock:
            await sock.wait_for(lambda f: f["type"] == "snapshot")
            await asyncio.to_thread(h.cli, "user", "disable", "leaver")
            started = time.perf_counter()
            await asyncio.wait_for(sock.closed.wait(), timeout(3))
            assert sock.conn.close_code == 1008 and time.perf_counter() - started < 2.5
            assert (await leaver.get("/api/v1/wards")).status_code == 401
            # Age the idle user's session past one minute, as if the tablet sat untouched.
            import sqlite3

            db = sqlite3.connect(tmp_path / "wb.db")
            with db:
                db.execute(
                    "UPDATE sessions SET last_seen_at = '2000-01-01T00:00:00.000Z' WHERE username = 'idle'"
                )
            db.close()
            assert (await idle.get("/api/v1/wards")).status_code == 401
        await idle.aclose()
        await leaver.aclose()
    finally:
        h.server.stop()


async def test_a_session_cannot_write_without_its_csrf_token(tmp_path) -> None:
    h = make_hospital(tmp_path, wards=1)
    h.cli("user", "add", "bedmgr", "--role", "bed_manager", stdin=PASSWORD + "\n")
    await h.server.astart()
    try:
        c, csrf = await sign_in(h, "bedmgr")
        try:
            bed = (await c.get("/api/v1/wards/W01")).json()["beds"][0]
            patch = {"json": {"state": "closed"}, "headers": {"If-Match": f'"{bed["version"]}"'}}
            assert (await c.patch(f"/api/v1/beds/{bed['code']}", **patch)).status_code == 403
            patch["headers"]["X-CSRF-Token"] = csrf
            r = await c.patch(f"/api/v1/beds/{bed['code']}", **patch)
            assert r.status_code == 200 and r.json()["state"] == "closed"
        finally:
            await c.aclose()
    finally:
        h.server.stop()


async def test_hsts_only_when_the_request_came_over_https(tmp_path) -> None:
    h = make_hospital(tmp_path, wards=1, env={"WHITEBOARD_TRUSTED_PROXIES": "127.0.0.1"})
    await h.server.astart()
    try:
        async with httpx.AsyncClient(base_url=h.server.base_url) as c:
            plain = await c.get("/healthz")
            assert "strict-transport-security" not in plain.headers
            proxied = await c.get("/healthz", headers={"X-Forwarded-Proto": "https"})
            assert proxied.headers["strict-transport-security"].startswith("max-age=")
            for r in (plain, proxied):
                assert (
                    "'unsafe-inline'"
                    not in r.headers["content-security-policy"].split("script-src")[1].split(";")[0]
                )
                assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    finally:
        h.server.stop()


async def test_a_token_writing_too_fast_gets_429_with_retry_after(tmp_path) -> None:
    h = make_hospital(tmp_path, wards=1, env={"WHITEBOARD_WRITE_RATE": "2"})
    await h.server.astart()
    try:
        async with h.client() as api:
            bed = (await api.get("/api/v1/wards/W01")).json()["beds"][0]
            before = (await api.get("/api/v1/wards/W01")).json()["seq"]
            answers = [
                await api.patch(
                    f"/api/v1/beds/{bed['code']}", json={"state": "closed"}, headers={"If-Match": '"999"'}
                )
                for _ in range(15)
            ]
            codes = [r.status_code for r in answers]
            assert codes[:10] == [412] * 10  # a burst of five times the rate is allowed
            throttled = [r for r in answers if r.status_code == 429]
            assert throttled and int(throttled[0].headers["retry-after"]) >= 1
            assert throttled[0].json()["error"]["code"] == "throttled"
            assert (await api.get("/api/v1/wards/W01")).json()["seq"] == before
            # Reads are never throttled.
            assert (await api.get("/api/v1/wards")).status_code == 200
    finally:
        h.server.stop()


async def test_sign_ins_failures_sign_outs_and_refusals_are_logged(tmp_path) -> None:
    h = make_hospital(tmp_path, wards=1)
    h.cli("user", "add", "auditor", "--role", "viewer", stdin=PASSWORD + "\n")
    await h.server.astart()
    try:
        c, csrf = await sign_in(h, "auditor")
        assert (
            await c.patch("/api/v1/beds/W01-B1-1", json={"state": "closed"}, headers={"X-CSRF-Token": csrf})
        ).status_code == 403
        await c.post("/logout", data={"csrf": csrf})
        await c.aclose()
        async with httpx.AsyncClient(base_url=h.server.base_url, headers={"Origin": h.origin}) as stranger:
            page = await stranger.get("/login")
            token = re.search(r'name="form_token" value="([^"]*)"', page.text)
            assert token
            await stranger.post(
                "/login",
                data={"username": "auditor", "password": "wrong password!", "form_token": token.group(1)},
            )
    finally:
        h.server.stop()
    log = h.server.log_path.read_text()
    assert "sign-in: auditor (viewer)" in log
    assert "refused PATCH /api/v1/beds/W01-B1-1: 403" in log
    assert "sign-out: auditor" in log
    assert "failed sign-in for 'auditor'" in log
    assert PASSWORD not in log and "wrong password!" not in log
