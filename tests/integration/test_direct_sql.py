"""`whiteboard.store.direct.run` gives what `Connection.execute` gives, on SQLite and PostgreSQL.

The write path's hot statements skip SQLAlchemy's per-execution layer; these tests hold the
shortcut to the same values, types, row counts and errors as the long way round.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from whiteboard.store import direct, migrate
from whiteboard.store import statements as st
from whiteboard.store.engine import open_engines, sync_sqlite_writer
from whiteboard.store.tables import events, patients, sites, stays, wards

PATIENT = {
    "id": "p1",
    "nhs_number": "9434765919",
    "mrn": "RX1",
    "given_name": "Ada",
    "family_name": "O'Brien",
    "dob": "1950-01-02",
    "sex": "female",
}
STAY = {
    "id": "s1",
    "patient_id": "p1",
    "ward_code": "W01",
    "bed_code": None,
    "is_open": True,
    "version": 1,
    "admitted_at": "2030-01-01T00:00:00.000Z",
    "consultant": None,
    "named_nurse": None,
    "edd": None,
    "day_status": None,
    "news2": None,
    "alerts": ["falls", "dementia"],
    "discharge": {"pathway": 1, "blockers": [{"code": "tto", "since": None}]},
    "previous": {"bed": "W01-B1-1", "ward": "W01", "bed_state": "dirty"},
}


@contextlib.asynccontextmanager
async def engine_with_a_ward(url: str) -> AsyncIterator[AsyncEngine]:
    """The write engine over `url`, migrated, with one site and ward W01; disposed after."""
    engine, reader = open_engines(url)
    await migrate.upgrade(engine)
    async with engine.begin() as conn:
        await conn.execute(sites.insert().values(code="S", name="Site"))
        await conn.execute(wards.insert().values(code="W01", site_code="S", name="Ward 1"))
    try:
        yield engine
    finally:
        await engine.dispose()
        if reader is not engine:
            await reader.dispose()


@pytest.fixture
async def writer(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with engine_with_a_ward(database_url) as engine:
        yield engine


async def both_ways(engine: AsyncEngine, statement: Any, params: Any = None) -> tuple[Any, Any]:
    """(direct.run's rows, Connection.execute's rows), each in a transaction rolled back after."""

    def shortcut(conn: Connection) -> Any:
        return direct.run(conn, statement, params)

    async with engine.connect() as conn:
        async with conn.begin() as tx:
            got = await conn.run_sync(shortcut)
            await tx.rollback()
        async with conn.begin() as tx:
            result = await conn.execute(statement, params)
            expected = (
                ([tuple(r) for r in result], result.rowcount)
                if result.returns_rows
                else ([], result.rowcount)
            )
            await tx.rollback()
    return got, expected


async def write(engine: AsyncEngine, statement: Any, params: Any) -> direct.Rows:
    def shortcut(conn: Connection) -> direct.Rows:
        return direct.run(conn, statement, params)

    async with engine.begin() as conn:
        return await conn.run_sync(shortcut)


async def test_json_and_booleans_round_trip_as_sqlalchemy_writes_and_reads_them(writer: AsyncEngine) -> None:
    dialect = writer.dialect.name
    await write(writer, st.upsert_for(dialect, patients, PATIENT, "id"), PATIENT)
    await write(writer, st.upsert_for(dialect, stays, STAY, "id"), STAY)
    async with writer.connect() as conn:
        stored = (await conn.execute(select(stays).where(stays.c.id == "s1"))).one()._mapping
    assert {k: stored[k] for k in STAY} == STAY
    got, (expected, _count) = await both_ways(writer, st.OPEN_STAY_OF_PATIENT, {"p_id": "p1"})
    assert got.rows == expected == [("s1", "W01", STAY["previous"])]
    assert got.keys == ("id", "ward_code", "previous")


async def test_a_constant_bound_in_the_statement_is_sent(writer: AsyncEngine) -> None:
    """PATIENT_BY_MRN has LIMIT 1 as a bound parameter the caller never gives."""
    dialect = writer.dialect.name
    for n in (2, 1):
        row = {**PATIENT, "id": f"p{n}", "nhs_number": None}
        await write(writer, st.upsert_for(dialect, patients, row, "id"), row)
    got, (expected, _count) = await both_ways(writer, st.PATIENT_BY_MRN, {"value": "RX1"})
    assert len(got.rows) == 1
    assert got.rows == expected
    assert got.mapping(got.rows[0])["id"] == "p1"


async def test_row_counts_match(writer: AsyncEngine) -> None:
    remember = {"sender": "PAS|RX1", "control_id": "1", "received_at": "2030-01-01T00:00:00Z", "event": "A01"}
    statement = st.record_message(writer.dialect.name)
    assert (await write(writer, statement, remember)).rowcount == 1
    got, (_rows, expected) = await both_ways(writer, statement, remember)
    assert got.rowcount == expected == 0  # already recorded: ON CONFLICT DO NOTHING
    got, (_rows, expected) = await both_ways(writer, st.SET_WARD_SEQ, {"w_code": "W01", "w_seq": 9})
    assert got.rowcount == expected == 1


async def test_many_parameter_sets_in_one_call(writer: AsyncEngine) -> None:
    batch = [
        {
            "ward_code": "W01",
            "seq": n,
            "at": "2030-01-01T00:00:00Z",
            "actor": "t",
            "type": "x",
            "payload": {"n": n},
        }
        for n in (1, 2, 3)
    ]
    await write(writer, st.APPEND_EVENTS, batch)
    async with writer.connect() as conn:
        found = (await conn.execute(select(events.c.seq, events.c.payload).order_by(events.c.seq))).all()
    assert [tuple(r) for r in found] == [(1, {"n": 1}), (2, {"n": 2}), (3, {"n": 3})]


async def test_driver_errors_are_sqlalchemys_and_hide_the_values(writer: AsyncEngine) -> None:
    row = {
        "ward_code": "W01",
        "seq": 1,
        "at": "2030",
        "actor": "t",
        "type": "x",
        "payload": {"secret": "Ada"},
    }
    await write(writer, st.APPEND_EVENTS, [row])
    with pytest.raises(IntegrityError) as raised:
        await write(writer, st.APPEND_EVENTS, [row])  # (ward, seq) is taken
    assert "Ada" not in str(raised.value)


async def test_a_parameter_that_cannot_be_bound_is_a_statement_error(writer: AsyncEngine) -> None:
    """As Connection.execute raises it: SQLAlchemy's StatementError, not a bare KeyError."""
    with pytest.raises(StatementError):
        await write(writer, st.SET_WARD_SEQ, {"w_code": "W01"})  # w_seq missing
    with pytest.raises(StatementError):
        await write(writer, st.APPEND_EVENTS, [{"ward_code": "W01", "seq": 1, "at": "2030", "actor": "t",
                                                "type": "x", "payload": {"bad": {1, 2}}}])  # fmt: skip


