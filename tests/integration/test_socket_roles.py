"""Every role against the live socket, both views (DESIGN 4.5): who may read what."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.helpers import timeout
from tests.integration.conftest import Hospital, open_socket

CLINICAL_READERS = ("admin", "nurse", "doctor", "ipc", "bed_manager", "viewer")


@pytest.mark.parametrize("role", [*CLINICAL_READERS, "feed"])
@pytest.mark.parametrize("view", ["clinical", "display"])
async def test_each_role_reads_the_views_the_matrix_gives_it(
    hospital: Hospital, role: str, view: str
) -> None:
    token = hospital.new_token(f"sock-{role}-{view}", role)
    if role in CLINICAL_READERS:
        async with open_socket(hospital.ws_url("W02", view), token=token) as sock:
            first = await sock.wait_for(lambda f: True)
            assert first["type"] == "snapshot" and first["view"] == view
    else:
        with pytest.raises(InvalidStatus) as refused:
            async with open_socket(hospital.ws_url("W02", view), token=token):
                pass
        assert refused.value.response.status_code == 403


async def test_a_display_reads_its_own_ward_in_the_display_view_only(hospital: Hospital) -> None:
    out = (
        hospital.cli("display", "add", "--ward", "W03", "--name", "sock test").stdout.strip().splitlines()[-1]
    )
    code = out.split("#", 1)[1]

    async with httpx.AsyncClient(base_url=hospital.server.base_url, headers={"Origin": hospital.origin}) as c:
        page = await c.get("/displays/pair")

        token = re.search(r'name="form_token" value="([^"]*)"', page.text)
        assert token
        r = await c.post("/displays/pair", data={"code": code, "form_token": token.group(1)})
        assert r.status_code == 303, r.text[:200]
        cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
    async with open_socket(hospital.ws_url("W03", "display"), cookie=cookie, origin=hospital.origin) as sock:
        assert (await sock.wait_for(lambda f: True))["view"] == "display"
    for url in (hospital.ws_url("W03", "clinical"), hospital.ws_url("W01", "display")):
        with pytest.raises(InvalidStatus) as refused:
            async with open_socket(url, cookie=cookie, origin=hospital.origin):
                pass
        assert refused.value.response.status_code == 403
    # A cookie client must send an Origin.
    with pytest.raises(InvalidStatus) as refused:
        async with open_socket(hospital.ws_url("W03", "display"), cookie=cookie):
            pass
    assert refused.value.response.status_code == 403
    # Revoking the display closes its socket (1008) within 2 s, whichever process holds it.
    async with open_socket(hospital.ws_url("W03", "display"), cookie=cookie, origin=hospital.origin) as sock:
        await sock.wait_for(lambda f: f["type"] == "snapshot")
        listing = hospital.cli("display", "list").stdout.splitlines()
        display_id = next(ln.split("\t")[0] for ln in listing if "sock test" in ln)
        await asyncio.to_thread(hospital.cli, "display", "revoke", display_id)
        started = time.perf_counter()
        await asyncio.wait_for(sock.closed.wait(), timeout(3))
        assert sock.conn.close_code == 1008 and time.perf_counter() - started < 2.5
