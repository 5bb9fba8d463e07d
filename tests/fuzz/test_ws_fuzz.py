"""Hypothesis on WebSocket client frames: whatever a client sends, the socket closes with
1008 (data) or 1009 (over 64 KiB), nothing on the board changes, and the server stays up."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from tests.integration.conftest import Hospital, make_hospital

frames = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    st.builds(lambda n: "x" * n, st.integers(64 * 1024 + 1, 70 * 1024)),
    st.sampled_from(['{"type":"change","seq":999,"bed":{}}', '{"type":"snapshot"}', "null", "[]", "\x00"]),
)


@pytest.fixture(scope="module")
def ws_hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hospital]:
    h = make_hospital(tmp_path_factory.mktemp("wsfuzz"), wards=1)
    h.server.start()
    try:
        yield h
    finally:
        h.server.stop()


async def _send_and_see_close(h: Hospital, payload: str | bytes) -> int | None:
    headers = {"Authorization": f"Bearer {h.token}"}
    async with connect(h.ws_url("W01"), additional_headers=headers, max_size=None, open_timeout=10) as ws:
        await ws.recv()  # the snapshot
        await ws.send(payload)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        except Exception:  # the close is what we are waiting for
            pass
        return ws.close_code


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=frames)
def test_any_client_frame_closes_the_socket_and_changes_nothing(
    ws_hospital: Hospital, payload: str | bytes
) -> None:
    before = httpx.get(
        f"{ws_hospital.server.base_url}/api/v1/wards/W01",
        headers={"Authorization": f"Bearer {ws_hospital.token}"},
    ).json()
    # A private loop: the suite's own loop is not running while a sync test runs.
    loop = asyncio.new_event_loop()
    try:
        code = loop.run_until_complete(_send_and_see_close(ws_hospital, payload))
    finally:
        loop.close()
    size = len(payload.encode() if isinstance(payload, str) else payload)
    assert code == (1009 if size > 64 * 1024 else 1008)
    after = httpx.get(
        f"{ws_hospital.server.base_url}/api/v1/wards/W01",
        headers={"Authorization": f"Bearer {ws_hospital.token}"},
    ).json()
    assert after == before
    assert httpx.get(f"{ws_hospital.server.base_url}/healthz").status_code == 200
