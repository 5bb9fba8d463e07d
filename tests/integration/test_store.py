"""The store of record, on the embedded SQLite and on a real PostgreSQL: the same tests over both.

Migrations are idempotent and build exactly `tables.metadata`; a layout loads once and updates
in place; every command commits its state rows and its events together, with `seq` 1, 2, 3…
per ward and no gaps; a refused command writes nothing; two writers on one version never both
win, whether they share an engine or not ("two processes"). No app here: the store, the
repository and the board service are used directly, with the in-process broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.conftest import patient
from whiteboard.board.events import Outcome
from whiteboard.board.views import bed_json, snapshot
from whiteboard.errors import Conflict, Invalid, NotFound, StaleVersion, WhiteboardError
from whiteboard.fanout.base import decode_event
from whiteboard.fanout.memory import MemoryBroker
from whiteboard.layout import load_layout, parse_layout
from whiteboard.service import BoardService, PatientDetails
from whiteboard.store import migrate, rows
from whiteboard.store import statements as st
from whiteboard.store.accounts import Principal
from whiteboard.store.engine import open_engines
from whiteboard.store.repository import Repository
from whiteboard.store.tables import beds, events, flags, metadata, patients, stays, wards
from whiteboard.types import EventRecord

NURSE = Principal("user", "nurse.ann", "nurse")
DOCTOR = Principal("user", "dr.bo", "doctor")
IPC = Principal("token", "ipc-team", "ipc")
BED_MANAGER = Principal("user", "flow.cy", "bed_manager")


def hospital_layout(w01_name: str = "Ward One", bay: str = "B1") -> dict[str, Any]:
    """Two sites: W01 (8 beds) and W02 (4 beds) on SJH, and W03 (no beds yet) on RVI."""
    return {
        "sites": [
            {
                "code": "SJH",
                "name": "St James",
                "wards": [
                    {
                        "code": "W01",
                        "name": w01_name,
                        "specialty": "Medicine",
                        "beds": [{"code": f"W01-{bay}-{i}", "bay": bay, "kind": "bay"} for i in range(1, 8)]
                        + [{"code": "W01-SR-8", "bay": "SR", "kind": "side_room"}],
                    },
                    {
                        "code": "W02",
                        "name": "Ward Two",
                        "specialty": "Surgery",
                        "beds": [{"code": f"W02-B1-{i}", "bay": "B1"} for i in range(1, 5)],
                    },
                ],
            },
            {
                "code": "RVI",
                "name": "Royal Victoria",
                "wards": [{"code": "W03", "name": "Ward Three", "beds": []}],
            },
        ]
    }


def details(n: int, **over: Any) -> PatientDetails:
    return PatientDetails(**patient(n, **over))


class RecordingBroker(MemoryBroker):
    """The in-process broker, also keeping every message it was asked to publish."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[EventRecord] = []

    async def publish(self, ward: str, data: bytes) -> None:
        self.published.append(decode_event(data))
        await super().publish(ward, data)


@dataclass
class Store:
    url: str
    writer: AsyncEngine
    reader: AsyncEngine
    repo: Repository
    broker: RecordingBroker
    service: BoardService
    extra: list[BoardService] = field(default_factory=list)

    async def second_service(self) -> BoardService:
        """A service on engines of its own: another server process, as far as the store can tell."""
        writer, reader = open_engines(self.url)
        service = BoardService(Repository(writer, reader, verify_cache=True), RecordingBroker())
        self.extra.append(service)
        return service

    async def close(self) -> None:
        for repo in [self.repo, *(s.repo for s in self.extra)]:
            repo.close()
            await repo.writer.dispose()
            if repo.reader is not repo.writer:
                await repo.reader.dispose()


async def open_store(url: str) -> Store:
    writer, reader = open_engines(url)
    # Every write checks the repository's cached boards against a fresh load from the store.
    repo = Repository(writer, reader, verify_cache=True)
    broker = RecordingBroker()
    return Store(url, writer, reader, repo, broker, BoardService(repo, broker))


@contextlib.asynccontextmanager
async def store_with_hospital(url: str) -> AsyncIterator[Store]:
    """A store over `url`, migrated, with `hospital_layout` loaded; closed afterwards."""
    s = await open_store(url)
    try:
        await migrate.upgrade(s.writer)
        await load_layout(s.writer, parse_layout(hospital_layout()))
        yield s
    finally:
        await s.close()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with store_with_hospital(database_url) as s:
        yield s


# --- reading the store back ------------------------------------------------------------------------


async def dump(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order: 'nothing changed' means this is equal."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as conn:
        for table in metadata.sorted_tables:
            result = await conn.execute(select(table).order_by(*table.primary_key.columns))
            out[table.name] = [tuple(r) for r in result]
    return out


async def log_of(engine: AsyncEngine, ward: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(events).where(events.c.ward_code == ward).order_by(events.c.seq))
        return [dict(r._mapping) for r in result]


async def ward_seq(engine: AsyncEngine, ward: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(wards.c.seq).where(wards.c.code == ward))).scalar_one())


async def row(engine: AsyncEngine, table: Any, **where: Any) -> dict[str, Any]:
    async with engine.connect() as conn:
        query = select(table)
        for key, value in where.items():
            query = query.where(table.c[key] == value)
        found = (await conn.execute(query)).first()
    assert found is not None, (table.name, where)
    return dict(found._mapping)


