"""The ADT feed against a real `whiteboard serve`: MLLP and POST /api/v1/hl7 (DESIGN 4.4).

One server per module, with the MLLP listener on and a `feed` token. Every test takes wards
and patients of its own (`fresh_ward`, `person`), and every message an event time later than
the last (`tick`), so the tests never see each other's patients and the order rules only bite
where a test asks for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hl7
import pytest

from tests.helpers import free_port, timeout
from tests.integration.conftest import Hospital, Socket, bed_code, make_hospital, open_socket
from whiteboard.board import nhs
from whiteboard.hl7 import fakepas
from whiteboard.hl7.mllp import END_BLOCK, START_BLOCK, frame, send_mllp
from whiteboard.service import PatientDetails

WARDS = 64
BEDS = 6
MiB = 1 << 20

# --------------------------------------------------------------------------------------------
# Fixtures and helpers


@dataclass
class Feed:
    """The module's hospital, its MLLP port and the tokens the feed tests use."""

    h: Hospital
    mllp_port: int
    feed_token: str
    viewer_token: str
    nurse_token: str


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Feed]:
    port = free_port()
    h = make_hospital(
        tmp_path_factory.mktemp("hl7"), wards=WARDS, beds=BEDS, env={"WHITEBOARD_MLLP_PORT": str(port)}
    )
    tokens = (h.new_token("pas", "feed"), h.new_token("ward-viewer", "viewer"), h.new_token("nurse", "nurse"))
    h.server.start()
    try:
        yield Feed(h, port, *tokens)
    finally:
        if h.server.running:
            h.server.stop()


_wards = itertools.count(1)
_people = itertools.count(1)
_ticks = itertools.count(1)
_ids = itertools.count(1)
T0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)


def fresh_ward() -> int:
    n = next(_wards)
    assert n <= WARDS, "the module's layout has run out of wards: raise WARDS"
    return n


def ward_code(w: int) -> str:
    return f"W{w:02d}"


def bed(w: int, b: int) -> fakepas.Bed:
    code = bed_code(w, b, BEDS)
    return fakepas.Bed(ward_code(w), code.split("-")[1], code)


def nhs_number(n: int) -> str:
    """A valid NHS number of the 999 test range, different for every n."""
    for k in itertools.count(n * 10):
        stem = f"999{k:06d}"
        total = sum(int(d) * (10 - i) for i, d in enumerate(stem))
        check = (11 - total % 11) % 11
        if check != 10:
            number = stem + str(check)
            assert nhs.is_valid(number)
            return number
    raise AssertionError("unreachable")


def person(**over: Any) -> PatientDetails:
    n = next(_people)
    base = PatientDetails(
        nhs_number=nhs_number(n),
        mrn=f"HL{n:05d}",
        given_name=f"Given{n}",
        family_name=f"Family{n}",
        dob="1950-02-03",
        sex="female",
    )
    return replace(base, **over)


def tick() -> datetime:
    """An event time later than every one handed out before."""
    return T0 + timedelta(minutes=next(_ticks))


def control_id() -> str:
    return f"T{next(_ids):06d}"


def adt(event: str, who: PatientDetails, **kw: Any) -> str:
    """A fake PAS message with a fresh control ID and a later event time (unless given)."""
    kw.setdefault("when", tick())
    kw.setdefault("control_id", control_id())
    kw.setdefault("sender", "PAS")
    kw.setdefault("facility", "RX1")
    return fakepas.adt(event, who, **kw)


def set_msh(message: str, field: int, value: str) -> str:
    """`message` (CR endings) with MSH-`field` replaced."""
    msh, sep, rest = message.partition("\r")
    fields = msh.split("|")
    fields[field - 1] = value
    return "|".join(fields) + sep + rest


def without_segment(message: str, name: str) -> str:
    return "".join(s + "\r" for s in message.split("\r") if s and not s.startswith(name + "|"))


@dataclass(frozen=True)
class Ack:
    text: str

    def _segment(self, name: str) -> Any:
        return hl7.parse(self.text.replace("\n", "\r")).segment(name)

    def _field(self, name: str, n: int) -> str:
        try:
            segment = self._segment(name)
        except KeyError:
            return ""
        return str(segment(n)) if len(segment) > n else ""

    @property
    def code(self) -> str:
        return self._field("MSA", 1)

    @property
    def control_id(self) -> str:
        return self._field("MSA", 2)

    @property
    def reason(self) -> str:
        return self._field("MSA", 3)

    @property
    def err_code(self) -> str:
        return self._field("ERR", 3).split("^")[0]

    @property
    def err_text(self) -> str:
        return self._field("ERR", 8)

    def __repr__(self) -> str:
        return repr(self.text.replace("\r", " | "))


async def mllp(f: Feed, *messages: str | bytes) -> list[Ack]:
    """Send over one MLLP connection, each message after the previous one's ACK."""
    acks = await send_mllp("127.0.0.1", f.mllp_port, list(messages), ack_timeout=timeout(15))
    return [Ack(a) for a in acks]


async def post(f: Feed, message: str | bytes, *, content_type: str | None = "application/hl7-v2") -> Ack:
    headers = {} if content_type is None else {"Content-Type": content_type}
    async with f.h.client(f.feed_token) as api:
        r = await api.post("/api/v1/hl7", content=message, headers=headers)
    assert r.status_code == 200, r.text
    return Ack(r.text)


async def send(f: Feed, message: str | bytes, via: str = "mllp") -> Ack:
    if via == "mllp":
        return (await mllp(f, message))[0]
    return await post(f, message)


async def applied(f: Feed, *messages: str, via: str = "mllp") -> None:
    """Send each message and insist on AA with its own control ID."""
    for message in messages:
        ack = await send(f, message, via)
        assert ack.code == "AA", ack
        assert ack.control_id == message.split("\r", 1)[0].split("|")[9]


