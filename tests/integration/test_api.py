"""The JSON API in process (DESIGN 4.2 and 4.5): every endpoint's success shape, every error
status with its JSON body, the role matrix, and after every refusal, proof that nothing changed.

The app runs its real lifespan over a temporary SQLite database, behind httpx's ASGI transport;
the hospital, tokens, a user and a paired display are set up with the library calls the CLI uses.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette

from whiteboard.app import create_app
from whiteboard.layout import load_layout, parse_layout
from whiteboard.routes.auth import DISPLAY_COOKIE, SESSION_COOKIE, Cookies
from whiteboard.settings import load
from whiteboard.store import accounts, migrate
from whiteboard.store.engine import open_engines
from whiteboard.store.tables import metadata

SECRET = "api-test-secret-key-0123456789abcdef-0123456789abcdef"
MIB = 1 << 20

CLINICAL_READERS = frozenset({"admin", "nurse", "doctor", "ipc", "bed_manager", "viewer"})
TOKEN_ROLES = ("admin", "nurse", "doctor", "ipc", "bed_manager", "viewer", "feed")
ALL_ROLES = (*TOKEN_ROLES, "display")

STAY_KEYS = {
    "id", "version", "bed", "ward", "patient", "admitted_at", "consultant", "named_nurse", "edd",
    "day_status", "news2", "alerts", "discharge", "flags",
}  # fmt: skip
PATIENT_KEYS = {"id", "nhs_number", "mrn", "given_name", "family_name", "initials", "dob", "sex"}
DISCHARGE_KEYS = {"medically_optimised", "pathway", "tto_ready", "transport_booked", "home_first", "blockers"}
BED_KEYS = {"code", "bay", "kind", "state", "version", "stay"}
FLAG_KEYS = {"id", "code", "status", "precaution"}
DISPLAY_STAY_KEYS = {
    "patient", "consultant", "named_nurse", "edd", "day_status", "discharge", "flags", "alerts",
}  # fmt: skip
DISPLAY_DISCHARGE_KEYS = {"medically_optimised", "pathway", "tto_ready", "transport_booked"}


def layout() -> dict[str, Any]:
    """W01: five bay beds and a side room. W02: forty beds to spend. W03 (another site): none."""
    w01 = [{"code": f"W01-B1-{i}", "bay": "B1", "kind": "bay"} for i in range(1, 6)]
    w01.append({"code": "W01-SR-6", "bay": "SR", "kind": "side_room"})
    w02 = [{"code": f"W02-B{(i - 1) // 8 + 1}-{i}", "bay": f"B{(i - 1) // 8 + 1}"} for i in range(1, 41)]
    return {
        "sites": [
            {
                "code": "SJH",
                "name": "St James",
                "wards": [
                    {"code": "W01", "name": "Ward One", "specialty": "Medicine", "beds": w01},
                    {"code": "W02", "name": "Ward Two", "specialty": "Surgery", "beds": w02},
                ],
            },
            {
                "code": "RVI",
                "name": "Royal Victoria",
                "wards": [{"code": "W03", "name": "Ward Three", "beds": []}],
            },
        ]
    }


def nhs_number(n: int) -> str:
    """The n-th valid NHS number of the 999 test range (Modulus 11)."""
    found = -1
    for body in range(999_000_000, 999_999_999):
        digits = [int(d) for d in str(body)]
        check = 11 - sum(d * (10 - i) for i, d in enumerate(digits)) % 11
        if check == 10:
            continue
        found += 1
        if found == n:
            return f"{body}{0 if check == 11 else check}"
    raise AssertionError("unreachable")


BAD_NHS = "9990000019"  # 9990000018 with its check digit changed


def person(n: int, **over: Any) -> dict[str, Any]:
    return {
        "nhs_number": nhs_number(n),
        "mrn": f"MRN{n:05d}",
        "given_name": f"Grace{n}",
        "family_name": f"Hopper{n}",
        "dob": "1950-01-01",
        "sex": "female",
        **over,
    }


# --- the app under test ----------------------------------------------------------------------------


@dataclass
class Api:
    app: Starlette
    http: httpx.AsyncClient
    tokens: dict[str, str]
    display_cookie: str
    revoked_token: str
    next_patient: int = 100
    used_beds: set[str] = field(default_factory=set)

    def headers(self, role: str) -> dict[str, str]:
        if role == "anonymous":
            return {}
        if role == "display":
            return {"Cookie": f"{DISPLAY_COOKIE}={self.display_cookie}"}
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def call(self, role: str, method: str, url: str, **kw: Any) -> httpx.Response:
        headers = {**self.headers(role), **kw.pop("headers", {})}
        return await self.http.request(method, url, headers=headers, **kw)

    def free_bed(self) -> str:
        for i in range(1, 41):
            code = f"W02-B{(i - 1) // 8 + 1}-{i}"
            if code not in self.used_beds:
                self.used_beds.add(code)
                return code
        raise AssertionError("out of beds on W02")

    def new_person(self, **over: Any) -> dict[str, Any]:
        self.next_patient += 1
        return person(self.next_patient, **over)

    async def admit(self, bed: str | None = None, **extra: Any) -> dict[str, Any]:
        body = {"bed": bed or self.free_bed(), "patient": self.new_person(), **extra}
        r = await self.call("admin", "POST", "/api/v1/stays", json=body)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    async def flag(self, patient_id: str, status: str = "suspected", code: str = "MRSA") -> dict[str, Any]:
        r = await self.call(
            "admin",
            "POST",
            f"/api/v1/patients/{patient_id}/flags",
            json={"code": code, "status": status, "precaution": "contact"},
        )
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    async def snapshot(self, ward: str = "W01", view: str = "clinical") -> dict[str, Any]:
        r = await self.call("admin", "GET", f"/api/v1/wards/{ward}", params={"view": view})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def state(self) -> Any:
        """W01's snapshot as the API answers it, and every row of the store (so every ward's
        seq, beds, stays, events and flags): equal before and after means nothing changed."""
        rows = {}
        async with self.app.state.reader.connect() as conn:
            for table in metadata.sorted_tables:
                result = await conn.execute(select(table).order_by(*table.primary_key.columns))
                rows[table.name] = [tuple(r) for r in result]
        return await self.snapshot("W01"), rows


async def prepare_store(url: str) -> tuple[dict[str, str], str, str]:
    writer, reader = open_engines(url)
    try:
        await migrate.upgrade(writer)
        await load_layout(writer, parse_layout(layout()))
        tokens = {role: await accounts.create_token(writer, f"t-{role}", role) for role in TOKEN_ROLES}
        revoked = await accounts.create_token(writer, "t-revoked", "admin")
        await accounts.revoke_token(writer, "t-revoked")
        _display_id, code = await accounts.add_display(writer, "W01", "W01 corridor")
        display = await accounts.pair_display(writer, code)
        assert display is not None
        return tokens, revoked, Cookies(SECRET).display_value(display.name)
    finally:
        await writer.dispose()
        if reader is not writer:
            await reader.dispose()


@contextlib.asynccontextmanager
async def running_app(url: str) -> AsyncIterator[Api]:
    """The app over `url`, its lifespan running, with an ASGI client (no network)."""
    tokens, revoked, display_cookie = await prepare_store(url)
    settings = load(
        {
            "WHITEBOARD_DATABASE_URL": url,
            "WHITEBOARD_SECRET_KEY": SECRET,
            # Every write checks the process's cached boards against the store.
            "WHITEBOARD_VERIFY_BOARD_CACHE": "1",
        }
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield Api(app, http, tokens, display_cookie, revoked)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_app(f"sqlite+aiosqlite:///{tmp_path}/api.db") as running:
        yield running


@pytest.fixture
async def any_api(database_url: str) -> AsyncIterator[Api]:
    """The same app on the embedded SQLite and on PostgreSQL."""
    async with running_app(database_url) as running:
        yield running


def assert_error(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def refused(api: Api, status: int, role: str, method: str, url: str, **kw: Any) -> httpx.Response:
    """Send a request that must be refused with `status`, and check it changed nothing."""
    before = await api.state()
    r = await api.call(role, method, url, **kw)
    assert_error(r, status)
    assert await api.state() == before, f"{method} {url} ({status}) changed the board"
    return r


Call = tuple[str, str, str, dict[str, Any]]  # role, method, url, httpx keywords


async def all_refused(api: Api, status: int, calls: list[Call]) -> list[httpx.Response]:
    """Like `refused` for many requests at once: each is refused with `status`; none changed anything."""
    before = await api.state()
    answers = []
    for role, method, url, kw in calls:
        r = await api.call(role, method, url, **kw)
        assert_error(r, status)
        answers.append(r)
    assert await api.state() == before, f"one of {len(calls)} refused requests changed the board"
    return answers


# --- success shapes --------------------------------------------------------------------------------


def check_stay(stay: dict[str, Any]) -> None:
    assert set(stay) == STAY_KEYS, set(stay) ^ STAY_KEYS
    assert set(stay["patient"]) == PATIENT_KEYS
    assert set(stay["discharge"]) == DISCHARGE_KEYS
    assert all(set(f) == FLAG_KEYS for f in stay["flags"]), stay["flags"]
    assert isinstance(stay["version"], int) and isinstance(stay["alerts"], list)
    assert stay["admitted_at"].endswith("Z")


def check_bed(bed: dict[str, Any]) -> None:
    assert set(bed) == BED_KEYS, bed
    if bed["stay"] is not None:
        check_stay(bed["stay"])


async def test_ward_list_counts_beds(api: Api) -> None:
    r = await api.call("viewer", "GET", "/api/v1/wards")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == [
        {"code": "W01", "name": "Ward One", "site": "SJH", "beds_total": 6, "beds_free": 6},
        {"code": "W02", "name": "Ward Two", "site": "SJH", "beds_total": 40, "beds_free": 40},
        {"code": "W03", "name": "Ward Three", "site": "RVI", "beds_total": 0, "beds_free": 0},
    ]
    await api.admit("W01-B1-1")
    await api.call(
        "admin", "PATCH", "/api/v1/beds/W01-B1-2", json={"state": "closed"}, headers={"If-Match": '"1"'}
    )
    counts = {
        w["code"]: (w["beds_total"], w["beds_free"])
        for w in (await api.call("nurse", "GET", "/api/v1/wards")).json()
    }
    assert counts == {"W01": (6, 4), "W02": (40, 40), "W03": (0, 0)}


async def test_admit_transfer_edit_discharge_answer_with_the_stay(api: Api) -> None:
    body = {
        "bed": "W01-B1-1",
        "patient": person(1, nhs_number="999 000 0018"),
        "consultant": "Dr Ada Okafor",
        "named_nurse": "Sam",
        "edd": "2030-01-05",
    }
    r = await api.call("nurse", "POST", "/api/v1/stays", json=body)
    assert r.status_code == 201, r.text
    stay = r.json()
    check_stay(stay)
    assert r.headers["etag"] == f'"{stay["version"]}"'
    assert stay["bed"] == "W01-B1-1" and stay["ward"] == "W01"
    assert stay["patient"]["nhs_number"] == "9990000018"
    assert stay["patient"]["initials"] == "GH" and stay["patient"]["sex"] == "female"
    assert (stay["consultant"], stay["named_nurse"], stay["edd"]) == ("Dr Ada Okafor", "Sam", "2030-01-05")
    assert (
        stay["flags"] == [] and stay["alerts"] == [] and stay["news2"] is None and stay["day_status"] is None
    )

    # PATCH: If-Match, ETag, discharge readiness merged key by key.
    patch = {"news2": 7, "day_status": "red", "alerts": ["dnacpr", "falls_risk"], "discharge": {"pathway": 1}}
    r = await api.call(
        "doctor",
        "PATCH",
        f"/api/v1/stays/{stay['id']}",
        json=patch,
        headers={"If-Match": f'"{stay["version"]}"'},
    )
    assert r.status_code == 200, r.text
    stay = r.json()
    check_stay(stay)
    assert r.headers["etag"] == f'"{stay["version"]}"'
    assert stay["alerts"] == ["falls_risk", "dnacpr"] and stay["news2"] == 7 and stay["day_status"] == "red"
    r = await api.call(
        "nurse",
        "PATCH",
        f"/api/v1/stays/{stay['id']}",
        json={"discharge": {"tto_ready": True, "blockers": "waiting for OT"}},
        headers={"If-Match": f'W/"{stay["version"]}"'},
    )
    assert r.status_code == 200, r.text
    stay = r.json()
    assert stay["discharge"] == {
        "medically_optimised": False,
        "pathway": 1,
        "tto_ready": True,
        "transport_booked": False,
        "home_first": False,
        "blockers": "waiting for OT",
    }

    r = await api.call(
        "bed_manager", "POST", f"/api/v1/stays/{stay['id']}/transfer", json={"bed": "W02-B1-1"}
    )
    assert r.status_code == 200, r.text
    moved = r.json()
    check_stay(moved)
    assert (moved["bed"], moved["ward"], moved["id"]) == ("W02-B1-1", "W02", stay["id"])
    left = next(b for b in (await api.snapshot("W01"))["beds"] if b["code"] == "W01-B1-1")
    assert left["state"] == "dirty" and left["stay"] is None

    r = await api.call("nurse", "POST", f"/api/v1/stays/{stay['id']}/discharge", json={})
    assert r.status_code == 200, r.text
    check_stay(r.json())
    assert r.json()["id"] == stay["id"]
    bed = next(b for b in (await api.snapshot("W02"))["beds"] if b["code"] == "W02-B1-1")
    assert bed["state"] == "dirty" and bed["stay"] is None


async def test_clinical_snapshot_shape(api: Api) -> None:
    stay = await api.admit("W01-B1-2", consultant="Dr Who")
    await api.flag(stay["patient"]["id"])
    r = await api.call("viewer", "GET", "/api/v1/wards/W01")
    assert r.status_code == 200
    snap = r.json()
    assert set(snap) == {"ward", "seq", "beds", "unplaced"}
    assert (
        snap["ward"]["code"] == "W01" and snap["ward"]["name"] == "Ward One" and snap["ward"]["site"] == "SJH"
    )
    assert snap["seq"] == 2 and snap["unplaced"] == []
    assert [b["code"] for b in snap["beds"]] == [f"W01-B1-{i}" for i in range(1, 6)] + ["W01-SR-6"]
    for bed in snap["beds"]:
        check_bed(bed)
    taken = snap["beds"][1]
    assert taken["state"] == "occupied" and taken["stay"]["id"] == stay["id"]
    assert [(f["code"], f["status"], f["precaution"]) for f in taken["stay"]["flags"]] == [
        ("MRSA", "suspected", "contact")
    ]
    assert snap["beds"][5]["kind"] == "side_room" and snap["beds"][5]["bay"] == "SR"
    assert snap == await api.snapshot("W01", "clinical")


async def test_display_view_is_an_allow_list(api: Api) -> None:
    stay = await api.admit("W01-B1-3", consultant="Dr Who", named_nurse="Amy", edd="2030-02-01")
    await api.call(
        "admin",
        "PATCH",
        f"/api/v1/stays/{stay['id']}",
        json={
            "news2": 9,
            "alerts": ["falls_risk", "dnacpr", "dementia", "allergy"],
            "discharge": {"medically_optimised": True, "pathway": 2, "blockers": "secret blocker text"},
        },
        headers={"If-Match": '"1"'},
    )
    await api.flag(stay["patient"]["id"], status="confirmed", code="CPE")
    for role in ("display", "viewer", "nurse"):
        r = await api.call(role, "GET", "/api/v1/wards/W01", params={"view": "display"})
        assert r.status_code == 200, (role, r.text)
        snap = r.json()
        assert set(snap) == {"ward", "seq", "beds", "unplaced"} and snap["unplaced"] == []
        for bed in snap["beds"]:
            assert set(bed) == BED_KEYS
        shown = next(b for b in snap["beds"] if b["code"] == "W01-B1-3")["stay"]
        assert set(shown) == DISPLAY_STAY_KEYS
        assert shown["patient"] == {"initials": stay["patient"]["initials"]}
        assert set(shown["discharge"]) == DISPLAY_DISCHARGE_KEYS
        assert shown["discharge"] == {
            "medically_optimised": True,
            "pathway": 2,
            "tto_ready": False,
            "transport_booked": False,
        }
        assert shown["flags"] == [{"status": "confirmed", "precaution": "contact"}]
        assert shown["alerts"] == ["falls_risk", "dementia"]
        text = r.text
        for secret in (
            stay["patient"]["given_name"], stay["patient"]["family_name"], stay["patient"]["mrn"],
            stay["patient"]["nhs_number"], stay["patient"]["id"], stay["id"], "1950-01-01", "CPE",
            "secret blocker text", "dnacpr", "allergy", "news2",
        ):  # fmt: skip
            assert secret not in text, (role, secret)
    # A display's default view is the display view; it may not ask for the clinical one.
    r = await api.call("display", "GET", "/api/v1/wards/W01")
    assert (
        r.status_code == 200
        and r.json() == (await api.call("display", "GET", "/api/v1/wards/W01?view=display")).json()
    )


async def test_events_since_and_limit(api: Api) -> None:
    stay = await api.admit("W01-B1-1")
    for news2 in range(4):
        r = await api.call(
            "nurse",
            "PATCH",
            f"/api/v1/stays/{stay['id']}",
            json={"news2": news2},
            headers={"If-Match": f'"{stay["version"]}"'},
        )
        stay = r.json()
    await api.call("nurse", "POST", f"/api/v1/stays/{stay['id']}/transfer", json={"bed": "W01-B1-2"})
    r = await api.call("doctor", "GET", "/api/v1/wards/W01/events", params={"since": 0})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"events"}
    events = body["events"]
    assert [e["seq"] for e in events] == list(range(1, 8))
    assert [e["type"] for e in events] == ["admit"] + ["stay_update"] * 4 + ["transfer", "transfer"]
    for e in events:
        assert (
            {"seq", "at", "actor", "type"}
            <= set(e)
            <= {"seq", "at", "actor", "type", "bed", "unplaced", "before", "detail"}
        ), e
        assert e["at"].endswith("Z") and e["actor"] == ("token:t-admin" if e["seq"] == 1 else "token:t-nurse")
        check_bed(e["bed"])
        check_bed(e["before"])
    assert events[0]["before"]["state"] == "available" and events[0]["bed"]["state"] == "occupied"
    since = (await api.call("ipc", "GET", "/api/v1/wards/W01/events?since=3&limit=2")).json()["events"]
    assert [e["seq"] for e in since] == [4, 5]
    assert (await api.call("admin", "GET", "/api/v1/wards/W01/events?since=7")).json() == {"events": []}
    assert (await api.call("admin", "GET", "/api/v1/wards/W03/events")).json() == {"events": []}
    default = (await api.call("admin", "GET", "/api/v1/wards/W01/events")).json()["events"]
    assert default == events


async def test_bed_patch_answers_with_the_bed_and_its_etag(api: Api) -> None:
    r = await api.call(
        "bed_manager", "PATCH", "/api/v1/beds/W01-B1-4", json={"state": "closed"}, headers={"If-Match": '"1"'}
    )
    assert r.status_code == 200, r.text
    bed = r.json()
    check_bed(bed)
    assert bed["state"] == "closed" and bed["version"] == 2 and r.headers["etag"] == '"2"'
    r = await api.call(
        "nurse", "PATCH", "/api/v1/beds/W01-B1-4", json={"state": "available"}, headers={"If-Match": '"2"'}
    )
    assert r.status_code == 200 and r.json()["state"] == "available" and r.headers["etag"] == '"3"'


async def test_flags_raise_confirm_clear_and_follow_the_patient(api: Api) -> None:
    stay = await api.admit("W01-B1-5")
    seq = (await api.snapshot("W01"))["seq"]
    r = await api.call(
        "doctor",
        "POST",
        f"/api/v1/patients/{stay['patient']['id']}/flags",
        json={"code": "norovirus", "status": "suspected", "precaution": "contact"},
    )
    assert r.status_code == 201, r.text
    flag = r.json()
    assert set(flag) >= FLAG_KEYS and flag["code"] == "NOROVIRUS" and flag["status"] == "suspected"
    snap = await api.snapshot("W01")
    assert snap["seq"] == seq + 1
    assert [f["id"] for f in snap["beds"][4]["stay"]["flags"]] == [flag["id"]]
    r = await api.call("ipc", "PATCH", f"/api/v1/flags/{flag['id']}", json={"status": "confirmed"})
    assert r.status_code == 200 and r.json()["status"] == "confirmed"
    r = await api.call("ipc", "PATCH", f"/api/v1/flags/{flag['id']}", json={"status": "cleared"})
    assert r.status_code == 200 and r.json()["status"] == "cleared"
    snap = await api.snapshot("W01")
    assert snap["seq"] == seq + 3 and snap["beds"][4]["stay"]["flags"] == []


async def test_a_flag_raised_while_not_admitted_waits_for_the_next_admission(api: Api) -> None:
    who = person(7)
    r = await api.call("nurse", "POST", "/api/v1/stays", json={"bed": "W01-B1-1", "patient": who})
    first = r.json()
    r = await api.call("nurse", "POST", f"/api/v1/stays/{first['id']}/discharge", json={})
    assert r.status_code == 200
    before = {w: (await api.snapshot(w))["seq"] for w in ("W01", "W02")}
    r = await api.call(
        "ipc",
        "POST",
        f"/api/v1/patients/{first['patient']['id']}/flags",
        json={"code": "CPE", "status": "confirmed", "precaution": "contact"},
    )
    assert r.status_code == 201, r.text
    flag = r.json()
    # Nobody shows it yet: no event on any ward.
    assert {w: (await api.snapshot(w))["seq"] for w in ("W01", "W02")} == before
    r = await api.call("bed_manager", "POST", "/api/v1/stays", json={"bed": "W02-B1-2", "patient": who})
    assert r.status_code == 201, r.text
    again = r.json()
    assert again["id"] != first["id"] and again["patient"]["id"] == first["patient"]["id"]
    assert again["flags"] == [
        {"id": flag["id"], "code": "CPE", "status": "confirmed", "precaution": "contact"}
    ]
    shown = next(b for b in (await api.snapshot("W02"))["beds"] if b["code"] == "W02-B1-2")
    assert shown["stay"]["flags"] == again["flags"]


# --- health ----------------------------------------------------------------------------------------


async def test_health_readiness_and_metrics(api: Api) -> None:
    r = await api.http.get("/healthz")
    assert r.status_code == 200
    r = await api.http.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"database", "broker"}
    assert body["database"] == {"up": True}
    assert body["broker"]["up"] is True and body["broker"]["name"] == "memory"
    await api.admit()
    r = await api.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "# TYPE whiteboard_commands_total counter" in r.text
    assert 'whiteboard_commands_total{kind="admit",result="ok"}' in r.text


# --- the role matrix ---------------------------------------------------------------------------------

Request = tuple[str, str, dict[str, Any]]


@dataclass(frozen=True)
class Action:
    name: str
    allowed: frozenset[str]
    ok: int
    #: Sets up what the request needs (as admin) and returns it.
    make: Callable[[Api], Awaitable[Request]]
    write: bool = True
    #: Roles allowed a part of this action (a nurse raises suspected flags): with a body the
    #: server cannot read, it cannot tell which part was asked for, so 400 is right for them.
    partly: frozenset[str] = frozenset()


async def _get(url: str) -> Request:
    return "GET", url, {}


async def _admit(api: Api) -> Request:
    return "POST", "/api/v1/stays", {"json": {"bed": api.free_bed(), "patient": api.new_person()}}


async def _transfer(api: Api) -> Request:
    stay = await api.admit()
    return "POST", f"/api/v1/stays/{stay['id']}/transfer", {"json": {"bed": api.free_bed()}}


async def _discharge(api: Api) -> Request:
    stay = await api.admit()
    return "POST", f"/api/v1/stays/{stay['id']}/discharge", {"json": {}}


async def _patch_stay(api: Api) -> Request:
    stay = await api.admit()
    return "PATCH", f"/api/v1/stays/{stay['id']}", {"json": {"news2": 3}, "headers": {"If-Match": '"1"'}}


async def _patch_bed(api: Api) -> Request:
    return (
        "PATCH",
        f"/api/v1/beds/{api.free_bed()}",
        {"json": {"state": "closed"}, "headers": {"If-Match": '"1"'}},
    )


def _raise(status: str) -> Callable[[Api], Awaitable[Request]]:
    async def make(api: Api) -> Request:
        stay = await api.admit()
        body = {"code": "MRSA", "status": status, "precaution": "contact"}
        return "POST", f"/api/v1/patients/{stay['patient']['id']}/flags", {"json": body}

    return make


async def _patch_flag(api: Api) -> Request:
    stay = await api.admit()
    flag = await api.flag(stay["patient"]["id"])
    return "PATCH", f"/api/v1/flags/{flag['id']}", {"json": {"status": "confirmed"}}


async def _hl7(_api: Api) -> Request:
    return (
        "POST",
        "/api/v1/hl7",
        {"content": b"not an HL7 message", "headers": {"Content-Type": "text/plain"}},
    )


READERS_OF_EVENTS = frozenset({"admin", "nurse", "doctor", "ipc", "bed_manager"})
ACTIONS = [
    Action("list wards", CLINICAL_READERS, 200, lambda _a: _get("/api/v1/wards"), write=False),
    Action(
        "clinical snapshot",
        CLINICAL_READERS,
        200,
        lambda _a: _get("/api/v1/wards/W01?view=clinical"),
        write=False,
    ),
    Action(
        "display snapshot",
        CLINICAL_READERS | {"display"},
        200,
        lambda _a: _get("/api/v1/wards/W01?view=display"),
        write=False,
    ),
    Action(
        "another ward's display view",
        CLINICAL_READERS,
        200,
        lambda _a: _get("/api/v1/wards/W02?view=display"),
        write=False,
    ),
    Action(
        "events", READERS_OF_EVENTS, 200, lambda _a: _get("/api/v1/wards/W01/events?since=0"), write=False
    ),
    Action("admit", frozenset({"admin", "nurse", "bed_manager"}), 201, _admit),
    Action("transfer", frozenset({"admin", "nurse", "bed_manager"}), 200, _transfer),
    Action("discharge", frozenset({"admin", "nurse", "bed_manager"}), 200, _discharge),
    Action("edit a stay", frozenset({"admin", "nurse", "doctor"}), 200, _patch_stay),
    Action("set a bed's state", frozenset({"admin", "nurse", "bed_manager"}), 200, _patch_bed),
    Action(
        "raise a suspected flag", frozenset({"admin", "nurse", "doctor", "ipc"}), 201, _raise("suspected")
    ),
    Action(
        "raise a confirmed flag",
        frozenset({"admin", "ipc"}),
        201,
        _raise("confirmed"),
        partly=frozenset({"nurse", "doctor"}),
    ),
    Action("confirm or clear a flag", frozenset({"admin", "ipc"}), 200, _patch_flag),
    Action("post HL7", frozenset({"admin", "feed"}), 200, _hl7),
]


@pytest.mark.parametrize("role", ALL_ROLES)
async def test_role_matrix(api: Api, role: str) -> None:
    """Each role may do what DESIGN 4.5 gives it and gets 403, changing nothing, for the rest —
    before its input is even looked at (a garbage body is still 403)."""
    wrong: list[str] = []
    for action in ACTIONS:
        method, url, kw = await action.make(api)
        before = await api.state()
        r = await api.call(role, method, url, **kw)
        expected = action.ok if role in action.allowed else 403
        if r.status_code != expected:
            wrong.append(f"{role} {action.name}: {r.status_code} (expected {expected}) {r.text[:200]}")
            continue
        if expected == 403:
            assert_error(r, 403)
            if await api.state() != before:
                wrong.append(f"{role} {action.name}: refused but changed the board")
            if action.write and role not in action.partly:
                garbage = {
                    "content": b"{this is not json",
                    "headers": {"If-Match": "nonsense", **kw.get("headers", {})},
                }
                r = await api.call(role, method, url, **garbage)
                if r.status_code != 403:
                    wrong.append(f"{role} {action.name} with a garbage body: {r.status_code}, expected 403")
        elif action.name == "post HL7":
            assert "MSA|AR" in r.text, r.text
    assert wrong == [], "\n".join(wrong)


async def test_authorisation_comes_before_validation(api: Api) -> None:
    # A viewer sending garbage JSON to admit: 403, not 400.
    await refused(api, 403, "viewer", "POST", "/api/v1/stays", content=b"{{{ not json")
    await refused(api, 403, "viewer", "POST", "/api/v1/stays", json={"bed": 7})
    # A nurse raising a confirmed flag: 403, even with an otherwise invalid body and patient.
    stay = await api.admit()
    pid = stay["patient"]["id"]
    for body in (
        {"status": "confirmed"},
        {"status": "confirmed", "code": 12, "precaution": "shouting"},
        {"status": "confirmed", "code": "MRSA", "precaution": "contact", "extra": True},
    ):
        await refused(api, 403, "nurse", "POST", f"/api/v1/patients/{pid}/flags", json=body)
    await refused(api, 403, "nurse", "POST", "/api/v1/patients/p-nobody/flags", json={"status": "confirmed"})
    # And the same nurse may raise a suspected one.
    r = await api.call(
        "nurse",
        "POST",
        f"/api/v1/patients/{pid}/flags",
        json={"code": "MRSA", "status": "suspected", "precaution": "contact"},
    )
    assert r.status_code == 201, r.text
    # A role that may not edit learns nothing about the stay or the version either.
    await refused(api, 403, "ipc", "PATCH", "/api/v1/stays/s-nobody", json={"news2": 99})
    await refused(api, 403, "doctor", "POST", "/api/v1/stays/s-nobody/discharge", content=b"[")
    await refused(
        api, 403, "feed", "PATCH", "/api/v1/beds/NOPE", json={"state": "x"}, headers={"If-Match": "?"}
    )


class _Form(HTMLParser):
    """The hidden fields of a page's forms and its <meta name="csrf-token">."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden: dict[str, str] = {}
        self.csrf: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "input" and a.get("type") == "hidden" and a.get("name"):
            self.hidden[a["name"]] = a.get("value", "")
        if tag == "meta" and a.get("name") == "csrf-token":
            self.csrf = a.get("content")