async def check_log_matches_state(s: Store) -> None:
    """The two halves of every commit agree: per ward, seq 1..N with no gap and the ward's counter
    at N; and every bed's row is exactly what the last event about that bed said it became."""
    for ward in ("W01", "W02", "W03"):
        log = await log_of(s.writer, ward)
        seq = await ward_seq(s.writer, ward)
        assert [e["seq"] for e in log] == list(range(1, seq + 1)), ward
        last_bed: dict[str, dict[str, Any]] = {}
        for e in log:
            if "bed" in e["payload"]:
                last_bed[e["payload"]["bed"]["code"]] = e["payload"]["bed"]
        board = await s.repo.board(ward)
        assert board.seq == seq
        for bed in board.beds:
            if bed.code in last_bed:
                assert bed_json(bed) == last_bed[bed.code], (ward, bed.code)
            else:
                assert bed.version == 1 and bed.state == "available" and bed.stay is None


# --- migrations ------------------------------------------------------------------------------------


def _schema(sync: Connection) -> dict[str, Any]:
    insp = inspect(sync)
    out: dict[str, Any] = {}
    for name in sorted(insp.get_table_names()):
        out[name] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(name)],
            "pk": insp.get_pk_constraint(name)["constrained_columns"],
            "fks": sorted(
                (tuple(fk["constrained_columns"]), fk["referred_table"]) for fk in insp.get_foreign_keys(name)
            ),
            "indexes": sorted(
                (i["name"] or "", tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(name)
            ),
            "uniques": sorted(
                (u["name"] or "", tuple(u["column_names"])) for u in insp.get_unique_constraints(name)
            ),
        }
    return out


def _diff(sync: Connection) -> list[Any]:
    context = MigrationContext.configure(sync, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_open_stay_lookups_use_the_two_column_indexes(tmp_path: Path) -> None:
    """SQLite keeps no statistics: given `is_open` indexed on its own, it read every open stay in
    the trust to find one patient's or one ward's. The feed and the board loader must not."""
    writer, reader = open_engines(f"sqlite+aiosqlite:///{tmp_path}/plan.db")
    try:
        await migrate.upgrade(writer)
        async with writer.connect() as conn:
            for statement, index in [
                (st.OPEN_STAY_OF_PATIENT, "ix_stays_patient_open (patient_id=? AND is_open=?)"),
                (st.LAST_WARD_OF_PATIENT, "ix_stays_patient_open (patient_id=?)"),
                (rows._OPEN_STAYS_OF_WARD, "ix_stays_ward_open (ward_code=? AND is_open=?)"),
            ]:
                sql = str(statement.compile(dialect=sqlite.dialect()))
                plan = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, (None,) * sql.count("?"))
                steps = [row[3] for row in plan]
                assert f"SEARCH stays USING INDEX {index}" in steps, steps
    finally:
        await writer.dispose()
        await reader.dispose()


async def test_upgrade_is_idempotent_and_builds_exactly_the_tables(database_url: str) -> None:
    writer, reader = open_engines(database_url)
    try:
        assert await migrate.pending(writer) != []
        await migrate.upgrade(writer)
        async with writer.connect() as conn:
            first = await conn.run_sync(_schema)
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
        # Data in place, then again: nothing changes, nothing is lost.
        await load_layout(writer, parse_layout(hospital_layout()))
        before = await dump(writer)
        await migrate.upgrade(writer)
        await migrate.upgrade(writer)
        async with writer.connect() as conn:
            assert await conn.run_sync(_schema) == first
            again = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
            diff = await conn.run_sync(_diff)
        assert again == version and len(version) == 1
        assert await migrate.pending(writer) == []
        assert await dump(writer) == before
        assert diff == [], f"migrations and whiteboard.store.tables disagree: {diff}"
        assert set(first) == {t.name for t in metadata.sorted_tables} | {"alembic_version"}
    finally:
        await writer.dispose()
        if reader is not writer:
            await reader.dispose()


# --- layout ----------------------------------------------------------------------------------------


async def test_loading_a_layout_twice_updates_in_place_and_never_duplicates(store: Store) -> None:
    first = await dump(store.writer)
    assert len(first["sites"]) == 2 and len(first["wards"]) == 3 and len(first["beds"]) == 12
    # Occupy a bed: reloading the layout keeps its state and occupant.
    admitted = await store.service.admit(NURSE, "W01-B1-1", details(1))
    assert admitted.stay is not None
    counts = await load_layout(store.writer, parse_layout(hospital_layout()))
    assert counts == {"sites": 2, "wards": 3, "beds_added": 0, "beds_updated": 12}
    # Renamed ward, site and bays; one new bed: names change in place, one bed is added.
    doc = hospital_layout(w01_name="Ward One (Acute)")
    doc["sites"][0]["name"] = "St James's University Hospital"
    for bed in doc["sites"][0]["wards"][0]["beds"]:
        bed["bay"] = "Bay A"
    doc["sites"][1]["wards"][0]["beds"] = [{"code": "W03-SR-1", "bay": "SR", "kind": "negative_pressure"}]
    counts = await load_layout(store.writer, parse_layout(doc))
    assert counts == {"sites": 2, "wards": 3, "beds_added": 1, "beds_updated": 12}
    counts = await load_layout(store.writer, parse_layout(doc))
    assert counts == {"sites": 2, "wards": 3, "beds_added": 0, "beds_updated": 13}
    after = await dump(store.writer)
    assert len(after["sites"]) == 2 and len(after["wards"]) == 3 and len(after["beds"]) == 13
    assert (await row(store.writer, wards, code="W01"))["name"] == "Ward One (Acute)"
    assert (await row(store.writer, wards, code="W01"))["seq"] == 1  # the event counter is kept
    site = next(s for s in after["sites"] if s[0] == "SJH")
    assert site[1] == "St James's University Hospital"
    occupied = await row(store.writer, beds, code="W01-B1-1")
    assert occupied["bay"] == "Bay A"
    assert occupied["state"] == "occupied" and occupied["stay_id"] == admitted.stay.id
    assert (await row(store.writer, beds, code="W03-SR-1"))["kind"] == "negative_pressure"
    wards_listed = await store.repo.list_wards()
    assert [w["code"] for w in wards_listed] == ["W01", "W02", "W03"]
    assert wards_listed[2] == {
        "code": "W03",
        "name": "Ward Three",
        "site": "RVI",
        "beds_total": 1,
        "beds_free": 1,
    }


