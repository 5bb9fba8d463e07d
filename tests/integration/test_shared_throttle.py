"""With Redis, the sign-in throttle is one count for every process behind the load balancer."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tests.helpers import ServerProcess, free_port
from tests.integration.conftest import Hospital, make_hospital


async def failed_sign_in(base_url: str, origin: str, username: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, headers={"Origin": origin}, timeout=10) as c:
        page = await c.get("/login")
        token = re.search(r'name="form_token" value="([^"]*)"', page.text)
        assert token
        return await c.post(
            "/login",
            data={"username": username, "password": "not the password!", "form_token": token.group(1)},
        )


@pytest.mark.redis
async def test_failures_on_one_process_count_on_the_other(tmp_path, redis_url: str) -> None:
    port_b = free_port()
    h: Hospital = make_hospital(
        tmp_path,
        wards=1,
        env={"WHITEBOARD_REDIS_URL": redis_url, "WHITEBOARD_REDIS_PREFIX": f"t{uuid.uuid4().hex[:8]}"},
    )
    origins = f"{h.origin},http://127.0.0.1:{port_b}"
    h.server.env["WHITEBOARD_ALLOWED_ORIGINS"] = origins
    b = ServerProcess(
        env={**h.env, "WHITEBOARD_ALLOWED_ORIGINS": origins},
        cwd=tmp_path,
        log_path=tmp_path / "b.log",
        port=port_b,
    )
    await h.server.astart()
    await b.astart()
    try:
        for n in range(10):
            server = h.server if n % 2 else b
            r = await failed_sign_in(server.base_url, server.base_url, "matron")
            assert r.status_code == 401, (n, r.status_code)
        for server in (h.server, b):
            r = await failed_sign_in(server.base_url, server.base_url, "matron")
            assert r.status_code == 429
            assert int(r.headers["retry-after"]) > 0
    finally:
        b.stop()
        h.server.stop()