async def board(f: Feed, w: int | str) -> dict[str, Any]:
    code = w if isinstance(w, str) else ward_code(w)
    async with f.h.client() as api:
        r = await api.get(f"/api/v1/wards/{code}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def events(f: Feed, w: int | str, since: int = 0) -> list[dict[str, Any]]:
    code = w if isinstance(w, str) else ward_code(w)
    async with f.h.client() as api:
        r = await api.get(f"/api/v1/wards/{code}/events", params={"since": since})
    assert r.status_code == 200, r.text
    return r.json()["events"]  # type: ignore[no-any-return]


def bed_of(snapshot: dict[str, Any], code: str) -> dict[str, Any]:
    return next(b for b in snapshot["beds"] if b["code"] == code)


def where_is(snapshot: dict[str, Any], who: PatientDetails) -> str | None:
    """The bed code the patient is in, "unplaced", or None when not on this ward."""
    for b in snapshot["beds"]:
        if b["stay"] and b["stay"]["patient"]["nhs_number"] == who.nhs_number:
            return b["code"]  # type: ignore[no-any-return]
    if any(s["patient"]["nhs_number"] == who.nhs_number for s in snapshot["unplaced"]):
        return "unplaced"
    return None


def store_dump(f: Feed) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the server's SQLite database (read-only; WAL lets us)."""
    path = f.h.env["WHITEBOARD_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        names = [
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {name: sorted(db.execute(f'SELECT * FROM "{name}"'), key=repr) for name in sorted(names)}


async def hospital_state(f: Feed, *wards: int) -> dict[str, Any]:
    """What "nothing changed" compares: the whole store, and these wards as the API shows them
    (snapshot and event log)."""
    shown = {ward_code(w): (await board(f, w), await events(f, w)) for w in wards}
    return {"store": await asyncio.to_thread(store_dump, f), "api": shown}


async def set_bed_state(f: Feed, code: str, state: str) -> None:
    w = code.split("-")[0]
    async with f.h.client() as api:
        current = bed_of(await board(f, w), code)
        r = await api.patch(
            f"/api/v1/beds/{code}", json={"state": state}, headers={"If-Match": f'"{current["version"]}"'}
        )
    assert r.status_code == 200, r.text


@contextlib.asynccontextmanager
async def watching(f: Feed, w: int) -> AsyncIterator[Socket]:
    """A clinical socket on ward `w`, past its first snapshot."""
    async with open_socket(f.h.ws_url(ward_code(w)), token=f.h.token) as sock:
        await sock.wait_for(lambda fr: fr["type"] == "snapshot")
        yield sock


# --------------------------------------------------------------------------------------------
# Admission: fields, the socket, ACK after commit


async def test_a01_admits_with_consultant_and_edd_and_the_ack_follows_the_commit(feed: Feed) -> None:
    w = fresh_ward()
    who = person(given_name="Siobhan", family_name="O'Brien", sex="female")
    message = adt("A01", who, bed=bed(w, 1))
    # PV1-7 as an XCN (id^family^given^^^prefix) and PV2-9, written the way a PAS writes them.
    message = message.replace(f"{bed(w, 1).pv1}||||", f"{bed(w, 1).pv1}||||C4512^Okafor^Chidi^^^Dr")
    message += "PV2|||||||||20240620\r"
    async with watching(feed, w) as sock:
        start = sock.mark()
        ack = await send(feed, message)
        # Read straight after the ACK: the change is already committed.
        snap = await board(feed, w)
        change = await sock.wait_for(lambda fr: fr["type"] == "change", within=2, start=start)
    assert ack.code == "AA" and ack.control_id == message.split("|")[9], ack
    assert ack.text.startswith("MSH|^~\\&|WHITEBOARD|RX1|PAS|RX1|")
    taken = bed_of(snap, bed(w, 1).code)
    assert taken["state"] == "occupied"
    stay = taken["stay"]
    assert stay["patient"]["nhs_number"] == who.nhs_number
    assert stay["patient"]["mrn"] == who.mrn
    assert (stay["patient"]["given_name"], stay["patient"]["family_name"]) == ("Siobhan", "O'Brien")
    assert stay["patient"]["dob"] == "1950-02-03" and stay["patient"]["sex"] == "female"
    assert stay["consultant"] == "Dr Chidi Okafor"
    assert stay["edd"] == "2024-06-20"
    assert change["seq"] == snap["seq"] and change["bed"] == taken
    log = await events(feed, w)
    assert log[-1]["type"] == "admit" and log[-1]["actor"].startswith("hl7:")
    assert message.split("|")[9] in log[-1]["actor"]


async def test_ack_arrives_only_after_commit_on_both_transports(feed: Feed) -> None:
    w = fresh_ward()
    for n, via in enumerate(("mllp", "http"), start=1):
        who = person()
        ack = await send(feed, adt("A01", who, bed=bed(w, n)), via)
        assert ack.code == "AA", ack
        assert where_is(await board(feed, w), who) == bed(w, n).code


# --------------------------------------------------------------------------------------------
# The feed is authoritative


@pytest.mark.parametrize("state", ["dirty", "reserved", "closed"])
async def test_a01_into_a_dirty_reserved_or_closed_bed_is_applied(feed: Feed, state: str) -> None:
    w = fresh_ward()
    target = bed(w, 2).code
    await set_bed_state(feed, target, state)
    who = person()
    await applied(feed, adt("A01", who, bed=bed(w, 2)))
    taken = bed_of(await board(feed, w), target)
    assert taken["state"] == "occupied" and taken["stay"]["patient"]["mrn"] == who.mrn


async def test_a02_into_a_closed_bed_is_applied(feed: Feed) -> None:
    w = fresh_ward()
    await set_bed_state(feed, bed(w, 3).code, "closed")
    who = person()
    await applied(feed, adt("A01", who, bed=bed(w, 1)), adt("A02", who, bed=bed(w, 3)))
    snap = await board(feed, w)
    assert where_is(snap, who) == bed(w, 3).code
    assert bed_of(snap, bed(w, 3).code)["state"] == "occupied"
    assert bed_of(snap, bed(w, 1).code)["state"] == "dirty"


async def test_a01_into_an_occupied_bed_moves_the_occupant_to_unplaced_in_one_frame(feed: Feed) -> None:
    w = fresh_ward()
    first, second = person(), person()
    await applied(feed, adt("A01", first, bed=bed(w, 1)))
    async with watching(feed, w) as sock:
        before = (await board(feed, w))["seq"]
        start = sock.mark()
        await applied(feed, adt("A01", second, bed=bed(w, 1)))
        frame_ = await sock.wait_for(lambda fr: fr["type"] == "change", within=2, start=start)
        await asyncio.sleep(0.3)
        changes = sock.changes(start)
    snap = await board(feed, w)
    assert snap["seq"] == before + 1, "one event for the admission and the displacement"
    assert [c["seq"] for c in changes] == [before + 1]
    assert set(frame_) >= {"bed", "unplaced"}
    assert frame_["bed"]["stay"]["patient"]["mrn"] == second.mrn
    assert [s["patient"]["mrn"] for s in frame_["unplaced"]] == [first.mrn]
    assert frame_["unplaced"][0]["bed"] is None
    assert where_is(snap, second) == bed(w, 1).code and where_is(snap, first) == "unplaced"


async def test_a02_into_an_occupied_bed_on_another_ward(feed: Feed) -> None:
    src, dst = fresh_ward(), fresh_ward()
    mover, occupant = person(), person()
    await applied(feed, adt("A01", mover, bed=bed(src, 1)), adt("A01", occupant, bed=bed(dst, 4)))
    async with watching(feed, src) as left, watching(feed, dst) as arrived:
        s0, d0 = left.mark(), arrived.mark()
        seq_src, seq_dst = (await board(feed, src))["seq"], (await board(feed, dst))["seq"]
        await applied(feed, adt("A02", mover, bed=bed(dst, 4)))
        out = await left.wait_for(lambda fr: fr["type"] == "change", within=2, start=s0)
        into = await arrived.wait_for(lambda fr: fr["type"] == "change", within=2, start=d0)
        await asyncio.sleep(0.3)
        assert [c["seq"] for c in left.changes(s0)] == [seq_src + 1]
        assert [c["seq"] for c in arrived.changes(d0)] == [seq_dst + 1]
    assert out["bed"]["code"] == bed(src, 1).code and out["bed"]["state"] == "dirty"
    assert out["bed"]["stay"] is None
    assert into["bed"]["stay"]["patient"]["mrn"] == mover.mrn
    assert [s["patient"]["mrn"] for s in into["unplaced"]] == [occupant.mrn]
    assert where_is(await board(feed, dst), occupant) == "unplaced"
    assert where_is(await board(feed, src), mover) is None


async def test_a02_and_a03_leave_the_bed_dirty(feed: Feed) -> None:
    w = fresh_ward()
    who = person()
    await applied(feed, adt("A01", who, bed=bed(w, 1)), adt("A02", who, bed=bed(w, 2)))
    snap = await board(feed, w)
    assert bed_of(snap, bed(w, 1).code)["state"] == "dirty"
    assert bed_of(snap, bed(w, 1).code)["stay"] is None
    await applied(feed, adt("A03", who))
    snap = await board(feed, w)
    assert bed_of(snap, bed(w, 2).code)["state"] == "dirty"
    assert where_is(snap, who) is None
    log = await events(feed, w)
    assert log[-1]["type"] == "discharge" and log[-1]["detail"]["discharged_at"].endswith("Z")


async def test_a08_updates_details_and_never_moves_anyone(feed: Feed) -> None:
    w = fresh_ward()
    who = person()
    await applied(feed, adt("A01", who, bed=bed(w, 1), attending="Dr Ada Lovelace", edd="2024-07-01"))
    renamed = replace(who, given_name="Anne", family_name="Newname", sex="other")
    # PV1-3 names another bed: an update still moves nobody.
    await applied(feed, adt("A08", renamed, bed=bed(w, 5), attending="Ms Grace Hopper", edd="2024-07-09"))
    snap = await board(feed, w)
    assert where_is(snap, who) == bed(w, 1).code
    assert (bed_of(snap, bed(w, 5).code)["state"], bed_of(snap, bed(w, 5).code)["stay"]) == (
        "available",
        None,
    )
    stay = bed_of(snap, bed(w, 1).code)["stay"]
    assert (stay["patient"]["given_name"], stay["patient"]["family_name"]) == ("Anne", "Newname")
    assert stay["patient"]["sex"] == "other" and stay["patient"]["initials"] == "AN"
    assert (stay["consultant"], stay["edd"]) == ("Ms Grace Hopper", "2024-07-09")
    assert (await events(feed, w))[-1]["type"] == "update"


async def test_a01_for_a_patient_already_admitted_moves_them(feed: Feed) -> None:
    w, other = fresh_ward(), fresh_ward()
    who = person()
    await applied(feed, adt("A01", who, bed=bed(w, 1)))
    stay_id = bed_of(await board(feed, w), bed(w, 1).code)["stay"]["id"]
    await applied(feed, adt("A01", who, bed=bed(w, 3)))
    snap = await board(feed, w)
    assert where_is(snap, who) == bed(w, 3).code
    assert bed_of(snap, bed(w, 3).code)["stay"]["id"] == stay_id, "the same stay, moved"
    assert bed_of(snap, bed(w, 1).code)["stay"] is None
    await applied(feed, adt("A01", who, bed=bed(other, 2)))
    assert where_is(await board(feed, w), who) is None
    assert where_is(await board(feed, other), who) == bed(other, 2).code


# --------------------------------------------------------------------------------------------
# Cancellations


@pytest.mark.parametrize("state", ["available", "reserved", "closed", "dirty"])
async def test_a11_returns_the_bed_to_its_state_before_the_a01(feed: Feed, state: str) -> None:
    w = fresh_ward()
    target = bed(w, 2).code
    if state != "available":
        await set_bed_state(feed, target, state)
    who = person()
    await applied(feed, adt("A01", who, bed=bed(w, 2)))
    await applied(feed, adt("A11", who))
    snap = await board(feed, w)
    assert bed_of(snap, target)["state"] == state and bed_of(snap, target)["stay"] is None
    assert where_is(snap, who) is None
    assert (await events(feed, w))[-1]["type"] == "cancel_admit"
    # The admission is over: an A02 now finds no open stay.
    assert (await send(feed, adt("A02", who, bed=bed(w, 3)))).code == "AE"


async def test_a11_leaves_a_displaced_occupant_unplaced(feed: Feed) -> None:
    w = fresh_ward()
    first, second = person(), person()
    await applied(feed, adt("A01", first, bed=bed(w, 1)), adt("A01", second, bed=bed(w, 1)))
    await applied(feed, adt("A11", second))
    snap = await board(feed, w)
    assert where_is(snap, first) == "unplaced"
    assert where_is(snap, second) is None
    emptied = bed_of(snap, bed(w, 1).code)
    assert emptied["stay"] is None and emptied["state"] != "occupied"


async def test_a12_moves_the_stay_back_and_restores_the_bed_it_leaves(feed: Feed) -> None:
    w = fresh_ward()
    await set_bed_state(feed, bed(w, 4).code, "reserved")
    who = person()
    await applied(feed, adt("A01", who, bed=bed(w, 1)), adt("A02", who, bed=bed(w, 4)))
    stay_id = bed_of(await board(feed, w), bed(w, 4).code)["stay"]["id"]
    # PV1-3 empty: back to the bed before the A02. PV1-6 need not match.
    await applied(feed, adt("A12", who, prior=bed(w, 6)))
    snap = await board(feed, w)
    assert where_is(snap, who) == bed(w, 1).code
    assert bed_of(snap, bed(w, 1).code)["stay"]["id"] == stay_id
    assert bed_of(snap, bed(w, 1).code)["state"] == "occupied"
    assert bed_of(snap, bed(w, 4).code)["state"] == "reserved", "the bed it leaves: as before the A02"
    assert bed_of(snap, bed(w, 4).code)["stay"] is None
    assert (await events(feed, w))[-1]["type"] == "cancel_transfer"


async def test_a12_with_pv1_3_moves_the_stay_there(feed: Feed) -> None:
    w, dst = fresh_ward(), fresh_ward()
    await set_bed_state(feed, bed(dst, 2).code, "closed")
    who = person()
    await applied(feed, adt("A01", who, bed=bed(w, 1)), adt("A02", who, bed=bed(dst, 2)))
    await applied(feed, adt("A12", who, bed=bed(w, 5)))
    here, there = await board(feed, w), await board(feed, dst)
    assert where_is(here, who) == bed(w, 5).code
    assert bed_of(there, bed(dst, 2).code)["state"] == "closed"
    assert bed_of(there, bed(dst, 2).code)["stay"] is None
    assert bed_of(here, bed(w, 1).code)["stay"] is None


async def test_a13_reopens_the_discharge_into_the_bed_it_left(feed: Feed) -> None:
    w = fresh_ward()
    who = person()
    await applied(feed, adt("A01", who, bed=bed(w, 2), attending="Dr Ada Lovelace"))
    stay_id = bed_of(await board(feed, w), bed(w, 2).code)["stay"]["id"]
    await applied(feed, adt("A03", who))
    assert where_is(await board(feed, w), who) is None
    await applied(feed, adt("A13", who))
    snap = await board(feed, w)
    reopened = bed_of(snap, bed(w, 2).code)
    assert reopened["state"] == "occupied"
    assert reopened["stay"]["id"] == stay_id and reopened["stay"]["consultant"] == "Dr Ada Lovelace"
    assert (await events(feed, w))[-1]["type"] == "cancel_discharge"
    # Open again: it can be discharged again.
    await applied(feed, adt("A03", who))


async def test_a13_moves_an_occupant_of_that_bed_to_unplaced(feed: Feed) -> None:
    w = fresh_ward()
    who, newcomer = person(), person()
    await applied(
        feed,
        adt("A01", who, bed=bed(w, 1)),
        adt("A03", who),
        adt("A01", newcomer, bed=bed(w, 1)),
    )
    async with watching(feed, w) as sock:
        start = sock.mark()
        await applied(feed, adt("A13", who))
        change = await sock.wait_for(lambda fr: fr["type"] == "change", within=2, start=start)
    assert change["bed"]["stay"]["patient"]["mrn"] == who.mrn
    assert [s["patient"]["mrn"] for s in change["unplaced"]] == [newcomer.mrn]
    snap = await board(feed, w)
    assert where_is(snap, who) == bed(w, 1).code and where_is(snap, newcomer) == "unplaced"


async def test_a13_with_pv1_3_reopens_there(feed: Feed) -> None:
    w = fresh_ward()
    who = person()
    await applied(feed, adt("A01", who, bed=bed(w, 1)), adt("A03", who), adt("A13", who, bed=bed(w, 6)))
    snap = await board(feed, w)
    assert where_is(snap, who) == bed(w, 6).code
    assert bed_of(snap, bed(w, 1).code)["state"] == "dirty"


# --------------------------------------------------------------------------------------------
# Duplicates


async def test_a_repeated_control_id_is_acknowledged_and_changes_nothing_even_after_a_restart(
    feed: Feed,
) -> None:
    w = fresh_ward()
    who = person()
    admit = adt("A01", who, bed=bed(w, 1))
    discharge = adt("A03", who)
    await applied(feed, admit, discharge)
    state = await hospital_state(feed, w)
    for via in ("mllp", "http"):
        ack = await send(feed, admit, via)
        assert (ack.code, ack.control_id) == ("AA", admit.split("|")[9]), ack
    assert await hospital_state(feed, w) == state
    await asyncio.to_thread(feed.h.server.stop)
    await feed.h.server.astart()
    for message in (admit, discharge):
        for via in ("mllp", "http"):
            ack = await send(feed, message, via)
            assert (ack.code, ack.control_id) == ("AA", message.split("|")[9]), ack
    assert await hospital_state(feed, w) == state


async def test_the_same_control_id_from_another_sender_is_applied(feed: Feed) -> None:
    w = fresh_ward()
    who = person()
    shared = control_id()
    await applied(feed, adt("A01", who, bed=bed(w, 1), control_id=shared))
    # Another application (MSH-3), same facility.
    await applied(feed, adt("A08", replace(who, family_name="Second"), control_id=shared, sender="ED"))
    # The same application at another facility (MSH-4).
    await applied(feed, adt("A08", replace(who, family_name="Third"), control_id=shared, facility="RX2"))
    snap = await board(feed, w)
    assert bed_of(snap, bed(w, 1).code)["stay"]["patient"]["family_name"] == "Third"
    assert [e["type"] for e in (await events(feed, w))[-3:]] == ["admit", "update", "update"]


async def test_a_refused_control_id_may_be_sent_again_once_fixed(feed: Feed) -> None:
    w = fresh_ward()
    who = person()
    good = adt("A01", who, bed=bed(w, 1))
    bad = good.replace(who.nhs_number or "", "9990000019")  # fails its check digit
    state = await hospital_state(feed, w)
    refused = await send(feed, bad)
    assert (refused.code, refused.control_id) == ("AE", good.split("|")[9]), refused
    unknown_bed = good.replace(bed(w, 1).code, f"{ward_code(w)}-B9-99")
    assert (await send(feed, unknown_bed, "http")).code == "AE"
    assert await hospital_state(feed, w) == state
    await applied(feed, good)
    assert where_is(await board(feed, w), who) == bed(w, 1).code


# --------------------------------------------------------------------------------------------
# Order


async def test_an_older_message_is_recorded_but_never_moves_the_board_backwards(feed: Feed) -> None:
    w = fresh_ward()
    who = person()
    late_time = tick()
    await applied(feed, adt("A01", who, bed=bed(w, 1), attending="Dr Now"))
    before = await board(feed, w)
    stale_move = adt("A02", who, bed=bed(w, 3), when=late_time)
    stale_update = adt("A08", replace(who, family_name="Stale"), attending="Dr Then", when=late_time)
    ack_move, ack_update = await mllp(feed, stale_move, stale_update)
    assert (ack_move.code, ack_update.code) == ("AA", "AA")
    after = await board(feed, w)
    assert after["beds"] == before["beds"] and after["unplaced"] == before["unplaced"]
    log = await events(feed, w, since=before["seq"])
    assert [e["type"] for e in log] == ["out_of_order", "out_of_order"]
    assert stale_move.split("|")[9] in log[0]["actor"]
    assert after["seq"] == before["seq"] + 2
    # Newer news still applies.
    await applied(feed, adt("A02", who, bed=bed(w, 3)))
    assert where_is(await board(feed, w), who) == bed(w, 3).code


async def test_a_message_from_a_long_gone_year_does_not_freeze_the_patient(feed: Feed) -> None:
    """Feed times are compared as text: a year before 1000 written "999-…" would sort after
    "2024-…", count as newer than everything, and make every real message for the patient
    look out of order from then on (found before `iso_z` padded years and EVN-2 was bounded)."""
    w = fresh_ward()
    who = person()
    await applied(feed, adt("A01", who, bed=bed(w, 1)))
    ancient = adt("A08", replace(who, family_name="Ancient"))
    ancient = ancient.replace("EVN|A08|2024", "EVN|A08|0999")
    ack = await send(feed, ancient)
    assert ack.code in ("AA", "AE"), ack
    assert bed_of(await board(feed, w), bed(w, 1).code)["stay"]["patient"]["family_name"] != "Ancient"
    await applied(feed, adt("A02", who, bed=bed(w, 2)))
    assert where_is(await board(feed, w), who) == bed(w, 2).code


async def test_an_event_time_far_in_the_future_is_refused_and_does_not_freeze_the_patient(feed: Feed) -> None:
    """A mistyped year (2042 for 2024) would make every real message after it "older"."""
    w = fresh_ward()
    who = person()
    await applied(feed, adt("A01", who, bed=bed(w, 1)))
    state = await hospital_state(feed, w)
    typo = adt("A02", who, bed=bed(w, 2), when=datetime.now(UTC) + timedelta(days=400))
    ack = await send(feed, typo)
    assert ack.code == "AE" and "EVN-2" in ack.reason, ack
    assert await hospital_state(feed, w) == state
    # A little ahead (clocks drift between systems) is fine.
    await applied(
        feed, adt("A08", replace(who, given_name="Skewed"), when=datetime.now(UTC) + timedelta(hours=1))
    )
    await applied(feed, adt("A02", who, bed=bed(w, 2), when=datetime.now(UTC) + timedelta(hours=2)))
    assert where_is(await board(feed, w), who) == bed(w, 2).code


async def test_a_late_message_with_a_ward_only_location_is_acknowledged_and_recorded(feed: Feed) -> None:
    """A late message whose PV1-3 names only a ward (no bed), for a patient with no open stay
    there, is recorded on that ward (it was once answered AE "ward W.. is not known": the ward
    was checked but not loaded, and the out_of_order event had nowhere to go)."""
    w = fresh_ward()
    who = person()
    late_time = tick()
    await applied(feed, adt("A01", who, bed=bed(w, 1)), adt("A03", who))
    before = await board(feed, w)
    late = adt("A08", who, when=late_time).replace("\rPV1|1|I||", f"\rPV1|1|I|{ward_code(w)}|")
    ack = await send(feed, late)
    assert ack.code == "AA", ack
    log = await events(feed, w, since=before["seq"])
    assert [e["type"] for e in log] == ["out_of_order"]


async def test_a_late_message_for_a_discharged_patient_is_still_recorded(feed: Feed) -> None:
    """Answered AA and recorded as an event: a late A13 (or A08) with no PV1-3 for a patient
    who is not in is recorded on the ward of their latest stay (it once left no trace)."""
    w = fresh_ward()
    who = person()
    late_time = tick()
    await applied(feed, adt("A01", who, bed=bed(w, 1)), adt("A03", who))
    before = await board(feed, w)
    ack = await send(feed, adt("A13", who, when=late_time))
    assert ack.code == "AA", ack
    assert where_is(await board(feed, w), who) is None
    log = await events(feed, w, since=before["seq"])
    assert [e["type"] for e in log] == ["out_of_order"]


# --------------------------------------------------------------------------------------------
# Refusals: each answered, nothing changed


def _refusals() -> list[Any]:
    cases: list[Any] = []

    def case(name: str, code: str, err: str, build: Any, *, empty_id: bool = False) -> None:
        cases.append(pytest.param(build, code, err, empty_id, id=name))

    case("garbage", "AR", "100", lambda ctx: b"\x00\xff\xfe garbage, not HL7 \x1c at all", empty_id=True)
    case("empty-ish", "AR", "100", lambda ctx: b"   \r\n  ", empty_id=True)
    case(
        "not-adt",
        "AR",
        "200",
        lambda ctx: set_msh(adt("A01", ctx.who, bed=ctx.bed), 9, "ORU^R01^ORU_R01"),
    )
    case(
        "unsupported-event",
        "AR",
        "201",
        lambda ctx: set_msh(adt("A04", ctx.who, bed=ctx.bed), 9, "ADT^A04^ADT_A01"),
    )
    case("version-2.6", "AR", "203", lambda ctx: adt("A01", ctx.who, bed=ctx.bed, version="2.6"))
    case("version-2.2", "AR", "203", lambda ctx: adt("A01", ctx.who, bed=ctx.bed, version="2.2"))
    case(
        "no-msh-10", "AR", "101", lambda ctx: set_msh(adt("A01", ctx.who, bed=ctx.bed), 10, ""), empty_id=True
    )
    case("no-pid", "AE", "100", lambda ctx: without_segment(adt("A01", ctx.who, bed=ctx.bed), "PID"))
    case("no-pv1", "AE", "100", lambda ctx: without_segment(adt("A01", ctx.who, bed=ctx.bed), "PV1"))
    case(
        "nhs-check-digit",
        "AE",
        "102",
        lambda ctx: adt("A01", replace(ctx.who, nhs_number="9990000019"), bed=ctx.bed),
    )
    case(
        "unknown-bed",
        "AE",
        "204",
        lambda ctx: adt("A01", ctx.who, bed=fakepas.Bed(ctx.bed.ward, "B9", f"{ctx.bed.ward}-B9-99")),
    )
    case(
        "unknown-ward",
        "AE",
        "204",
        lambda ctx: adt("A01", ctx.who, bed=fakepas.Bed("ZZ99", "B1", "ZZ99-B1-1")),
    )
    case(
        "bed-on-another-ward",
        "AE",
        "204",
        lambda ctx: adt("A01", ctx.who, bed=fakepas.Bed("W01", ctx.bed.bay, ctx.bed.code)),
    )
    case(
        "a02-unknown-patient",
        "AE",
        "204",
        lambda ctx: adt("A02", ctx.who, bed=ctx.bed),
    )
    case(
        "a02-no-open-stay",
        "AE",
        "204",
        lambda ctx: adt("A02", ctx.discharged, bed=ctx.bed),
    )
    case(
        "a03-unknown-ward-only-location",
        "AE",
        "204",
        lambda ctx: adt("A03", ctx.admitted).replace("\rPV1|1|I||", "\rPV1|1|I|ZZ99|"),
    )
    case("a01-without-bed", "AE", "101", lambda ctx: adt("A01", ctx.who))
    return cases


@dataclass
class Ctx:
    who: PatientDetails
    bed: fakepas.Bed
    admitted: PatientDetails
    discharged: PatientDetails


@pytest.fixture(scope="module")
async def refusal_ward(feed: Feed) -> tuple[int, PatientDetails, PatientDetails]:
    """A ward with one patient in and one discharged, shared by the refusal cases."""
    w = fresh_ward()
    admitted, discharged = person(), person()
    await applied(
        feed,
        adt("A01", admitted, bed=bed(w, 1)),
        adt("A01", discharged, bed=bed(w, 2)),
        adt("A03", discharged),
    )
    return w, admitted, discharged


@pytest.mark.parametrize("via", ["mllp", "http"])
@pytest.mark.parametrize(("build", "code", "err", "empty_id"), _refusals())
async def test_a_refused_message_changes_nothing_and_says_why(
    feed: Feed,
    refusal_ward: tuple[int, PatientDetails, PatientDetails],
    build: Any,
    code: str,
    err: str,
    empty_id: bool,
    via: str,
) -> None:
    w, admitted, discharged = refusal_ward
    ctx = Ctx(who=person(), bed=bed(w, 3), admitted=admitted, discharged=discharged)
    message = build(ctx)
    state = await hospital_state(feed, w, 1)
    ack = await send(feed, message, via)
    assert ack.code == code, ack
    expected_id = (
        "" if empty_id else (message.split("\r")[0].split("|")[9] if isinstance(message, str) else "")
    )
    assert ack.control_id == expected_id, ack
    assert ack.reason, "MSA-3 gives the reason"
    assert ack.err_code == err, ack
    assert ack.err_text == ack.reason, "ERR-8 repeats the reason"
    assert await hospital_state(feed, w, 1) == state


async def test_a_refused_message_never_blocks_the_ones_after_it(feed: Feed) -> None:
    w = fresh_ward()
    who, other = person(), person()
    acks = await mllp(
        feed,
        b"nonsense",
        adt("A01", replace(who, nhs_number="9990000019"), bed=bed(w, 1)),
        set_msh(adt("A01", who, bed=bed(w, 1)), 12, "2.6"),
        adt("A01", who, bed=bed(w, 1)),
        adt("A02", other, bed=bed(w, 2)),
        adt("A01", other, bed=bed(w, 2)),
    )
    assert [a.code for a in acks] == ["AR", "AE", "AR", "AA", "AE", "AA"], acks
    snap = await board(feed, w)
    assert where_is(snap, who) == bed(w, 1).code and where_is(snap, other) == bed(w, 2).code


# --------------------------------------------------------------------------------------------
# HTTP


@pytest.mark.parametrize(
    "content_type",
    [
        "application/hl7-v2",
        "x-application/hl7-v2+er7",
        "text/plain; charset=utf-8",
        "application/octet-stream",
        "application/json",
        "application/x-www-form-urlencoded",
        None,
    ],
)
async def test_http_takes_any_content_type_and_answers_200_with_the_ack(
    feed: Feed, content_type: str | None
) -> None:
    w = fresh_ward()
    who = person()
    message = adt("A01", who, bed=bed(w, 1))
    ack = await post(feed, message, content_type=content_type)
    assert (ack.code, ack.control_id) == ("AA", message.split("|")[9]), ack
    assert where_is(await board(feed, w), who) == bed(w, 1).code
    refused = await post(feed, b"not hl7", content_type=content_type)
    assert (refused.code, refused.control_id) == ("AR", "")


async def test_http_refuses_without_a_token_a_viewer_and_a_big_body_as_json(feed: Feed) -> None:
    w = fresh_ward()
    who = person()
    message = adt("A01", who, bed=bed(w, 1))
    state = await hospital_state(feed, w)
    async with feed.h.client("") as anonymous:
        r = await anonymous.post("/api/v1/hl7", content=message)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated", r.text
    async with feed.h.client("not-a-real-token") as wrong:
        r = await wrong.post("/api/v1/hl7", content=message)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated", r.text
    for token in (feed.viewer_token, feed.nurse_token):
        async with feed.h.client(token) as api:
            r = await api.post("/api/v1/hl7", content=message)
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
    padded = message + "ZPD|" + "x" * MiB + "\r"
    async with feed.h.client(feed.feed_token) as api:
        r = await api.post("/api/v1/hl7", content=padded)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large", r.text

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
            data = padded.encode()
            for i in range(0, len(data), 64 * 1024):
                yield data[i : i + 64 * 1024]

        r = await api.post("/api/v1/hl7", content=chunks())
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large", r.text
    assert await hospital_state(feed, w) == state


async def test_http_and_mllp_take_exactly_one_mib(feed: Feed) -> None:
    w = fresh_ward()
    first, second = person(), person()
    for who, n, via in ((first, 1, "http"), (second, 2, "mllp")):
        message = adt("A01", who, bed=bed(w, n))
        pad = MiB - len(message.encode()) - len("ZPD|\r")
        exact = message + "ZPD|" + "y" * pad + "\r"
        assert len(exact.encode()) == MiB
        ack = await send(feed, exact, via)
        assert ack.code == "AA", ack
    snap = await board(feed, w)
    assert where_is(snap, first) == bed(w, 1).code and where_is(snap, second) == bed(w, 2).code


# --------------------------------------------------------------------------------------------
# MLLP


async def test_mllp_block_over_one_mib_is_refused_and_the_connection_stays_usable(feed: Feed) -> None:
    w = fresh_ward()
    who = person()
    big = adt("A01", who, bed=bed(w, 1))
    big += "ZPD|" + "z" * MiB + "\r"
    good = adt("A01", who, bed=bed(w, 1))
    state = await hospital_state(feed, w)
    (refused,) = await mllp(feed, big)
    assert (refused.code, refused.control_id) == ("AR", big.split("|")[9]), refused
    assert "1 MiB" in refused.reason and refused.err_text == refused.reason
    assert await hospital_state(feed, w) == state
    # The same connection carries on: the over-size block, then a good message.
    refused, accepted = await mllp(feed, big, good)
    assert refused.code == "AR"
    assert (accepted.code, accepted.control_id) == ("AA", good.split("|")[9]), accepted
    assert where_is(await board(feed, w), who) == bed(w, 1).code


async def test_several_mllp_connections_at_once_each_get_their_acks(feed: Feed) -> None:
    wards = [fresh_ward() for _ in range(3)]
    plans: list[list[str]] = []
    people: list[tuple[int, int, PatientDetails]] = []
    for i in range(6):
        w = wards[i % 3]
        who = person()
        b = i // 3 + 1
        people.append((w, b, who))
        plans.append(
            [
                adt("A01", who, bed=bed(w, b)),
                adt("A08", replace(who, given_name=f"Renamed{i}")),
                adt("A02", who, bed=bed(w, b + 2)),
                adt("A08", replace(who, given_name=f"Final{i}"), edd="2024-09-0" + str(i + 1)),
            ]
        )
    async with asyncio.timeout(timeout(30)):
        results = await asyncio.gather(*(mllp(feed, *plan) for plan in plans))
    for plan, acks in zip(plans, results, strict=True):
        assert [(a.code, a.control_id) for a in acks] == [("AA", m.split("|")[9]) for m in plan]
    for i, (w, b, who) in enumerate(people):
        snap = await board(feed, w)
        assert where_is(snap, who) == bed(w, b + 2).code
        assert bed_of(snap, bed(w, b + 2).code)["stay"]["patient"]["given_name"] == f"Final{i}"
    for w in wards:
        seqs = [e["seq"] for e in await events(feed, w)]
        assert seqs == list(range(1, len(seqs) + 1))


async def test_mllp_pipelined_messages_are_answered_in_order(feed: Feed) -> None:
    w = fresh_ward()
    who = person()
    plan = [adt("A01", who, bed=bed(w, 1))] + [
        adt("A08", replace(who, given_name=f"Name{i}")) for i in range(5)
    ]
    reader, writer = await asyncio.open_connection("127.0.0.1", feed.mllp_port)
    try:
        writer.write(b"\n\n" + b"".join(frame(m) for m in plan))  # noise between blocks is ignored
        await writer.drain()
        acks = []
        async with asyncio.timeout(timeout(15)):
            for _ in plan:
                data = await reader.readuntil(END_BLOCK)
                acks.append(Ack(data[data.index(START_BLOCK) + 1 : -2].decode()))
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert [(a.code, a.control_id) for a in acks] == [("AA", m.split("|")[9]) for m in plan]
    assert bed_of(await board(feed, w), bed(w, 1).code)["stay"]["patient"]["given_name"] == "Name4"


# --------------------------------------------------------------------------------------------
# Versions, line endings, escapes, Z-segments


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1"])
async def test_versions_2_3_to_2_5_are_accepted(feed: Feed, version: str) -> None:
    w = fresh_ward()
    who = person()
    await applied(feed, adt("A01", who, bed=bed(w, 1), version=version))
    ack = (await mllp(feed, adt("A03", who, version=version)))[0]
    assert ack.code == "AA" and f"|P|{version}|" in ack.text.split("\r")[0] + "|"


@pytest.mark.parametrize("ending", ["\r", "\n", "\r\n"])
@pytest.mark.parametrize("via", ["mllp", "http"])
async def test_cr_lf_and_crlf_segment_endings_are_accepted(feed: Feed, ending: str, via: str) -> None:
    w = fresh_ward()
    who = person()
    message = adt("A01", who, bed=bed(w, 1), attending="Dr Chidi Okafor", edd="2024-06-30")
    ack = await send(feed, message.replace("\r", ending), via)
    assert ack.code == "AA", ack
    stay = bed_of(await board(feed, w), bed(w, 1).code)["stay"]
    assert stay["patient"]["mrn"] == who.mrn
    assert (stay["consultant"], stay["edd"]) == ("Dr Chidi Okafor", "2024-06-30")


async def test_escape_sequences_are_decoded_and_z_segments_ignored(feed: Feed) -> None:
    w = fresh_ward()
    who = person(family_name="Smith&Jones", given_name="Anne^Marie")
    message = adt("A01", who, bed=bed(w, 1))
    assert "Smith\\T\\Jones^Anne\\S\\Marie" in message
    # PV1-7 with escapes too; Z-segments before PV1 and at the end.
    message = message.replace(f"{bed(w, 1).pv1}||||", f"{bed(w, 1).pv1}||||C1^O\\T\\Neil^Mary\\.br\\Jo^^^Dr")
    message = message.replace("\rPV1|", "\rZPI|1|LOCAL^STUFF|\\T\\\rPV1|")
    message += "ZPD|1|PAS-LOCAL-FLAG^Y\rZZZ|A01|W99^B9^NOWHERE\r"
    await applied(feed, message)
    stay = bed_of(await board(feed, w), bed(w, 1).code)["stay"]
    assert stay["patient"]["family_name"] == "Smith&Jones"
    assert stay["patient"]["given_name"] == "Anne^Marie"
    assert stay["consultant"] == "Dr Mary Jo O&Neil"


# --------------------------------------------------------------------------------------------
# The demo's fake PAS


async def test_fake_pas_messages_round_trip_through_every_event(feed: Feed) -> None:
    w, other = fresh_ward(), fresh_ward()
    who = person()
    no_nhs = person(nhs_number=None)
    steps = [
        (
            fakepas.adt(
                "A01", who, bed=bed(w, 1), attending="Dr Ada Lovelace", edd="2024-07-01", when=tick()
            ),
            bed(w, 1).code,
        ),
        (
            fakepas.adt("A08", replace(who, family_name="Byron"), edd="2024-07-03", when=tick()),
            bed(w, 1).code,
        ),
        (fakepas.adt("A02", who, bed=bed(other, 2), prior=bed(w, 1), when=tick()), bed(other, 2).code),
        (fakepas.adt("A12", who, when=tick()), bed(w, 1).code),
        (fakepas.adt("A03", who, bed=bed(w, 1), when=tick()), None),
        (fakepas.adt("A13", who, when=tick()), bed(w, 1).code),
        (fakepas.adt("A11", who, when=tick()), None),
    ]
    for message, expected in steps:
        ack = (await mllp(feed, message))[0]
        assert ack.code == "AA", (message, ack)
        here, there = await board(feed, w), await board(feed, other)
        place = where_is(here, who) or where_is(there, who)
        assert place == expected, message
    stay_events = [e["type"] for e in await events(feed, w)]
    assert stay_events == [
        "admit",
        "update",
        "transfer",
        "cancel_transfer",
        "discharge",
        "cancel_discharge",
        "cancel_admit",
    ]
    # An unidentified patient: MRN only, through HTTP.
    ack = await post(feed, fakepas.adt("A01", no_nhs, bed=bed(w, 3), when=tick()))
    assert ack.code == "AA", ack
    stay = bed_of(await board(feed, w), bed(w, 3).code)["stay"]
    assert stay["patient"]["nhs_number"] is None and stay["patient"]["mrn"] == no_nhs.mrn
    await applied(feed, fakepas.adt("A03", no_nhs, when=tick()))
    assert bed_of(await board(feed, w), bed(w, 3).code)["state"] == "dirty"


# --------------------------------------------------------------------------------------------
# PostgreSQL: column lengths the feed does not check


@pytest.mark.postgres
async def test_long_identifiers_are_answered_with_an_ack_on_postgresql(
    tmp_path: Path, pg_database_url: str
) -> None:
    """PostgreSQL enforces column lengths (SQLite does not): the sender (MSH-3|MSH-4), MSH-10,
    the event's actor "hl7:<MSH-3>|<MSH-4>:<MSH-10>" and the MRN must fit, or be refused with a
    reason. ISO OIDs in MSH-3/MSH-4 with a long MSH-10 are valid HL7 and must apply; a
    100-character MRN may be refused, but with an ACK that says so, never HTTP 500 or AE
    "internal error" (both happened before the identifier columns were widened)."""
    port = free_port()
    h = make_hospital(
        tmp_path,
        wards=2,
        beds=BEDS,
        env={"WHITEBOARD_DATABASE_URL": pg_database_url, "WHITEBOARD_MLLP_PORT": str(port)},
    )
    f = Feed(h, port, h.new_token("pas", "feed"), "", "")
    await h.server.astart()
    try:
        oid_app = "PAS^2.16.840.1.113883.3.4424.12.34.56.78.90.1^ISO"
        oid_facility = "RX1^2.16.840.1.113883.2.1.3.2.4.18.48.12.34.56^ISO"
        long_id = "MSG-" + "0123456789" * 11  # 114 characters: HL7 2.5 allows 199
        who = person()
        message = set_msh(
            set_msh(adt("A01", who, bed=bed(1, 1), control_id=long_id), 3, oid_app), 4, oid_facility
        )
        async with h.client(f.feed_token) as api:
            r = await api.post("/api/v1/hl7", content=message)
        assert r.status_code == 200, r.text
        assert Ack(r.text).code == "AA", r.text
        assert where_is(await board(f, 1), who) == bed(1, 1).code
        long_mrn = person(mrn="M" * 100)
        ack = (await mllp(f, adt("A01", long_mrn, bed=bed(1, 2))))[0]
        assert ack.code in ("AA", "AE") and "internal error" not in ack.reason, ack
    finally:
        h.server.stop()