async def test_a_layout_loaded_while_serving_reaches_the_next_write(store: Store) -> None:
    """Servers keep boards they wrote in memory while the ward's seq and layout version hold: a
    layout load must move the version on, or a new bed is 'not known' and a renamed ward keeps
    its old name until some other change moves the seq."""
    await store.service.admit(NURSE, "W01-B1-1", details(1))  # W01's board is now held in memory
    doc = hospital_layout(w01_name="Ward One (Acute)")
    doc["sites"][0]["wards"][0]["beds"].append({"code": "W01-B1-9", "bay": "B1", "kind": "bay"})
    await load_layout(store.writer, parse_layout(doc))
    outcome = await store.service.update_bed(NURSE, "W01-B1-9", 1, "closed")
    assert [e.bed.code for e in outcome.events if e.bed is not None] == ["W01-B1-9"]
    board = await store.repo.board("W01")
    assert board.ward.name == "Ward One (Acute)"
    added = board.bed("W01-B1-9")
    assert added is not None and added.state == "closed"


def _bad(path: list[Any], value: Any, *, delete: bool = False) -> dict[str, Any]:
    """The good layout with one field replaced (or removed)."""
    doc = copy.deepcopy(hospital_layout())
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


def _duplicate_bed() -> dict[str, Any]:
    doc = hospital_layout()
    doc["sites"][0]["wards"][1]["beds"][1]["code"] = "W02-B1-1"
    return doc


def _duplicate_ward() -> dict[str, Any]:
    doc = hospital_layout()
    doc["sites"][1]["wards"][0]["code"] = "W01"
    return doc


def _duplicate_site() -> dict[str, Any]:
    doc = hospital_layout()
    doc["sites"][1]["code"] = "SJH"
    return doc


S0 = ["sites", 0]
W0 = [*S0, "wards", 0]
B0 = [*W0, "beds", 0]

BAD_LAYOUTS: list[tuple[str, Any, str]] = [
    ("not an object", [], "sites"),
    ("no sites", {"wards": []}, "sites"),
    ("sites not a list", {"sites": {"code": "SJH"}}, "sites"),
    ("site not an object", {"sites": ["SJH"]}, "sites[0]"),
    ("site code missing", _bad([*S0, "code"], None, delete=True), "sites[0].code"),
    ("site code not text", _bad([*S0, "code"], 12), "sites[0].code"),
    ("site code with a space", _bad([*S0, "code"], "SJ H"), "sites[0].code"),
    ("site code too long", _bad([*S0, "code"], "S" * 65), "sites[0].code"),
    ("site code with a newline", _bad([*S0, "code"], "SJH\n"), "sites[0].code"),
    ("site name missing", _bad([*S0, "name"], None, delete=True), "sites[0].name"),
    ("site name blank", _bad([*S0, "name"], "   "), "sites[0].name"),
    ("site name too long", _bad([*S0, "name"], "n" * 201), "sites[0].name"),
    ("wards not a list", _bad([*S0, "wards"], "W01"), "sites[0].wards"),
    ("ward not an object", _bad([*S0, "wards", 1], "W02"), "sites[0].wards[1]"),
    ("ward code missing", _bad([*W0, "code"], None, delete=True), "sites[0].wards[0].code"),
    ("ward code bad", _bad([*W0, "code"], "W01/../x"), "sites[0].wards[0].code"),
    ("ward code with a newline", _bad([*W0, "code"], "W01\n"), "sites[0].wards[0].code"),
    ("ward name not text", _bad([*W0, "name"], ["Ward"]), "sites[0].wards[0].name"),
    ("ward specialty not text", _bad([*W0, "specialty"], 7), "sites[0].wards[0].specialty"),
    ("beds not a list", _bad([*W0, "beds"], {"code": "W01-B1-1"}), "sites[0].wards[0].beds"),
    ("bed not an object", _bad([*W0, "beds", 2], "W01-B1-3"), "sites[0].wards[0].beds[2]"),
    ("bed code missing", _bad([*B0, "code"], None, delete=True), "sites[0].wards[0].beds[0].code"),
    ("bed code empty", _bad([*B0, "code"], ""), "sites[0].wards[0].beds[0].code"),
    ("bed code with a newline", _bad([*B0, "code"], "W01-B1-1\n"), "sites[0].wards[0].beds[0].code"),
    ("bed kind unknown", _bad([*B0, "kind"], "cupboard"), "sites[0].wards[0].beds[0].kind"),
    ("bed kind null", _bad([*B0, "kind"], None), "sites[0].wards[0].beds[0].kind"),
    ("bed kind a list", _bad([*B0, "kind"], ["bay"]), "sites[0].wards[0].beds[0].kind"),
    ("bed kind an object", _bad([*B0, "kind"], {"bay": 1}), "sites[0].wards[0].beds[0].kind"),
    ("bed bay not text", _bad([*B0, "bay"], 1), "sites[0].wards[0].beds[0].bay"),
    ("bed bay too long", _bad([*B0, "bay"], "b" * 201), "sites[0].wards[0].beds[0].bay"),
    ("bed code twice", _duplicate_bed(), "sites[0].wards[1].beds[1].code"),
    ("ward code twice", _duplicate_ward(), "sites[1].wards[0].code"),
    ("site code twice", _duplicate_site(), "sites[1].code"),
]