async def test_what_it_cannot_run_itself_goes_through_sqlalchemy(writer: AsyncEngine) -> None:
    expanding = select(wards.c.code).where(wards.c.code.in_(bindparam("codes", expanding=True)))
    got, (expected, _count) = await both_ways(writer, expanding, {"codes": ["W01", "W99"]})
    assert got.rows == expected == [("W01",)]


async def test_the_sqlite_writer_thread_engine_runs_statements_directly(tmp_path: Path) -> None:
    """The plan is compiled once and kept; the SQLite writer's pysqlite connection takes it."""
    url = f"sqlite+aiosqlite:///{tmp_path}/direct.db"
    engine, reader = open_engines(url)
    await migrate.upgrade(engine)
    sync = sync_sqlite_writer(engine)
    try:
        with sync.begin() as conn:
            conn.execute(sites.insert().values(code="S", name="Site"))
            conn.execute(wards.insert().values(code="W01", site_code="S", name="Ward 1", seq=4))
            assert direct.run(conn, st.WARD_VERSION, {"code": "W01"}).rows == [(4, 0)]
            assert direct.run(conn, st.WARD_VERSION, {"code": "W02"}).first() is None
        plans = direct._plans[sync.dialect]
        assert plans[(id(st.WARD_VERSION), ("code",), False)][1] is not None
    finally:
        sync.dispose()
        await engine.dispose()
        await reader.dispose()


async def together(engine: AsyncEngine, steps: list[tuple[Any, Any]]) -> list[str]:
    """Run `steps` with run_together in one transaction; the SQL the driver was sent."""
    sent: list[str] = []
    execute = direct._execute

    def spy(conn: Connection, plan: Any, *args: Any) -> Any:
        sent.append(plan.sql)
        return execute(conn, plan, *args)

    def shortcut(conn: Connection) -> None:
        direct.run_together(conn, steps)

    direct._execute = spy  # type: ignore[assignment]
    try:
        async with engine.begin() as conn:
            await conn.run_sync(shortcut)
    finally:
        direct._execute = execute  # type: ignore[assignment]
    return sent


def a_write(dialect: str, seq: int) -> list[tuple[Any, Any]]:
    """An API write's statements: a patient and a stay upserted, an event appended, the seq."""
    event = {"ward_code": "W01", "seq": seq, "at": "2030", "actor": "t", "type": "x", "payload": {"n": seq}}
    stay = {**STAY, "version": seq}
    return [
        (st.upsert_for(dialect, patients, PATIENT, "id"), PATIENT),
        (st.upsert_for(dialect, stays, stay, "id"), stay),
        (st.APPEND_EVENTS, event),
        (st.SET_WARD_SEQ, {"w_code": "W01", "w_seq": seq}),
    ]


async def test_writes_run_together_are_one_statement_on_postgresql_with_the_same_effect(
    writer: AsyncEngine,
) -> None:
    dialect = writer.dialect.name
    sent = await together(writer, a_write(dialect, 1))
    sent += await together(writer, a_write(dialect, 2))  # the stay and patient exist: updates
    if dialect == "postgresql":
        assert len(sent) == 2 and all(sql.startswith("WITH ") for sql in sent), sent
    else:
        assert len(sent) == 8
    async with writer.connect() as conn:
        stored = (await conn.execute(select(stays).where(stays.c.id == "s1"))).one()._mapping
        logged = (await conn.execute(select(events.c.seq, events.c.payload).order_by(events.c.seq))).all()
        seq = (await conn.execute(select(wards.c.seq).where(wards.c.code == "W01"))).scalar()
    assert {k: stored[k] for k in STAY} == {**STAY, "version": 2}
    assert [tuple(r) for r in logged] == [(1, {"n": 1}), (2, {"n": 2})]
    assert seq == 2


