"""Logs never hold secrets or patient identity: a busy server's whole log is scanned."""

from __future__ import annotations

import asyncio

from tests.integration.conftest import make_hospital, open_socket, patient
from whiteboard.hl7 import fakepas
from whiteboard.service import PatientDetails

NAMES = ("Quentinella", "Zebedee-Ormsby")
NHS = ("9990000034", "9434765918")


async def test_a_busy_servers_log_holds_no_token_cookie_name_or_nhs_number(tmp_path) -> None:
    h = make_hospital(tmp_path, wards=1)
    await h.server.astart()
    feed = h.new_token("log-feed", "feed")
    try:
        person = patient(2, given_name=NAMES[0], family_name=NAMES[1], nhs_number=NHS[0])
        async with h.client() as api:
            stay = (await api.post("/api/v1/stays", json={"bed": "W01-B1-1", "patient": person})).json()
            bad = {**person, "nhs_number": NHS[1], "mrn": "LOG2"}
            assert (
                await api.post("/api/v1/stays", json={"bed": "W01-B1-2", "patient": bad})
            ).status_code == 422
            await api.patch(f"/api/v1/stays/{stay['id']}", json={"news2": 25}, headers={"If-Match": '"1"'})
            await api.get(
                "/api/v1/wards/W01", headers={"Cookie": "wb_session=forged.cookie.value-SECRETCOOKIE"}
            )
        async with h.client(feed) as api:
            msg = fakepas.adt("A08", PatientDetails(**person), attending="Dr Quentinella Smith")
            await api.post("/api/v1/hl7", content=msg.encode())
            await api.post("/api/v1/hl7", content=msg.replace(NHS[0], NHS[1]).encode())
            await api.post("/api/v1/hl7", content=b"MSH|^~\\&|garbage " + NAMES[0].encode())
        async with h.client("wbt_this-token-is-not-real-SECRETTOKEN") as api:
            assert (await api.get("/api/v1/wards")).status_code == 401
        async with open_socket(h.ws_url("W01"), token=h.token) as sock:
            await sock.wait_for(lambda f: f["type"] == "snapshot")
            await sock.conn.send(f"hello {NAMES[0]}")
            await asyncio.wait_for(sock.closed.wait(), 5)
    finally:
        h.server.stop()
    log = h.server.log_path.read_text()
    assert "GET /api/v1/wards" in log  # the log is real and was written
    for secret in (h.token, feed, "SECRETTOKEN", "SECRETCOOKIE", *NAMES, *NHS):
        assert secret not in log, f"{secret!r} appears in the server log"


async def test_the_server_says_which_event_loop_runs_it_and_it_is_uvloop(tmp_path) -> None:
    h = make_hospital(tmp_path, wards=1)
    await h.server.astart()
    try:
        async with open_socket(h.ws_url("W01"), token=h.token) as sock:
            await sock.wait_for(lambda f: f["type"] == "snapshot")
    finally:
        h.server.stop()
    log = h.server.log_path.read_text()
    assert "event loop: uvloop" in log, h.server.log_tail()