def read_form(html: str) -> _Form:
    form = _Form()
    form.feed(html)
    return form


async def sign_in(api: Api, username: str, password: str) -> tuple[httpx.AsyncClient, str]:
    """A browser signed in through /login (DESIGN 4.1), and the CSRF token its pages carry."""
    browser = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.app, raise_app_exceptions=False),
        base_url="http://testserver",
        headers={"Origin": "http://testserver", "Accept": "text/html"},
    )
    page = await browser.get("/login")
    assert page.status_code == 200, page.text
    fields = {**read_form(page.text).hidden, "username": username, "password": password}
    r = await browser.post("/login", data=fields)
    assert r.status_code == 303, r.text
    assert SESSION_COOKIE in browser.cookies
    home = await browser.get(r.headers["location"])
    csrf = read_form(home.text).csrf
    assert home.status_code == 200 and csrf, home.text[:500]
    return browser, csrf


async def test_cookie_sessions_need_the_csrf_token_to_write(api: Api) -> None:
    await accounts.add_user(api.app.state.writer, "nurse.ann", "nurse", "a long enough password")
    browser, csrf = await sign_in(api, "nurse.ann", "a long enough password")
    try:
        body = {"bed": "W01-B1-1", "patient": person(3)}
        r = await browser.get("/api/v1/wards/W01")
        assert r.status_code == 200
        for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
            before = await api.state()
            r = await browser.post("/api/v1/stays", json=body, headers=headers)
            assert_error(r, 403)
            assert await api.state() == before
        r = await browser.post("/api/v1/stays", json=body, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201, r.text
        assert r.json()["patient"]["nhs_number"] == person(3)["nhs_number"]
        # Through a session, too, the role is checked before the body is read: a nurse may raise
        # suspected flags, so an unreadable flag body is 400; confirming a flag is 403 outright.
        r = await browser.post(
            f"/api/v1/patients/{r.json()['patient']['id']}/flags",
            content=b"{not json",
            headers={"X-CSRF-Token": csrf},
        )
        assert_error(r, 400)
        r = await browser.patch(
            "/api/v1/flags/f-nope", json={"status": "cleared"}, headers={"X-CSRF-Token": csrf}
        )
        assert_error(r, 403)
    finally:
        await browser.aclose()


# --- 401 -------------------------------------------------------------------------------------------


async def test_no_bad_or_revoked_credentials_are_401(api: Api) -> None:
    credentials = {
        "none": {},
        "unknown token": {"Authorization": "Bearer wbt_" + "x" * 43},
        "not our token shape": {"Authorization": "Bearer hunter2"},
        "revoked token": {"Authorization": f"Bearer {api.revoked_token}"},
        "empty bearer": {"Authorization": "Bearer "},
        "basic auth": {"Authorization": "Basic YWRtaW46YWRtaW4="},
        "forged session": {"Cookie": f"{SESSION_COOKIE}=eyJ1IjoiYWRtaW4ifQ.forged.sig"},
        "forged display": {"Cookie": f"{DISPLAY_COOKIE}=eyJkIjoiZDEifQ.forged.sig"},
    }
    for action in ACTIONS:
        method, url, kw = await action.make(api)
        calls = [
            ("anonymous", method, url, {**kw, "headers": {**kw.get("headers", {}), **headers}})
            for headers in credentials.values()
        ]
        for what, r in zip(credentials, await all_refused(api, 401, calls), strict=True):
            assert r.json()["error"]["code"] == "unauthenticated", (action.name, what)
    # No credentials and a garbage body: 401 still comes first.
    await refused(api, 401, "anonymous", "POST", "/api/v1/stays", content=b"{{{")


# --- 400 / 404 / 409 / 412 / 413 / 422 / 428 ----------------------------------------------------------


async def test_unparseable_json_query_or_header_is_400(api: Api) -> None:
    stay = await api.admit("W01-B1-1")
    sid, pid = stay["id"], stay["patient"]["id"]
    flag = await api.flag(pid)
    v = {"If-Match": '"1"'}
    for method, url, headers in (
        ("POST", "/api/v1/stays", {}),
        ("POST", f"/api/v1/stays/{sid}/transfer", {}),
        ("POST", f"/api/v1/stays/{sid}/discharge", {}),
        ("PATCH", f"/api/v1/stays/{sid}", v),
        ("PATCH", "/api/v1/beds/W01-B1-2", v),
        ("POST", f"/api/v1/patients/{pid}/flags", {}),
        ("PATCH", f"/api/v1/flags/{flag['id']}", {}),
    ):
        bodies = (b"{not json", b"", b"   ", b'{"bed": "W01-B1-2",}', b"\xff\xfe{}", b"[" * 100_000)
        await all_refused(
            api, 400, [("admin", method, url, {"content": b, "headers": headers}) for b in bodies]
        )
    queries = (
        "since=abc",
        "since=-1",
        "since=1.5",
        "limit=0",
        "limit=1001",
        "limit=ten",
        "since=99999999999999999999",
    )
    await all_refused(api, 400, [("admin", "GET", f"/api/v1/wards/W01/events?{q}", {}) for q in queries])
    await refused(api, 400, "admin", "GET", "/api/v1/wards/W01?view=sideways")
    await refused(api, 400, "admin", "GET", "/api/v1/wards/W01?view=")
    calls: list[Call] = []
    for header in ("banana", '"abc"', '"-1"', '"1", "2"', '"99999999999999"', ""):
        calls.append(
            (
                "admin",
                "PATCH",
                f"/api/v1/stays/{sid}",
                {"json": {"news2": 1}, "headers": {"If-Match": header}},
            )
        )
        calls.append(
            (
                "admin",
                "PATCH",
                "/api/v1/beds/W01-B1-2",
                {"json": {"state": "closed"}, "headers": {"If-Match": header}},
            )
        )
    await all_refused(api, 400, calls)


async def test_an_if_match_with_an_unbalanced_quote_is_400(api: Api) -> None:
    """`"1` and `1"` are not entity tags (RFC 9110 8.8.3): unparseable, so 400, not a match."""
    stay = await api.admit("W01-B1-1")
    calls: list[Call] = []
    for header in ('"1', '1"', 'W/"1'):
        calls.append(
            (
                "admin",
                "PATCH",
                f"/api/v1/stays/{stay['id']}",
                {"json": {"news2": 1}, "headers": {"If-Match": header}},
            )
        )
        calls.append(
            (
                "admin",
                "PATCH",
                "/api/v1/beds/W01-B1-2",
                {"json": {"state": "closed"}, "headers": {"If-Match": header}},
            )
        )
    await all_refused(api, 400, calls)


async def test_unknown_things_are_404(api: Api) -> None:
    stay = await api.admit("W01-B1-1")
    v = {"If-Match": '"1"'}
    await refused(api, 404, "admin", "GET", "/api/v1/wards/NOPE")
    await refused(api, 404, "admin", "GET", "/api/v1/wards/NOPE?view=display")
    await refused(api, 404, "admin", "GET", "/api/v1/wards/NOPE/events")
    await refused(api, 404, "admin", "GET", "/api/v1/nothing-here")
    await refused(api, 404, "admin", "POST", "/api/v1/stays", json={"bed": "NOPE-1", "patient": person(1)})
    await refused(api, 404, "admin", "POST", "/api/v1/stays/s-nope/transfer", json={"bed": "W01-B1-2"})
    await refused(api, 404, "admin", "POST", f"/api/v1/stays/{stay['id']}/transfer", json={"bed": "NOPE-1"})
    await refused(api, 404, "admin", "POST", "/api/v1/stays/s-nope/discharge", json={})
    await refused(api, 404, "admin", "PATCH", "/api/v1/stays/s-nope", json={"news2": 1}, headers=v)
    await refused(api, 404, "admin", "PATCH", "/api/v1/beds/NOPE-1", json={"state": "closed"}, headers=v)
    await refused(
        api,
        404,
        "admin",
        "POST",
        "/api/v1/patients/p-nope/flags",
        json={"code": "MRSA", "status": "suspected", "precaution": "contact"},
    )
    await refused(api, 404, "admin", "PATCH", "/api/v1/flags/f-nope", json={"status": "cleared"})
    # A discharged stay is no longer open: it cannot be discharged, moved or edited again.
    await api.call("admin", "POST", f"/api/v1/stays/{stay['id']}/discharge", json={})
    await refused(api, 404, "admin", "POST", f"/api/v1/stays/{stay['id']}/discharge", json={})
    await refused(
        api,
        404,
        "admin",
        "PATCH",
        f"/api/v1/stays/{stay['id']}",
        json={"news2": 1},
        headers={"If-Match": '"2"'},
    )


async def test_conflicts_with_the_board_are_409(api: Api) -> None:
    occupant = await api.admit("W01-B1-1")
    await api.call(
        "admin", "PATCH", "/api/v1/beds/W01-B1-2", json={"state": "closed"}, headers={"If-Match": '"1"'}
    )
    await api.call(
        "admin", "PATCH", "/api/v1/beds/W01-B1-3", json={"state": "dirty"}, headers={"If-Match": '"1"'}
    )
    for bed in ("W01-B1-1", "W01-B1-2", "W01-B1-3"):
        await refused(api, 409, "nurse", "POST", "/api/v1/stays", json={"bed": bed, "patient": person(50)})
    # The same patient twice: transfer them instead.
    again = {
        "bed": "W01-B1-4",
        "patient": {**person(0), **{k: occupant["patient"][k] for k in ("nhs_number", "mrn")}},
    }
    await refused(api, 409, "nurse", "POST", "/api/v1/stays", json=again)
    # Closing (or dirtying) an occupied bed.
    await refused(
        api,
        409,
        "nurse",
        "PATCH",
        "/api/v1/beds/W01-B1-1",
        json={"state": "closed"},
        headers={"If-Match": '"2"'},
    )
    await refused(
        api,
        409,
        "nurse",
        "PATCH",
        "/api/v1/beds/W01-B1-1",
        json={"state": "available"},
        headers={"If-Match": '"2"'},
    )
    # Transfer into an occupied, closed or dirty bed, or the bed they are in.
    other = await api.admit("W01-B1-5")
    for bed in ("W01-B1-1", "W01-B1-2", "W01-B1-3", "W01-B1-5"):
        await refused(api, 409, "nurse", "POST", f"/api/v1/stays/{other['id']}/transfer", json={"bed": bed})
    # A second active flag for one organism; a confirmed flag back to suspected.
    flag = await api.flag(occupant["patient"]["id"], status="confirmed")
    await refused(
        api,
        409,
        "ipc",
        "POST",
        f"/api/v1/patients/{occupant['patient']['id']}/flags",
        json={"code": "MRSA", "status": "suspected", "precaution": "contact"},
    )
    await refused(api, 409, "ipc", "PATCH", f"/api/v1/flags/{flag['id']}", json={"status": "suspected"})


async def test_a_stale_if_match_is_412_and_changes_nothing(api: Api) -> None:
    stay = await api.admit("W01-B1-1")
    r = await api.call(
        "nurse", "PATCH", f"/api/v1/stays/{stay['id']}", json={"news2": 2}, headers={"If-Match": '"1"'}
    )
    assert r.status_code == 200 and r.headers["etag"] == '"2"'
    for version in ('"1"', '"3"', '"0"', 'W/"1"'):
        await refused(
            api,
            412,
            "nurse",
            "PATCH",
            f"/api/v1/stays/{stay['id']}",
            json={"news2": 9},
            headers={"If-Match": version},
        )
    r = await api.call(
        "nurse", "PATCH", "/api/v1/beds/W01-B1-2", json={"state": "closed"}, headers={"If-Match": '"1"'}
    )
    assert r.status_code == 200
    await refused(
        api,
        412,
        "nurse",
        "PATCH",
        "/api/v1/beds/W01-B1-2",
        json={"state": "available"},
        headers={"If-Match": '"1"'},
    )


async def test_bodies_over_one_mebibyte_are_413(api: Api) -> None:
    big = b'{"bed": "W01-B1-1", "pad": "' + b"x" * MIB + b'"}'
    # From Content-Length, before authentication: no credentials at all still hears 413.
    for method, url in (
        ("POST", "/api/v1/stays"),
        ("PATCH", "/api/v1/beds/W01-B1-1"),
        ("POST", "/api/v1/hl7"),
    ):
        await refused(api, 413, "anonymous", method, url, content=big)
        await refused(api, 413, "admin", method, url, content=big, headers={"If-Match": '"1"'})

    # Chunked (no Content-Length): refused as soon as the body passes 1 MiB.
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"bed": "W01-B1-1", "pad": "'
        for _ in range(20):
            yield b"x" * (64 * 1024)
        yield b'"}'

    for method, url, headers in (
        ("POST", "/api/v1/stays", {}),
        ("PATCH", "/api/v1/beds/W01-B1-1", {"If-Match": '"1"'}),
        ("POST", "/api/v1/hl7", {}),
    ):
        r = await refused(api, 413, "admin", method, url, content=chunks(), headers=headers)
        assert "content-length" not in {k.lower() for k in r.request.headers}
    # Exactly 1 MiB is allowed through to validation (here: 422 for the unknown field).
    at_limit = b'{"bed": "W01-B1-1", "p": "' + b"x" * (MIB - 26 - 2) + b'"}'
    assert len(at_limit) == MIB
    await refused(api, 422, "admin", "POST", "/api/v1/stays", content=at_limit)


async def test_well_formed_but_invalid_is_422(api: Api) -> None:
    stay = await api.admit("W01-B1-1")
    sid, pid = stay["id"], stay["patient"]["id"]
    v = {"If-Match": '"1"'}
    admits = [
        {"patient": person(60, nhs_number=BAD_NHS)},
        {"patient": person(60, nhs_number="12345")},
        {"patient": person(60, nhs_number="999000001\uff18")},
        {"patient": person(60, dob="1950-02-30")},
        {"patient": person(60, dob="01/02/1950")},
        {"patient": person(60, sex="yes")},
        {"patient": person(60, mrn="")},
        {"patient": person(60, given_name="x" * 201)},
        {"patient": person(60), "edd": "2030-13-01"},
        {"patient": person(60), "edd": 20300101},
        {"patient": person(60), "consultant": "x" * 5000},
        {"patient": person(60), "ward": "W01"},
        {"patient": {**person(60), "height": 180}},
        {"patient": "Grace Hopper"},
        {},
    ]
    calls: list[Call] = [
        ("nurse", "POST", "/api/v1/stays", {"json": {"bed": "W01-B1-2", **extra}}) for extra in admits
    ]
    not_objects = (b'["W01-B1-2"]', b'"W01-B1-2"', b"null", b"7", b"true")
    calls += [("nurse", "POST", "/api/v1/stays", {"content": body}) for body in not_objects]
    patches = [
        {"alerts": ["falls_risk", "vampire"]},
        {"alerts": "falls_risk"},
        {"news2": 21},
        {"news2": -1},
        {"news2": 5.5},
        {"news2": True},
        {"news2": "5"},
        {"discharge": {"pathway": 4}},
        {"discharge": {"pathway": True}},
        {"discharge": {"tto_ready": "yes"}},
        {"discharge": {"blockers": "x" * 1001}},
        {"discharge": {"sofa": True}},
        {"discharge": None},
        {"edd": "2030-02-30"},
        {"edd": "tomorrow"},
        {"day_status": "amber"},
        {"bed": "W01-B1-3"},
        {"version": 9},
    ]
    calls += [("doctor", "PATCH", f"/api/v1/stays/{sid}", {"json": body, "headers": v}) for body in patches]
    for body in (
        {"state": "occupied"},
        {"state": "broken"},
        {"state": None},
        {},
        {"state": "closed", "why": "x"},
    ):
        calls.append(("nurse", "PATCH", "/api/v1/beds/W01-B1-2", {"json": body, "headers": v}))
    calls.append(("nurse", "POST", f"/api/v1/stays/{sid}/transfer", {"json": {"bed": ["W01-B1-2"]}}))
    calls.append(("nurse", "POST", f"/api/v1/stays/{sid}/discharge", {"json": {"when": "now"}}))
    for body in (
        {"code": "MRSA", "status": "cleared", "precaution": "contact"},
        {"code": "MRSA", "status": "suspected", "precaution": "shouting"},
        {"code": "mr sa", "status": "suspected", "precaution": "contact"},
        {"code": 7, "status": "suspected", "precaution": "contact"},
        {"code": "MRSA", "status": "suspected"},
    ):
        calls.append(("ipc", "POST", f"/api/v1/patients/{pid}/flags", {"json": body}))
    await all_refused(api, 422, calls)
    flag = await api.flag(pid)
    bodies = ({"status": "gone"}, {}, {"status": "cleared", "reason": "x"})
    await all_refused(
        api, 422, [("ipc", "PATCH", f"/api/v1/flags/{flag['id']}", {"json": b}) for b in bodies]
    )


async def test_patch_without_if_match_is_428(api: Api) -> None:
    stay = await api.admit("W01-B1-1")
    await refused(api, 428, "nurse", "PATCH", f"/api/v1/stays/{stay['id']}", json={"news2": 1})
    await refused(api, 428, "nurse", "PATCH", "/api/v1/beds/W01-B1-2", json={"state": "closed"})


async def test_errors_never_leak_a_500_for_odd_input(any_api: Api) -> None:
    """A sweep of odd bodies over every write: whatever the status, never a 500, always the
    JSON error shape, and nothing changed unless the request succeeded."""
    stay = await any_api.admit("W01-B1-1")
    flag = await any_api.flag(stay["patient"]["id"])
    targets = [
        ("POST", "/api/v1/stays", {}),
        ("POST", f"/api/v1/stays/{stay['id']}/transfer", {}),
        ("PATCH", f"/api/v1/stays/{stay['id']}", {"If-Match": '"1"'}),
        ("PATCH", "/api/v1/beds/W01-B1-3", {"If-Match": '"1"'}),
        ("POST", f"/api/v1/patients/{stay['patient']['id']}/flags", {}),
        ("PATCH", f"/api/v1/flags/{flag['id']}", {}),
    ]
    odd_bodies: list[Any] = [
        None, 0, 1e309, "x", [], [{}], {"": ""}, {"bed": None}, {"bed": {"$ne": 1}},
        {"patient": None}, {"patient": []}, {"bed": "W01-B1-3", "patient": {"mrn": None}},
        {"news2": 10**30}, {"alerts": [None]}, {"alerts": [["falls_risk"]]}, {"discharge": []},
        {"discharge": {"pathway": "1"}}, {"state": ["closed"]}, {"status": ["cleared"]},
        {"code": None, "status": "suspected", "precaution": "contact"},
        {"consultant": "\u0007"}, {"state": "closed\n"},
    ]  # fmt: skip
    for method, url, headers in targets:
        before = await any_api.state()
        for body in odd_bodies:
            r = await any_api.call("admin", method, url, content=json.dumps(body).encode(), headers=headers)
            assert 400 <= r.status_code < 500, (method, url, body, r.status_code, r.text)
            assert_error(r, r.status_code)
        assert await any_api.state() == before, (method, url)


async def test_nul_characters_are_refused_never_a_500(any_api: Api) -> None:
    """PostgreSQL text cannot hold U+0000: a NUL that reaches a query must be refused as bad
    input (404/422), like any other unknown code, and never surface as a 500."""
    api = any_api
    stay = await api.admit("W01-B1-1")
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/api/v1/wards/W01%00", {}),
        ("GET", "/api/v1/wards/W01%00/events", {}),
        ("GET", "/api/v1/wards/W01%00?view=display", {}),
        ("POST", "/api/v1/stays", {"json": {"bed": "W01-B1-2\u0000", "patient": person(70)}}),
        ("POST", "/api/v1/stays", {"json": {"bed": "W01-B1-2", "patient": person(70, mrn="M\u00001")}}),
        (
            "POST",
            "/api/v1/stays",
            {"json": {"bed": "W01-B1-2", "patient": person(70, nhs_number="999000001\u0000")}},
        ),
        ("POST", f"/api/v1/stays/{stay['id']}/transfer", {"json": {"bed": "W01-B1-2\u0000"}}),
        ("POST", "/api/v1/stays/s%00/discharge", {"json": {}}),
        ("PATCH", "/api/v1/stays/s%00", {"json": {"news2": 1}, "headers": {"If-Match": '"1"'}}),
        ("PATCH", "/api/v1/beds/W01-B1-2%00", {"json": {"state": "closed"}, "headers": {"If-Match": '"1"'}}),
        (
            "POST",
            "/api/v1/patients/p%00/flags",
            {"json": {"code": "MRSA", "status": "suspected", "precaution": "contact"}},
        ),
        ("PATCH", "/api/v1/flags/f%00", {"json": {"status": "cleared"}}),
    ]
    before = await api.state()
    wrong = []
    for method, url, kw in calls:
        r = await api.call("admin", method, url, **kw)
        if not 400 <= r.status_code < 500:
            wrong.append(f"{method} {url} {kw.get('json', '')}: {r.status_code} {r.text[:120]}")
        else:
            assert_error(r, r.status_code)
    assert wrong == [], "\n".join(wrong)
    assert await api.state() == before