@pytest.mark.parametrize(
    ("doc", "field_path"), [(d, f) for _, d, f in BAD_LAYOUTS], ids=[w for w, _, _ in BAD_LAYOUTS]
)
def test_a_bad_layout_is_refused_naming_the_bad_field(doc: Any, field_path: str) -> None:
    with pytest.raises(Invalid) as refused:
        parse_layout(doc)
    assert refused.value.message.startswith(field_path + ":"), refused.value.message


async def test_a_bad_layout_writes_nothing(store: Store) -> None:
    await store.service.admit(NURSE, "W01-B1-1", details(1))
    before = await dump(store.writer)
    wrong: list[str] = []
    for what, doc, field_path in BAD_LAYOUTS:
        try:
            await load_layout(store.writer, parse_layout(doc))
        except Invalid:
            pass
        except Exception as exc:
            wrong.append(f"{what}: raised {type(exc).__name__}: {exc} instead of Invalid naming {field_path}")
        else:
            wrong.append(f"{what}: was loaded")
        if await dump(store.writer) != before:
            wrong.append(f"{what}: changed the store")
            before = await dump(store.writer)
    assert wrong == [], "\n".join(wrong)


async def test_a_layout_refused_while_writing_rolls_back_everything(store: Store) -> None:
    """A bed may not move between wards by a layout load; the check runs inside the write, after
    new rows were already inserted, and the whole transaction is rolled back."""
    before = await dump(store.writer)
    doc = hospital_layout(w01_name="Renamed")
    doc["sites"].insert(0, {"code": "NEW", "name": "New Site", "wards": []})
    doc["sites"][1]["wards"][1]["beds"].append({"code": "W01-B1-1", "bay": "B1"})  # W01's bed under W02
    doc["sites"][1]["wards"][0]["beds"].pop(0)
    with pytest.raises(Invalid, match="W01-B1-1"):
        await load_layout(store.writer, parse_layout(doc))
    assert await dump(store.writer) == before


def _stay_id(bed: dict[str, Any]) -> str | None:
    return None if bed["stay"] is None else bed["stay"]["id"]


# --- the write path --------------------------------------------------------------------------------


