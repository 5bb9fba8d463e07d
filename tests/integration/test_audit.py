"""The audit trail: every change names its actor; admins read it all, IPC the flag events."""

from __future__ import annotations

from tests.integration.conftest import Hospital, bed_code, patient
from whiteboard.hl7 import fakepas
from whiteboard.service import PatientDetails


async def test_every_change_names_who_made_it_and_admins_can_filter(hospital: Hospital) -> None:
    nurse = hospital.new_token("audit-nurse", "nurse")
    feed = hospital.new_token("audit-feed", "feed")
    async with hospital.client(nurse) as api:
        r = await api.post("/api/v1/stays", json={"bed": bed_code(4, 3), "patient": patient(9)})
        assert r.status_code == 201
        stay = r.json()
    async with hospital.client(feed) as api:
        msg = fakepas.adt(
            "A08", PatientDetails(**patient(9)), attending="Dr Ada Okafor", control_id="AUDIT0001"
        )
        assert "MSA|AA" in (await api.post("/api/v1/hl7", content=msg.encode())).text
    async with hospital.client() as api:
        r = await api.post(
            f"/api/v1/patients/{stay['patient']['id']}/flags",
            json={"code": "CDIFF", "status": "confirmed", "precaution": "contact"},
        )
        assert r.status_code == 201
        everything = (await api.get("/api/v1/audit", params={"ward": "W04"})).json()["events"]
        actors = [e["actor"] for e in everything]
        assert "token:audit-nurse" in actors
        assert any(a.startswith("hl7:") and a.endswith(":AUDIT0001") for a in actors)
        assert "token:test-admin" in actors
        by_feed = (await api.get("/api/v1/audit", params={"actor": "hl7:*"})).json()["events"]
        assert by_feed and all(e["actor"].startswith("hl7:") for e in by_feed)
        mine = (await api.get("/api/v1/audit", params={"patient": stay["patient"]["id"]})).json()["events"]
        assert {e["type"] for e in mine} >= {"admit", "update", "flag_raise"}
        assert (await api.get("/api/v1/audit", params={"from": "yesterday"})).status_code == 400


async def test_ipc_reads_only_flag_events_and_others_are_refused(hospital: Hospital) -> None:
    ipc = hospital.new_token("audit-ipc", "ipc")
    viewer = hospital.new_token("audit-viewer", "viewer")
    nurse = hospital.new_token("audit-nurse-2", "nurse")
    async with hospital.client(ipc) as api:
        r = await api.get("/api/v1/audit")
        assert r.status_code == 200
        assert {e["type"] for e in r.json()["events"]} <= {"flag_raise", "flag_update"}
    for token in (viewer, nurse):
        async with hospital.client(token) as api:
            assert (await api.get("/api/v1/audit")).status_code == 403
    async with hospital.client("") as api:
        assert (await api.get("/api/v1/audit")).status_code == 401


async def test_a_misspelt_filter_is_refused_not_answered_as_if_there_were_no_filter(
    hospital: Hospital,
) -> None:
    async with hospital.client() as api:
        r = await api.get("/api/v1/audit", params={"wrd": "W01"})
        assert r.status_code == 400, r.text
        assert "wrd" in r.json()["error"]["message"]
        assert (await api.get("/api/v1/wards/W01", params={"veiw": "display"})).status_code == 400
        assert (await api.get("/api/v1/wards/W01/events", params={"snce": "3"})).status_code == 400
        # What each endpoint does take is still answered.
        assert (await api.get("/api/v1/audit", params={"ward": "W01", "limit": "5"})).status_code == 200
        assert (await api.get("/api/v1/wards/W01", params={"view": "display"})).status_code == 200
        assert (await api.get("/api/v1/wards/W01/events", params={"since": "0"})).status_code == 200
    async with hospital.client("") as api:  # credentials are still checked first
        assert (await api.get("/api/v1/audit", params={"wrd": "W01"})).status_code == 401