async def test_writes_run_together_fail_together(writer: AsyncEngine) -> None:
    """One step refused (the event's seq is taken): none of the others is applied, and the
    error is SQLAlchemy's, without the values."""
    dialect = writer.dialect.name
    await together(writer, a_write(dialect, 1))
    steps = a_write(dialect, 1)
    steps[1] = (steps[1][0], {**STAY, "version": 5, "consultant": "Dr Ada"})
    with pytest.raises(IntegrityError) as raised:
        await together(writer, steps)
    assert "Dr Ada" not in str(raised.value)
    async with writer.connect() as conn:
        version = (await conn.execute(select(stays.c.version).where(stays.c.id == "s1"))).scalar()
    assert version == 1


async def test_a_single_step_or_one_sqlalchemy_must_run_is_run_on_its_own(writer: AsyncEngine) -> None:
    expanding = (
        wards.update().where(wards.c.code.in_(bindparam("codes", expanding=True))).values(seq=bindparam("s"))
    )
    sent = await together(writer, [(st.SET_WARD_SEQ, {"w_code": "W01", "w_seq": 3})])
    assert len(sent) == 1 and not sent[0].startswith("WITH")
    # The expanding IN goes through SQLAlchemy (not seen here): the first step is run alone.
    await together(
        writer, [(st.SET_WARD_SEQ, {"w_code": "W01", "w_seq": 4}), (expanding, {"codes": ["W01"], "s": 7})]
    )
    async with writer.connect() as conn:
        assert (await conn.execute(select(wards.c.seq).where(wards.c.code == "W01"))).scalar() == 7


async def as_one(engine: AsyncEngine, steps: list[tuple[Any, Any]]) -> bool:
    """Run `steps` with run_as_one outside any transaction (autocommit on PostgreSQL)."""

    def shortcut(conn: Connection) -> bool:
        return direct.run_as_one(conn, steps)

    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            return await conn.run_sync(shortcut)
        async with conn.begin():
            return await conn.run_sync(shortcut)


async def stored_state(engine: AsyncEngine) -> tuple[int | None, list[int], int]:
    """(the stay's version, the events' seqs, the ward's seq)."""
    async with engine.connect() as conn:
        version = (await conn.execute(select(stays.c.version).where(stays.c.id == "s1"))).scalar()
        seqs = list((await conn.execute(select(events.c.seq).order_by(events.c.seq))).scalars())
        ward_seq = (await conn.execute(select(wards.c.seq).where(wards.c.code == "W01"))).scalar()
    return version, seqs, int(ward_seq or 0)


async def test_run_as_one_runs_nothing_unless_every_step_can_be_one_statement(writer: AsyncEngine) -> None:
    """Outside a transaction only one statement is atomic: where the steps cannot be one (a
    single step, one SQLAlchemy must run, or SQLite), nothing at all is run."""
    dialect = writer.dialect.name
    expanding = (
        wards.update().where(wards.c.code.in_(bindparam("codes", expanding=True))).values(seq=bindparam("s"))
    )
    assert not await as_one(writer, [(st.SET_WARD_SEQ, {"w_code": "W01", "w_seq": 3})])
    assert not await as_one(
        writer, [(st.SET_WARD_SEQ, {"w_code": "W01", "w_seq": 4}), (expanding, {"codes": ["W01"], "s": 7})]
    )
    assert await stored_state(writer) == (None, [], 0)
    assert await as_one(writer, a_write(dialect, 1)) is (dialect == "postgresql")
    assert await stored_state(writer) == ((1, [1], 1) if dialect == "postgresql" else (None, [], 0))


def a_write_at(dialect: str, seq: int, was: int, layout: int = 0) -> list[tuple[Any, Any]]:
    """`a_write`, its ward seq set only while the ward is at seq `was` and layout `layout`."""
    *steps, (_set, params) = a_write(dialect, seq)
    return [*steps, (st.SET_WARD_SEQ_IF_AT, {**params, "w_was": was, "w_layout": layout})]


@pytest.mark.postgres
async def test_a_write_set_at_a_seq_the_ward_has_left_applies_nothing(pg_database_url: str) -> None:
    async with engine_with_a_ward(pg_database_url) as engine:
        assert await as_one(engine, a_write_at("postgresql", 1, was=0))
        for was, layout in ((0, 0), (2, 0), (1, 1)):  # behind, ahead, another layout
            with pytest.raises(IntegrityError):
                await as_one(engine, a_write_at("postgresql", 2, was=was, layout=layout))
            assert await stored_state(engine) == (1, [1], 1)
        assert await as_one(engine, a_write_at("postgresql", 2, was=1))
        assert await stored_state(engine) == (2, [1, 2], 2)