async def test_every_command_commits_state_and_events_together_in_seq_order(store: Store) -> None:
    s = store.service
    published_before = len(store.broker.published)

    admitted = await s.admit(NURSE, "W01-B1-1", details(1), consultant="Dr Ada", edd="2030-01-02")
    stay = admitted.stay
    assert stay is not None and stay.version == 1
    assert (await row(store.writer, stays, id=stay.id))["is_open"] is True
    assert (await row(store.writer, patients, id=stay.patient.id))["nhs_number"] == patient(1)["nhs_number"]
    bed_row = await row(store.writer, beds, code="W01-B1-1")
    assert (bed_row["state"], bed_row["stay_id"], bed_row["version"]) == ("occupied", stay.id, 2)

    edited = await s.update_stay(DOCTOR, stay.id, 1, {"news2": 5, "discharge": {"pathway": 1}})
    assert edited.stay is not None and edited.stay.version == 2
    stay_row = await row(store.writer, stays, id=stay.id)
    assert stay_row["news2"] == 5 and stay_row["discharge"]["pathway"] == 1 and stay_row["version"] == 2

    raised = await s.raise_flag(IPC, stay.patient.id, "MRSA", "suspected", "contact")
    assert raised.flag is not None
    confirmed = await s.update_flag(IPC, raised.flag.id, "confirmed", None)
    assert confirmed.flag is not None and confirmed.flag.version == 2
    assert (await row(store.writer, flags, id=raised.flag.id))["status"] == "confirmed"

    closed = await s.update_bed(BED_MANAGER, "W01-B1-2", 1, "closed")
    assert closed.bed is not None and closed.bed.state == "closed"
    moved = await s.transfer(NURSE, stay.id, "W01-B1-3")  # within W01: two events
    assert moved.stay is not None and moved.stay.bed == "W01-B1-3"
    across = await s.transfer(NURSE, stay.id, "W02-B1-1")  # W01 -> W02: one event on each
    assert across.stay is not None and across.stay.ward == "W02"
    assert (await row(store.writer, stays, id=stay.id))["ward_code"] == "W02"
    gone = await s.discharge(NURSE, stay.id)
    assert gone.stay is not None
    ended = await row(store.writer, stays, id=stay.id)
    assert ended["is_open"] is False and ended["end_reason"] == "discharged" and ended["ended_at"]
    assert (await row(store.writer, beds, code="W02-B1-1"))["state"] == "dirty"

    w01, w02 = await log_of(store.writer, "W01"), await log_of(store.writer, "W02")
    assert [(e["seq"], e["type"], e["actor"]) for e in w01] == [
        (1, "admit", "user:nurse.ann"),
        (2, "stay_update", "user:dr.bo"),
        (3, "flag_raise", "token:ipc-team"),
        (4, "flag_update", "token:ipc-team"),
        (5, "bed_update", "user:flow.cy"),
        (6, "transfer", "user:nurse.ann"),
        (7, "transfer", "user:nurse.ann"),
        (8, "transfer", "user:nurse.ann"),
    ]
    assert [(e["seq"], e["type"], e["actor"]) for e in w02] == [
        (1, "transfer", "user:nurse.ann"),
        (2, "discharge", "user:nurse.ann"),
    ]
    assert await ward_seq(store.writer, "W01") == 8 and await ward_seq(store.writer, "W02") == 2
    # Each event says what the bed was before and what it became; the bed's own version moves
    # on when the bed changes (its state or occupant), not when the stay in it is edited.
    for e in w01 + w02:
        before, after = e["payload"]["before"], e["payload"]["bed"]
        assert before["code"] == after["code"] and before != after, e
        bed_changed = (before["state"], _stay_id(before)) != (after["state"], _stay_id(after))
        assert after["version"] == before["version"] + (1 if bed_changed else 0), e
        assert e["at"].endswith("Z")
    admit_event = w01[0]["payload"]
    assert admit_event["before"]["state"] == "available" and admit_event["before"]["stay"] is None
    assert admit_event["bed"]["state"] == "occupied" and admit_event["bed"]["stay"]["id"] == stay.id
    edit_event = w01[1]["payload"]
    assert edit_event["before"]["stay"]["news2"] is None and edit_event["bed"]["stay"]["news2"] == 5
    assert [f["status"] for f in w01[2]["payload"]["bed"]["stay"]["flags"]] == ["suspected"]
    assert [f["status"] for f in w01[3]["payload"]["bed"]["stay"]["flags"]] == ["confirmed"]
    assert [e["payload"]["bed"]["code"] for e in w01[5:]] == ["W01-B1-1", "W01-B1-3", "W01-B1-3"]
    assert w01[5]["payload"]["bed"]["state"] == "dirty" and w01[6]["payload"]["bed"]["stay"]["id"] == stay.id
    assert w02[0]["payload"]["before"]["state"] == "available"
    assert (
        w02[1]["payload"]["bed"]["state"] == "dirty" and w02[1]["payload"]["before"]["stay"]["id"] == stay.id
    )
    await check_log_matches_state(store)
    # What the broker was handed is exactly what was committed, in commit order.
    published = [(r.ward, r.seq, r.type, r.actor) for r in store.broker.published[published_before:]]
    logged = sorted(
        ((e["ward_code"], e["seq"], e["type"], e["actor"], e["id"]) for e in w01 + w02), key=lambda t: t[4]
    )
    assert published == [t[:4] for t in logged]
    assert [r.payload for r in store.broker.published[published_before:]] == [
        e["payload"] for e in sorted(w01 + w02, key=lambda e: e["id"])
    ]


async def test_a_flag_for_a_patient_who_is_not_in_waits_for_their_next_admission(store: Store) -> None:
    s = store.service
    first = await s.admit(NURSE, "W01-B1-1", details(2))
    assert first.stay is not None
    await s.discharge(NURSE, first.stay.id)
    seqs = {w: await ward_seq(store.writer, w) for w in ("W01", "W02")}
    raised = await s.raise_flag(IPC, first.stay.patient.id, "CDIFF", "confirmed", "contact")
    assert raised.flag is not None and raised.events == ()
    # Written, but no ward shows it: no event anywhere.
    assert (await row(store.writer, flags, id=raised.flag.id))["code"] == "CDIFF"
    assert {w: await ward_seq(store.writer, w) for w in ("W01", "W02")} == seqs
    again = await s.admit(NURSE, "W02-B1-2", details(2))
    assert again.stay is not None and again.stay.patient.id == first.stay.patient.id
    assert [(f.code, f.status) for f in again.stay.flags] == [("CDIFF", "confirmed")]
    admit_event = (await log_of(store.writer, "W02"))[-1]["payload"]
    assert [f["code"] for f in admit_event["bed"]["stay"]["flags"]] == ["CDIFF"]
    await check_log_matches_state(store)


async def test_a_transfer_across_wards_moves_both_counters(store: Store) -> None:
    admitted = await store.service.admit(NURSE, "W01-B1-4", details(3))
    assert admitted.stay is not None
    before = {w: await ward_seq(store.writer, w) for w in ("W01", "W02", "W03")}
    await store.service.transfer(BED_MANAGER, admitted.stay.id, "W02-B1-4")
    after = {w: await ward_seq(store.writer, w) for w in ("W01", "W02", "W03")}
    assert after == {"W01": before["W01"] + 1, "W02": before["W02"] + 1, "W03": before["W03"]}
    left, arrived = (await log_of(store.writer, "W01"))[-1], (await log_of(store.writer, "W02"))[-1]
    assert left["payload"]["bed"]["code"] == "W01-B1-4" and left["payload"]["bed"]["stay"] is None
    assert arrived["payload"]["bed"]["stay"]["ward"] == "W02"
    assert left["at"] == arrived["at"] and left["actor"] == arrived["actor"] == "user:flow.cy"
    await check_log_matches_state(store)


