"""The live socket against a real server: what every screen relies on (DESIGN 4.3)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.helpers import timeout, wait_until
from tests.integration.conftest import Hospital, bed_code, layout, make_hospital, open_socket, patient

SECRETS = ["Given", "Family", "M0", "999000", "1950-01-01", "MRSA", "waiting for OT"]


def leaked(frame: dict) -> list[str]:
    text = json.dumps(frame)
    return [s for s in SECRETS if s in text]


async def admit(h: Hospital, bed: str, n: int, **extra: object) -> dict:
    async with h.client() as api:
        r = await api.post("/api/v1/stays", json={"bed": bed, "patient": patient(n), **extra})
    assert r.status_code == 201, r.text
    return r.json()


async def test_admit_reaches_both_views_and_the_display_sees_no_identity(hospital: Hospital) -> None:
    async with (
        open_socket(hospital.ws_url("W01", "clinical"), token=hospital.token) as clin,
        open_socket(hospital.ws_url("W01", "display"), token=hospital.token) as disp,
    ):
        snap = await clin.wait_for(lambda f: f["type"] == "snapshot")
        dsnap = await disp.wait_for(lambda f: f["type"] == "snapshot")
        assert len(snap["beds"]) == 6 and snap["unplaced"] == [] and dsnap["seq"] == snap["seq"]
        stay = await admit(hospital, "W01-B1-1", 1, consultant="Dr Ada", named_nurse="Sam")
        change = await clin.wait_for(lambda f: f["type"] == "change", within=2)
        assert change["seq"] == snap["seq"] + 1
        assert change["bed"]["stay"]["patient"]["family_name"] == "Family1"
        assert change["bed"]["stay"]["id"] == stay["id"]
        shown = await disp.wait_for(lambda f: f["type"] == "change", within=2)
        assert shown["seq"] == change["seq"]
        assert shown["bed"]["stay"]["patient"] == {"initials": "GF"}
        assert leaked(shown) == [] and leaked(dsnap) == []
        assert set(shown["bed"]["stay"]) == {
            "patient",
            "consultant",
            "named_nurse",
            "edd",
            "day_status",
            "discharge",
            "flags",
            "alerts",
        }


async def test_changes_arrive_in_seq_order_without_gaps_and_a_stale_write_sends_nothing(
    hospital: Hospital,
) -> None:
    async with open_socket(hospital.ws_url("W02"), token=hospital.token) as sock:
        snap = await sock.wait_for(lambda f: f["type"] == "snapshot")
        stay = await admit(hospital, bed_code(2, 1), 2)
        async with hospital.client() as api:
            for news2 in range(5):
                r = await api.patch(
                    f"/api/v1/stays/{stay['id']}",
                    json={"news2": news2},
                    headers={"If-Match": f'"{stay["version"]}"'},
                )
                assert r.status_code == 200, r.text
                stay = r.json()
                assert r.headers["etag"] == f'"{stay["version"]}"'
            stale = await api.patch(
                f"/api/v1/stays/{stay['id']}", json={"news2": 9}, headers={"If-Match": '"1"'}
            )
            assert stale.status_code == 412
            transfer = await api.post(f"/api/v1/stays/{stay['id']}/transfer", json={"bed": bed_code(2, 2)})
            assert transfer.status_code == 200
        await sock.wait_for(lambda f: f["type"] == "change" and f["seq"] == snap["seq"] + 8, within=2)
        await asyncio.sleep(0.3)
        seqs = [f["seq"] for f in sock.changes()]
        assert seqs == list(range(snap["seq"] + 1, snap["seq"] + 9))
        assert all(f["bed"]["stay"]["news2"] != 9 for f in sock.changes() if f["bed"]["stay"])
        # Transfer within a ward: the bed left (dirty), then the bed taken.
        left, taken = sock.changes()[-2:]
        assert (
            left["bed"]["code"] == bed_code(2, 1)
            and left["bed"]["state"] == "dirty"
            and left["bed"]["stay"] is None
        )
        assert taken["bed"]["code"] == bed_code(2, 2) and taken["bed"]["stay"]["id"] == stay["id"]


async def test_resume_with_since_replays_only_what_was_missed(hospital: Hospital) -> None:
    await admit(hospital, bed_code(3, 1), 3)
    await admit(hospital, bed_code(3, 2), 4)
    async with hospital.client() as api:
        events = (await api.get("/api/v1/wards/W03/events", params={"since": 0})).json()["events"]
    latest = events[-1]["seq"]
    async with open_socket(hospital.ws_url("W03", since=latest - 2), token=hospital.token) as sock:
        await sock.wait_for(lambda f: f["seq"] == latest)
        kinds = [(f["type"], f["seq"]) for _, f in sock.frames]
        assert kinds[:2] == [("change", latest - 1), ("change", latest)]
        assert sock.frames[1][1]["bed"]["code"] == bed_code(3, 2)
    async with open_socket(hospital.ws_url("W03", since=latest), token=hospital.token) as sock:
        first = await sock.wait_for(lambda f: True, within=2)
        assert first["type"] == "heartbeat" and first["seq"] == latest
    # From the future (a database restored from backup, say): a snapshot puts the screen right.
    async with open_socket(hospital.ws_url("W03", since=latest + 50), token=hospital.token) as sock:
        first = await sock.wait_for(lambda f: True, within=2)
        assert first["type"] == "snapshot" and first["seq"] == latest


async def test_heartbeats_carry_the_latest_seq_at_least_every_ten_seconds(hospital: Hospital) -> None:
    async with open_socket(hospital.ws_url("W04"), token=hospital.token) as sock:
        snap = await sock.wait_for(lambda f: f["type"] == "snapshot")
        beat = await sock.wait_for(lambda f: f["type"] == "heartbeat", within=10.5)
        assert beat["seq"] == snap["seq"] and beat["at"].endswith("Z")


@pytest.mark.parametrize(
    ("query", "status"),
    [("view=sideways", 400), ("view=clinical&since=-1", 400), ("view=clinical&since=abc", 400)],
)
async def test_bad_view_or_since_is_refused_at_the_handshake(
    hospital: Hospital, query: str, status: int
) -> None:
    url = hospital.server.ws_url(f"/ws/wards/W01?{query}")
    with pytest.raises(InvalidStatus) as refused:
        async with open_socket(url, token=hospital.token):
            pass
    assert refused.value.response.status_code == status


async def test_handshake_refusals_come_in_the_contract_order(hospital: Hospital) -> None:
    feed = hospital.new_token("ws-feed", "feed")
    cases = [
        ({"token": None}, hospital.ws_url("W01"), 401),
        ({"token": "wbt_not-a-real-token-at-all-0000000000"}, hospital.ws_url("W01"), 401),
        ({"token": hospital.token, "origin": "http://evil.example"}, hospital.ws_url("W01"), 403),
        ({"token": hospital.token, "origin": "null"}, hospital.ws_url("W01"), 403),
        ({"token": hospital.token, "origin": hospital.origin + ".evil.example"}, hospital.ws_url("W01"), 403),
        ({"token": hospital.token, "origin": "http://evil.example"}, hospital.ws_url("W01", "sideways"), 403),
        ({"token": feed}, hospital.ws_url("W01"), 403),
        ({"token": feed}, hospital.ws_url("NOPE"), 403),
        ({"token": hospital.token}, hospital.ws_url("NOPE"), 404),
    ]
    for kw, url, status in cases:
        with pytest.raises(InvalidStatus) as refused:
            async with open_socket(url, **kw):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == status, (kw, url)
    # The server's own origin is fine, and a bearer client may leave Origin out.
    async with open_socket(hospital.ws_url("W01"), token=hospital.token, origin=hospital.origin) as sock:
        await sock.wait_for(lambda f: f["type"] == "snapshot")


async def test_a_client_that_sends_data_is_closed_1008_and_oversize_1009(hospital: Hospital) -> None:
    async with open_socket(hospital.ws_url("W01"), token=hospital.token) as sock:
        await sock.wait_for(lambda f: f["type"] == "snapshot")
        await sock.conn.send("hello")
        await asyncio.wait_for(sock.closed.wait(), timeout(5))
        assert sock.conn.close_code == 1008
    async with open_socket(hospital.ws_url("W01"), token=hospital.token, max_size=None) as sock:
        await sock.wait_for(lambda f: f["type"] == "snapshot")
        await sock.conn.send("x" * (64 * 1024 + 1))
        await asyncio.wait_for(sock.closed.wait(), timeout(5))
        assert sock.conn.close_code == 1009


async def test_revoking_a_token_closes_its_sockets_within_two_seconds(hospital: Hospital) -> None:
    viewer = hospital.new_token("ws-viewer-revoked", "viewer")
    async with open_socket(hospital.ws_url("W01"), token=viewer) as sock:
        await sock.wait_for(lambda f: f["type"] == "snapshot")
        await asyncio.to_thread(hospital.cli, "token", "revoke", "ws-viewer-revoked")
        started = time.perf_counter()  # the revocation is committed once the CLI returns
        await asyncio.wait_for(sock.closed.wait(), timeout(3))
        assert sock.conn.close_code == 1008
        assert time.perf_counter() - started < 2.5


async def test_a_screen_joining_after_a_layout_load_sees_the_new_bed(tmp_path: Path) -> None:
    """Snapshots are shared by the sockets joining at one seq; a layout load adds and changes
    beds without moving the seq, so it must not be served the snapshot from before."""
    h = make_hospital(tmp_path, wards=1)
    await h.server.astart()
    try:
        async with open_socket(h.ws_url("W01"), token=h.token) as sock:
            before = await sock.wait_for(lambda f: f["type"] == "snapshot")
        doc = layout(wards=1)
        doc["sites"][0]["wards"][0]["beds"].append({"code": "W01-B2-7", "bay": "B2", "kind": "bay"})
        (tmp_path / "layout.json").write_text(json.dumps(doc))
        h.cli("layout", "load", str(tmp_path / "layout.json"))
        async with open_socket(h.ws_url("W01"), token=h.token) as sock:
            after = await sock.wait_for(lambda f: f["type"] == "snapshot")
        assert after["seq"] == before["seq"]  # no event: only the layout moved on
        assert "W01-B2-7" not in [b["code"] for b in before["beds"]]
        assert "W01-B2-7" in [b["code"] for b in after["beds"]]
    finally:
        h.server.stop()


async def test_state_survives_a_restart_and_sockets_resume(tmp_path) -> None:
    h = make_hospital(tmp_path, wards=1)
    await h.server.astart()
    try:
        stay = await admit(h, "W01-B1-1", 5)
        async with h.client() as api:
            before = (await api.get("/api/v1/wards/W01")).json()
        h.server.stop()
        await h.server.astart()
        async with h.client() as api:
            after = (await api.get("/api/v1/wards/W01")).json()
            assert after == before
            async with open_socket(h.ws_url("W01", since=before["seq"]), token=h.token) as sock:
                await sock.wait_for(lambda f: f["type"] == "heartbeat")
                r = await api.post(f"/api/v1/stays/{stay['id']}/discharge", json={})
                assert r.status_code == 200
                change = await sock.wait_for(lambda f: f["type"] == "change", within=2)
                assert change["seq"] == before["seq"] + 1 and change["bed"]["state"] == "dirty"
    finally:
        h.server.stop()


async def test_a_change_made_by_another_process_reaches_sockets_without_any_broker(tmp_path) -> None:
    """Two processes on one SQLite file, each with only its in-process broker: the news never
    travels between them, so this is the lost-publish path — the catch-up from the event log."""
    a = make_hospital(tmp_path, wards=1)
    from tests.helpers import ServerProcess, free_port

    port = free_port()
    b = ServerProcess(
        env={**a.env, "WHITEBOARD_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}"},
        cwd=tmp_path,
        log_path=tmp_path / "b.log",
        port=port,
    )
    await a.server.astart()
    await b.astart()
    try:
        async with open_socket(a.ws_url("W01"), token=a.token) as sock:
            snap = await sock.wait_for(lambda f: f["type"] == "snapshot")
            started = time.perf_counter()
            import httpx

            async with httpx.AsyncClient(
                base_url=b.base_url, headers={"Authorization": f"Bearer {a.token}"}
            ) as api:
                r = await api.post("/api/v1/stays", json={"bed": "W01-B1-2", "patient": patient(6)})
                assert r.status_code == 201
            change = await sock.wait_for(lambda f: f["type"] == "change", within=2)
            assert change["seq"] == snap["seq"] + 1 and change["bed"]["code"] == "W01-B1-2"
            assert time.perf_counter() - started < 2.0
    finally:
        b.stop()
        a.server.stop()


async def test_a_client_that_cannot_keep_up_is_closed_1013(tmp_path) -> None:
    """A socket that never reads fills its bounded queue; the server closes it (1013) rather
    than hold its news in memory, and the client resumes with since."""
    import socket as socketlib

    h = make_hospital(tmp_path, wards=1, env={"WHITEBOARD_WS_QUEUE_LIMIT": "8"})
    await h.server.astart()
    raw = socketlib.socket()
    try:
        raw.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", h.server.port))
        raw.sendall(
            (
                "GET /ws/wards/W01?view=clinical HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {h.token}\r\n\r\n"
            ).encode()
        )
        stay = await admit(h, "W01-B1-1", 7)
        blockers = "x" * 1000
        async with h.client() as api:

            async def evicted() -> bool:
                text = (await api.get("/metrics")).text
                line = next(ln for ln in text.splitlines() if ln.startswith("whiteboard_slow_clients_total"))
                return float(line.split()[-1]) >= 1

            for _ in range(1500):
                r = await api.patch(
                    f"/api/v1/stays/{stay['id']}",
                    json={"discharge": {"blockers": blockers}, "news2": stay["version"] % 20},
                    headers={"If-Match": f'"{stay["version"]}"'},
                )
                stay = r.json()
                if stay["version"] % 50 == 0 and await evicted():
                    break
            await wait_until(evicted, timeout(5), message="the slow socket was never evicted")
        # Now read what the server sent: it ends with a close frame carrying 1013.
        raw.setblocking(False)
        data = b""
        deadline = time.perf_counter() + timeout(10)
        loop = asyncio.get_running_loop()
        while time.perf_counter() < deadline:
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(raw, 65536), 1)
            except TimeoutError:
                continue
            if not chunk:
                break
            data += chunk
        assert b"\x88\x02\x03\xf5" in data or (b"\x88" in data and (1013).to_bytes(2, "big") in data)
    finally:
        raw.close()
        h.server.stop()


async def test_unknown_ward_snapshot_and_events_are_404(hospital: Hospital) -> None:
    async with hospital.client() as api:
        assert (await api.get("/api/v1/wards/NOPE")).status_code == 404
        assert (await api.get("/api/v1/wards/NOPE/events")).status_code == 404
        assert (await api.get("/api/v1/wards/W01/events", params={"since": "x"})).status_code == 400
        assert (await api.get("/api/v1/wards/W01", params={"view": "x"})).status_code == 400


async def test_closed_socket_on_server_shutdown_is_1012(tmp_path) -> None:
    h = make_hospital(tmp_path, wards=1)
    await h.server.astart()
    try:
        async with open_socket(h.ws_url("W01"), token=h.token) as sock:
            await sock.wait_for(lambda f: f["type"] == "snapshot")
            await asyncio.to_thread(h.server.stop)
            await asyncio.wait_for(sock.closed.wait(), timeout(5))
            assert sock.conn.close_code in (1012, 1001)
    finally:
        if h.server.running:
            h.server.stop()


_ = ConnectionClosed


async def test_a_half_open_socket_is_reaped_within_thirty_seconds(hospital: Hospital) -> None:
    """A client that vanished without closing (a tablet out of Wi-Fi) never answers pings: the
    server pings every 20 s and gives up 10 s later, so its socket goes within 30 s."""
    import socket as socketlib

    raw = socketlib.create_connection(("127.0.0.1", hospital.server.port))
    try:
        raw.sendall(
            (
                "GET /ws/wards/W04?view=clinical HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {hospital.token}\r\n\r\n"
            ).encode()
        )
        raw.setblocking(False)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        # Read (so the server is never blocked on a full buffer) but never answer a ping.
        while True:
            chunk = await asyncio.wait_for(loop.sock_recv(raw, 65536), timeout(40))
            if not chunk:
                break
        assert time.perf_counter() - started < 31
    finally:
        raw.close()