async def test_a_refused_command_writes_nothing(store: Store) -> None:
    s = store.service
    a = (await s.admit(NURSE, "W01-B1-1", details(4))).stay
    b = (await s.admit(NURSE, "W01-B1-2", details(5))).stay
    assert a is not None and b is not None
    await s.update_bed(NURSE, "W01-B1-3", 1, "closed")
    await s.update_bed(NURSE, "W01-B1-4", 1, "dirty")
    flag = (await s.raise_flag(IPC, a.patient.id, "MRSA", "confirmed", "contact")).flag
    assert flag is not None
    a = (await store.repo.board("W01")).stay(a.id)
    assert a is not None

    refusals: list[tuple[str, Callable[[], Awaitable[Outcome]], type[WhiteboardError]]] = [
        ("admit into an occupied bed", lambda: s.admit(NURSE, "W01-B1-2", details(6)), Conflict),
        ("admit into a closed bed", lambda: s.admit(NURSE, "W01-B1-3", details(6)), Conflict),
        ("admit into a dirty bed", lambda: s.admit(NURSE, "W01-B1-4", details(6)), Conflict),
        ("admit into an unknown bed", lambda: s.admit(NURSE, "W09-B1-1", details(6)), NotFound),
        (
            "admit with a bad NHS number",
            lambda: s.admit(NURSE, "W01-B1-5", details(6, nhs_number="9990000019")),
            Invalid,
        ),
        ("admit someone already in", lambda: s.admit(NURSE, "W02-B1-1", details(4)), Conflict),
        ("admit with a bad EDD", lambda: s.admit(NURSE, "W01-B1-5", details(6), edd="2030-02-30"), Invalid),
        ("transfer into an occupied bed", lambda: s.transfer(NURSE, a.id, "W01-B1-2"), Conflict),
        ("transfer into a closed bed", lambda: s.transfer(NURSE, a.id, "W01-B1-3"), Conflict),
        ("transfer an unknown stay", lambda: s.transfer(NURSE, "s-nope", "W01-B1-5"), NotFound),
        ("transfer to an unknown bed", lambda: s.transfer(NURSE, a.id, "W09-B1-1"), NotFound),
        ("discharge an unknown stay", lambda: s.discharge(NURSE, "s-nope"), NotFound),
        (
            "edit an old version",
            lambda: s.update_stay(NURSE, a.id, a.version - 1, {"news2": 3}),
            StaleVersion,
        ),
        (
            "edit a future version",
            lambda: s.update_stay(NURSE, a.id, a.version + 1, {"news2": 3}),
            StaleVersion,
        ),
        ("NEWS2 of 21", lambda: s.update_stay(NURSE, a.id, a.version, {"news2": 21}), Invalid),
        ("pathway 4", lambda: s.update_stay(NURSE, a.id, a.version, {"discharge": {"pathway": 4}}), Invalid),
        ("unknown alert", lambda: s.update_stay(NURSE, a.id, a.version, {"alerts": ["vampire"]}), Invalid),
        ("unknown stay field", lambda: s.update_stay(NURSE, a.id, a.version, {"bed": "W01-B1-5"}), Invalid),
        ("close an occupied bed", lambda: s.update_bed(NURSE, "W01-B1-1", 2, "closed"), Conflict),
        ("set a bed occupied", lambda: s.update_bed(NURSE, "W01-B1-5", 1, "occupied"), Invalid),
        ("stale bed version", lambda: s.update_bed(NURSE, "W01-B1-3", 1, "available"), StaleVersion),
        (
            "second active MRSA",
            lambda: s.raise_flag(IPC, a.patient.id, "MRSA", "suspected", "contact"),
            Conflict,
        ),
        (
            "bad organism code",
            lambda: s.raise_flag(IPC, a.patient.id, "m r s a", "suspected", "contact"),
            Invalid,
        ),
        ("flag for nobody", lambda: s.raise_flag(IPC, "p-nope", "MRSA", "suspected", "contact"), NotFound),
        ("confirmed back to suspected", lambda: s.update_flag(IPC, flag.id, "suspected", None), Conflict),
        ("stale flag version", lambda: s.update_flag(IPC, flag.id, "cleared", 7), StaleVersion),
        ("unknown flag", lambda: s.update_flag(IPC, "f-nope", "cleared", None), NotFound),
    ]
    before = await dump(store.writer)
    published = len(store.broker.published)
    wrong = []
    for what, attempt, expected in refusals:
        try:
            await attempt()
        except WhiteboardError as exc:
            if type(exc) is not expected:
                wrong.append(f"{what}: {type(exc).__name__} ({exc.message}), expected {expected.__name__}")
        else:
            wrong.append(f"{what}: was applied")
        if await dump(store.writer) != before:
            wrong.append(f"{what}: changed the store")
            before = await dump(store.writer)
    assert wrong == [], "\n".join(wrong)
    assert len(store.broker.published) == published
    await check_log_matches_state(store)


async def test_state_and_events_commit_together_or_not_at_all(store: Store) -> None:
    """If appending the event fails (here: its seq is already taken), the state rows written
    earlier in the same transaction are rolled back with it."""
    async with store.writer.begin() as conn:
        await conn.execute(
            events.insert().values(
                ward_code="W01",
                seq=1,
                at="2030-01-01T00:00:00.000Z",
                actor="test",
                type="squatter",
                payload={},
            )
        )
    before = await dump(store.writer)
    with pytest.raises(IntegrityError):
        await store.service.admit(NURSE, "W01-B1-1", details(7))
    assert await dump(store.writer) == before
    assert store.broker.published == []


async def test_events_since_limit_and_until(store: Store) -> None:
    stay = (await store.service.admit(NURSE, "W01-B1-1", details(8))).stay
    assert stay is not None
    for news2 in range(9):
        stay = (await store.service.update_stay(NURSE, stay.id, stay.version, {"news2": news2})).stay
        assert stay is not None
    await store.service.admit(NURSE, "W02-B1-1", details(9))
    repo = store.repo
    every = await repo.events_since("W01", 0)
    assert [r.seq for r in every] == list(range(1, 11))
    assert [r.type for r in every] == ["admit"] + ["stay_update"] * 9
    assert all(r.ward == "W01" and r.actor == "user:nurse.ann" for r in every)
    assert [r.seq for r in await repo.events_since("W01", 3)] == list(range(4, 11))
    assert [r.seq for r in await repo.events_since("W01", 3, limit=2)] == [4, 5]
    assert [r.seq for r in await repo.events_since("W01", 3, until=6)] == [4, 5, 6]
    assert [r.seq for r in await repo.events_since("W01", 3, limit=2, until=4)] == [4]
    assert await repo.events_since("W01", 10) == []
    assert await repo.events_since("W01", 50) == []
    assert await repo.events_since("W01", 5, until=5) == []
    assert [r.seq for r in await repo.events_since("W02", 0)] == [1]
    assert await repo.events_since("W03", 0) == []
    assert await repo.events_since("NOPE", 0) == []
    assert await repo.oldest_seq("W01") == 1 and await repo.oldest_seq("W03") is None
    assert await repo.ward_seqs(["W01", "W02", "W03"]) == {"W01": 10, "W02": 1, "W03": 0}
    # The API form of a record: seq, at, actor, type, and what the bed became and was.
    first = every[0].api_json()
    assert (
        {"seq", "at", "actor", "type", "bed", "before"}
        <= set(first)
        <= {"seq", "at", "actor", "type", "bed", "before", "detail"}
    )
    assert first["bed"]["stay"]["id"] == every[-1].payload["bed"]["stay"]["id"]


async def test_list_wards_counts_total_and_available_beds(store: Store) -> None:
    assert await store.repo.list_wards() == [
        {"code": "W01", "name": "Ward One", "site": "SJH", "beds_total": 8, "beds_free": 8},
        {"code": "W02", "name": "Ward Two", "site": "SJH", "beds_total": 4, "beds_free": 4},
        {"code": "W03", "name": "Ward Three", "site": "RVI", "beds_total": 0, "beds_free": 0},
    ]
    s = store.service
    stay = (await s.admit(NURSE, "W01-B1-1", details(10))).stay
    assert stay is not None
    await s.update_bed(NURSE, "W01-B1-2", 1, "closed")
    await s.update_bed(NURSE, "W01-B1-3", 1, "reserved")
    await s.update_bed(NURSE, "W02-B1-1", 1, "dirty")
    await s.transfer(NURSE, stay.id, "W01-B1-3")  # reserved -> occupied; B1-1 left dirty
    counts = {w["code"]: (w["beds_total"], w["beds_free"]) for w in await store.repo.list_wards()}
    assert counts == {"W01": (8, 5), "W02": (4, 3), "W03": (0, 0)}
    await s.update_bed(NURSE, "W01-B1-1", 3, "available")
    counts = {w["code"]: (w["beds_total"], w["beds_free"]) for w in await store.repo.list_wards()}
    assert counts == {"W01": (8, 6), "W02": (4, 3), "W03": (0, 0)}


# --- two writers -----------------------------------------------------------------------------------


def _tally(results: list[Any]) -> tuple[list[Outcome], list[BaseException], list[BaseException]]:
    wins = [r for r in results if isinstance(r, Outcome)]
    stale = [r for r in results if isinstance(r, StaleVersion)]
    other = [r for r in results if isinstance(r, BaseException) and not isinstance(r, StaleVersion)]
    return wins, stale, other


async def test_twenty_concurrent_edits_of_one_version_one_wins(store: Store) -> None:
    stay = (await store.service.admit(NURSE, "W01-B1-1", details(11))).stay
    assert stay is not None
    seq = await ward_seq(store.writer, "W01")
    results = await asyncio.gather(
        *(
            store.service.update_stay(NURSE, stay.id, stay.version, {"news2": i, "named_nurse": f"N{i}"})
            for i in range(20)
        ),
        return_exceptions=True,
    )
    wins, stale, other = _tally(results)
    assert other == [] and len(wins) == 1 and len(stale) == 19
    winner = wins[0].stay
    assert winner is not None and winner.version == stay.version + 1
    stored = await row(store.writer, stays, id=stay.id)
    assert (stored["news2"], stored["named_nurse"], stored["version"]) == (
        winner.news2,
        winner.named_nurse,
        winner.version,
    )
    assert stored["named_nurse"] == f"N{stored['news2']}"  # one writer's change, never a mixture
    assert await ward_seq(store.writer, "W01") == seq + 1
    await check_log_matches_state(store)


async def test_two_processes_editing_one_version_one_wins_every_round(store: Store) -> None:
    other = await store.second_service()
    services = [store.service, other]
    stay = (await store.service.admit(NURSE, "W01-B1-1", details(12))).stay
    assert stay is not None
    for round_no in range(10):
        seq = await ward_seq(store.writer, "W01")
        version = (await row(store.writer, stays, id=stay.id))["version"]
        results = await asyncio.gather(
            *(
                services[i % 2].update_stay(NURSE, stay.id, version, {"news2": (round_no + i) % 21})
                for i in range(6)
            ),
            return_exceptions=True,
        )
        wins, stale, others = _tally(results)
        assert others == [] and len(wins) == 1 and len(stale) == 5, (round_no, results)
        assert (await row(store.writer, stays, id=stay.id))["version"] == version + 1
        assert await ward_seq(store.writer, "W01") == seq + 1
    await check_log_matches_state(store)


async def test_two_processes_writing_one_ward_share_one_gapless_sequence(store: Store) -> None:
    other = await store.second_service()
    services = [store.service, other]
    bed_codes = [f"W01-B1-{i}" for i in range(1, 8)] + ["W01-SR-8"]
    results = await asyncio.gather(
        *(services[i % 2].update_bed(BED_MANAGER, code, 1, "closed") for i, code in enumerate(bed_codes)),
        *(services[i % 2].admit(NURSE, f"W02-B1-{i + 1}", details(20 + i)) for i in range(4)),
        return_exceptions=True,
    )
    assert all(isinstance(r, Outcome) for r in results), results
    w01, w02 = await log_of(store.writer, "W01"), await log_of(store.writer, "W02")
    assert [e["seq"] for e in w01] == list(range(1, 9))
    assert sorted(e["payload"]["bed"]["code"] for e in w01) == sorted(bed_codes)
    assert [e["seq"] for e in w02] == list(range(1, 5))
    await check_log_matches_state(store)


async def test_a_process_never_decides_on_a_board_another_process_has_changed(store: Store) -> None:
    """Each repository keeps the boards it wrote; another process's write (or a layout load)
    must make that copy useless, never silently overwrite what the other process did."""
    other = await store.second_service()
    stay = (await store.service.admit(NURSE, "W01-B1-1", details(14))).stay
    assert stay is not None
    await store.service.update_stay(NURSE, stay.id, 1, {"news2": 4})  # this process caches W01 at v2
    await other.update_stay(DOCTOR, stay.id, 2, {"consultant": "Dr Other"})  # the other moves it to v3
    with pytest.raises(StaleVersion):
        await store.service.update_stay(NURSE, stay.id, 2, {"day_status": "red"})
    await store.service.update_stay(NURSE, stay.id, 3, {"day_status": "red"})
    stored = await row(store.writer, stays, id=stay.id)
    assert (stored["news2"], stored["consultant"], stored["day_status"], stored["version"]) == (
        4,
        "Dr Other",
        "red",
        4,
    )
    # A bed the other process closed is closed for this one too.
    await other.update_bed(BED_MANAGER, "W01-B1-2", 1, "closed")
    with pytest.raises(Conflict):
        await store.service.admit(NURSE, "W01-B1-2", details(15))
    # A layout load (by the CLI, say) renames a bay: the next event shows the new bay.
    await load_layout(store.writer, parse_layout(hospital_layout(bay="B1")))
    doc = hospital_layout()
    for bed in doc["sites"][0]["wards"][0]["beds"]:
        bed["bay"] = "Bay Z" if bed["code"] == "W01-B1-1" else bed["bay"]
    await load_layout(store.writer, parse_layout(doc))
    await store.service.update_stay(NURSE, stay.id, 4, {"news2": 5})
    last = (await log_of(store.writer, "W01"))[-1]["payload"]
    assert last["bed"]["bay"] == "Bay Z" and last["bed"]["stay"]["consultant"] == "Dr Other"
    await check_log_matches_state(store)


# --- durability ------------------------------------------------------------------------------------


async def test_state_survives_reopening_the_engine(store: Store) -> None:
    s = store.service
    stay = (await s.admit(NURSE, "W01-B1-1", details(13), consultant="Dr Ada")).stay
    assert stay is not None
    await s.update_stay(NURSE, stay.id, 1, {"alerts": ["falls_risk", "dnacpr"], "day_status": "red"})
    await s.raise_flag(IPC, stay.patient.id, "NOROVIRUS", "suspected", "contact")
    await s.transfer(NURSE, stay.id, "W02-B1-3")
    boards = {w: snapshot(await store.repo.board(w), "clinical") for w in ("W01", "W02", "W03")}
    rows_before = await dump(store.writer)
    await store.close()

    reopened = await open_store(store.url)
    try:
        await migrate.upgrade(reopened.writer)  # as a restarting server does: nothing to do
        assert {w: snapshot(await reopened.repo.board(w), "clinical") for w in boards} == boards
        assert await dump(reopened.writer) == rows_before
        moved = (await reopened.repo.board("W02")).stay(stay.id)
        assert moved is not None and moved.alerts == ("falls_risk", "dnacpr")
        assert [f.code for f in moved.flags] == ["NOROVIRUS"]
        # And it carries on from where it was: the next event is seq N+1.
        await reopened.service.discharge(NURSE, stay.id)
        assert [e["seq"] for e in await log_of(reopened.writer, "W02")] == [1, 2]
    finally:
        await reopened.close()
