"""PostgreSQL connections: pinged only when in doubt, a lost one never fails a request, and an
API write makes few round trips.

The pool does not ping every connection it hands out (asyncpg's ping is three round trips, and
an API write used to check out two connections). These tests hold what pre-ping gave: after a
database restart, or with every pooled connection killed under the server, the next token
lookup and the next write succeed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.test_store import NURSE, hospital_layout
from tests.services import PostgresCluster, psql
from whiteboard.errors import StaleVersion
from whiteboard.fanout.memory import MemoryBroker
from whiteboard.layout import load_layout, parse_layout
from whiteboard.service import BoardService, PatientDetails
from whiteboard.store import accounts, migrate
from whiteboard.store.engine import IDLE_PING_SECONDS, NotApplied, execute_on_driver, open_engines
from whiteboard.store.repository import Repository

pytestmark = pytest.mark.postgres


@dataclass
class Server:
    """What a server process holds: one engine, the repository, the service, a token."""

    engine: AsyncEngine
    service: BoardService
    token: str
    pings: list[int]

    async def write(self, bed: str) -> int:
        """Flip `bed` between available and reserved; its new version."""
        board = await self.service.repo.board("W01")
        current = next(b for b in board.beds if b.code == bed)
        new = "reserved" if current.state == "available" else "available"
        outcome = await self.service.update_bed(NURSE, bed, current.version, new)
        assert outcome.bed is not None
        return outcome.bed.version

    async def lookup(self) -> str:
        principal = await accounts.token_principal(self.engine, self.token)
        assert principal is not None
        return principal.name


async def open_server(url: str, monkeypatch: pytest.MonkeyPatch) -> Server:
    engine, _reader = open_engines(url)
    await migrate.upgrade(engine)
    await load_layout(engine, parse_layout(hospital_layout()))
    return await open_server_on(url, monkeypatch, engine)


async def open_server_on(
    url: str, monkeypatch: pytest.MonkeyPatch, engine: AsyncEngine | None = None, name: str = "ward-robot"
) -> Server:
    """A process on a database with its layout loaded, and a token of its own called `name`."""
    engine = engine or open_engines(url)[0]
    token = await accounts.create_token(engine, name, "nurse")
    pings = count_pings(engine, monkeypatch)
    return Server(engine, BoardService(Repository(engine, verify_cache=True), MemoryBroker()), token, pings)


def count_pings(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that gets a 1 for every ping `engine`'s pool sends from now on."""
    pings: list[int] = []
    ping = engine.dialect.do_ping

    def counting_ping(dbapi_connection: Any) -> bool:
        pings.append(1)
        return ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counting_ping)
    return pings


async def busy(server: Server, n: int = 6) -> None:
    """Token lookups and writes at once, so the pool holds several connections."""
    beds = [f"W01-B1-{i}" for i in range(1, n + 1)]
    await asyncio.gather(*(server.lookup() for _ in range(n)), *(server.write(b) for b in beds))


@pytest.fixture
async def server(pg_database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    s = await open_server(pg_database_url, monkeypatch)
    try:
        yield s
    finally:
        await s.engine.dispose()


async def test_connections_in_steady_use_are_not_pinged_and_idle_ones_are(server: Server) -> None:
    await busy(server)
    for _ in range(20):
        await server.lookup()
        await server.write("W01-B1-1")
    assert server.pings == []
    await asyncio.sleep(IDLE_PING_SECONDS + 0.2)
    await server.lookup()
    assert server.pings == [1]  # idle for a while: pinged once, then in use again
    await server.lookup()
    assert server.pings == [1]


async def test_every_pooled_connection_killed_fails_no_request(server: Server, pg_database_url: str) -> None:
    await busy(server)
    killed = psql(
        pg_database_url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    ).stdout.strip()
    assert int(killed) >= 2
    await asyncio.sleep(0.1)  # the drivers see their sockets close
    # At once (well within the idle time, so nothing is pinged for being idle): no errors.
    assert await server.lookup() == "ward-robot"
    await server.write("W01-B1-1")
    await busy(server)


async def test_lookups_and_writes_work_at_once_after_a_database_restart(
    private_postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = await open_server(private_postgres.url, monkeypatch)
    try:
        await busy(s)
        version = await s.write("W01-B1-7")
        psql(private_postgres.url, "CHECKPOINT")  # its commits are asynchronous; stop is immediate
        await asyncio.to_thread(private_postgres.stop)
        assert await asyncio.to_thread(private_postgres.start, private_postgres.port)
        assert await s.lookup() == "ward-robot"
        assert await s.write("W01-B1-7") == version + 1
        await busy(s)
    finally:
        await s.engine.dispose()


async def test_a_write_lost_before_its_commit_runs_once_more_and_once_only(
    server: Server, monkeypatch: pytest.MonkeyPatch, pg_database_url: str
) -> None:
    """The connection dies mid-transaction (after the ward lock): the write is run again on a
    fresh connection and applied once; a second loss is raised, not retried forever."""
    repo = server.service.repo
    locked_path_only(repo, monkeypatch)
    attempt = repo._attempt
    calls: list[int] = []

    def dying_attempt(conn: Any, job: Any) -> Any:
        calls.append(1)
        if len(calls) <= kills:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            psql(pg_database_url, f"SELECT pg_terminate_backend({int(pid)})")
            conn.execute(text("SELECT 1"))  # fails: the connection is gone
        return attempt(conn, job)

    monkeypatch.setattr(repo, "_attempt", dying_attempt)
    kills = 1
    version = await server.write("W01-B1-2")
    assert len(calls) == 2
    board = await repo.board("W01")
    assert next(b for b in board.beds if b.code == "W01-B1-2").version == version == 2
    assert board.seq == 1  # one event, not two

    calls.clear()
    kills = 2
    with pytest.raises(Exception, match=r"(?i)connection|closed|terminat"):
        await server.write("W01-B1-2")
    assert len(calls) == 2
    with pytest.raises(StaleVersion):  # nothing of it was applied: version 2 is still current
        await server.service.update_bed(NURSE, "W01-B1-2", 1, "closed")


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every round trip the asyncpg driver makes from now on: BEGIN, each statement, COMMIT,
    through SQLAlchemy's adapter or sent to the driver itself (`engine.execute_on_driver`)."""
    import asyncpg
    from sqlalchemy.dialects.postgresql import asyncpg as adapter

    seen: list[str] = []
    cursor, connection = adapter.AsyncAdapt_asyncpg_cursor, adapter.AsyncAdapt_asyncpg_connection
    execute, many, begin, end = (
        cursor._prepare_and_execute,
        cursor._executemany,
        connection._start_transaction,
        connection._call_and_discard,
    )

    async def spy_execute(self: Any, operation: str, parameters: Any) -> Any:
        try:
            return await execute(self, operation, parameters)  # BEGIN, if any, first
        finally:
            seen.append(operation.split()[0] + (" FOR UPDATE" if "FOR UPDATE" in operation else ""))

    async def spy_many(self: Any, operation: str, parameters: Any) -> Any:
        try:
            return await many(self, operation, parameters)
        finally:
            seen.append(operation.split()[0] + " (many)")

    async def spy_begin(self: Any) -> Any:
        if self.isolation_level != "autocommit":
            seen.append("BEGIN")
        return await begin(self)

    async def spy_end(self: Any, fn: Any) -> Any:
        seen.append(fn.__name__.upper())
        return await end(self, fn)

    driver_execute = asyncpg.Connection.execute

    async def spy_driver(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await driver_execute(self, query, *args, **kwargs)
        finally:
            if args:  # (without, it is the adapter's own BEGIN or COMMIT, counted above)
                seen.append(query.split()[0] + " (driver)")

    monkeypatch.setattr(asyncpg.Connection, "execute", spy_driver)
    monkeypatch.setattr(cursor, "_prepare_and_execute", spy_execute)
    monkeypatch.setattr(cursor, "_executemany", spy_many)
    monkeypatch.setattr(connection, "_start_transaction", spy_begin)
    monkeypatch.setattr(connection, "_call_and_discard", spy_end)
    return seen


async def test_an_api_write_takes_one_round_trip_and_four_or_five_when_the_ward_moved_on(
    server: Server, round_trips: list[str], pg_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bed or stay edit on a ward this process wrote last: one statement, outside any
    transaction, writing the row, the event and the ward's seq (`Repository._write_at_once`).
    On a ward another process has written since: that statement fails, then the locked path —
    bed: BEGIN, lock the ward, one statement, COMMIT; stay: the same and its ward read under the
    lock. The token lookup is one more, outside any transaction."""
    server.service.repo.verify_cache = False  # (tests check each cached board with a fresh read)
    await server.write("W01-B1-3")  # the bed's ward is read once per process, then known
    admitted = await server.service.admit(
        NURSE, "W01-B1-4", PatientDetails("RX9", "Ada", "Lovelace", None, "female")
    )
    assert admitted.stay is not None
    stay = admitted.stay.id

    round_trips.clear()
    await server.lookup()
    assert round_trips == ["SELECT"]

    board = await server.service.repo.board("W01")  # not counted below
    bed = next(b for b in board.beds if b.code == "W01-B1-3")
    round_trips.clear()
    await server.service.update_bed(NURSE, "W01-B1-3", bed.version, "closed")
    assert round_trips == ["WITH (driver)"]
    round_trips.clear()
    await server.service.update_stay(NURSE, stay, 1, {"news2": 4})
    assert round_trips == ["WITH (driver)"]

    other = await open_server_on(pg_database_url, monkeypatch, name="other-robot")
    try:
        await other.write("W01-B1-5")
    finally:
        await other.engine.dispose()
    round_trips.clear()
    await server.service.update_bed(NURSE, "W01-B1-3", bed.version + 1, "available")
    assert round_trips[:3] == ["WITH (driver)", "BEGIN", "SELECT FOR UPDATE"]  # then the board is read
    assert round_trips[-2:] == ["WITH", "COMMIT"]
    round_trips.clear()
    server.service.repo._stay_wards.clear()  # a stay this process has not seen: no guess
    await server.service.update_stay(NURSE, stay, 2, {"news2": 5})
    assert round_trips == ["BEGIN", "SELECT", "SELECT FOR UPDATE", "SELECT", "WITH", "COMMIT"]


async def test_a_stay_moved_by_another_process_is_found_on_its_new_ward(
    server: Server, pg_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This process last saw the stay on W01; another moved it to W02: the edit locks W01,
    finds the stay gone from it, and runs again on W02 — never edits under the wrong lock."""
    admitted = await server.service.admit(NURSE, "W01-B1-5", PatientDetails("RX8", "Bo", "Lee", None, "male"))
    assert admitted.stay is not None
    stay = admitted.stay.id
    other = await open_server_on(pg_database_url, monkeypatch, name="other-robot")
    try:
        await other.service.transfer(NURSE, stay, "W02-B1-1")
    finally:
        await other.engine.dispose()
    assert server.service.repo.stay_ward_guess(stay) == "W01"
    outcome = await server.service.update_stay(NURSE, stay, 2, {"news2": 6})
    assert outcome.events[0].ward == "W02"
    assert server.service.repo.stay_ward_guess(stay) == "W02"
    board = await server.service.repo.board("W02")
    assert next(b for b in board.beds if b.code == "W02-B1-1").stay.news2 == 6  # type: ignore[union-attr]


def locked_path_only(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write through the locked transaction, as if no one-statement write ever applied."""

    async def never(*_args: Any) -> None:
        return None

    monkeypatch.setattr(repo, "_write_at_once", never)


def transactions_at_once(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many writes (locked transactions or one-statement writes) were under way at once,
    at the start of each. A one-statement write holds its turn 50 ms first: on a quick
    database each could otherwise be done before the next began, and writes free to run side
    by side would not be seen to."""
    seen: list[int] = []
    inside = [0]
    attempt, at_once = repo._attempt, repo._write_at_once

    def counted(conn: Any, job: Any) -> Any:
        inside[0] += 1
        seen.append(inside[0])
        try:
            return attempt(conn, job)
        finally:
            inside[0] -= 1

    async def counted_at_once(*args: Any) -> Any:
        inside[0] += 1
        seen.append(inside[0])
        try:
            await asyncio.sleep(0.05)
            return await at_once(*args)
        finally:
            inside[0] -= 1

    monkeypatch.setattr(repo, "_attempt", counted)
    monkeypatch.setattr(repo, "_write_at_once", counted_at_once)
    return seen


async def flip(server: Server, ward: str, bed: str) -> None:
    board = await server.service.repo.board(ward)
    current = next(b for b in board.beds if b.code == bed)
    new = "reserved" if current.state == "available" else "available"
    await server.service.update_bed(NURSE, bed, current.version, new)


async def test_writes_to_one_ward_take_turns_in_the_process_without_holding_connections(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting on the ward's row lock, each held a pooled connection; now they wait their turn
    in the process first. Writes to other wards still run side by side."""
    w01 = [f"W01-B1-{i}" for i in range(1, 7)]
    w02 = [f"W02-B1-{i}" for i in range(1, 5)]
    for bed in w01 + w02:  # the process learns which ward each bed is on
        await flip(server, bed[:3], bed)
    seen = transactions_at_once(server.service.repo, monkeypatch)
    await asyncio.gather(*(flip(server, "W01", bed) for bed in w01))
    assert seen == [1] * len(w01)
    seen.clear()
    await asyncio.gather(*(flip(server, bed[:3], bed) for bed in w01 + w02))
    assert max(seen) == 2  # one write of each ward at a time, the two wards side by side
    board = await server.service.repo.board("W01")
    assert [b.version for b in board.beds if b.code in w01] == [4] * len(w01)  # none lost


async def backend_of_next_connection(engine: AsyncEngine) -> int:
    """The server process behind the connection the pool hands out next (it is last in, first
    out, so the one just handed back)."""
    async with engine.connect() as conn:
        return int((await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one())


async def test_a_statement_the_database_refuses_leaves_its_connection_in_the_pool(server: Server) -> None:
    engine = server.engine
    backend = await backend_of_next_connection(engine)
    with pytest.raises(NotApplied) as refused:
        await execute_on_driver(engine, "UPDATE wards SET seq = NULL WHERE code = $1", ("W01",))
    assert refused.value.lost is False
    assert (await server.service.repo.board("W01")).seq == 0  # nothing of it applied
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await backend_of_next_connection(engine) == backend  # handed back, and used again


async def test_a_connection_lost_under_a_statement_is_not_handed_back(
    server: Server, pg_database_url: str
) -> None:
    engine = server.engine
    backend = await backend_of_next_connection(engine)
    psql(pg_database_url, f"SELECT pg_terminate_backend({backend})")
    await asyncio.sleep(0.1)
    with pytest.raises(NotApplied) as lost:
        await execute_on_driver(engine, "UPDATE wards SET seq = seq WHERE code = $1", ("W01",))
    assert lost.value.lost is True
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await backend_of_next_connection(engine) != backend
    await server.write("W01-B1-1")  # and writes go on


async def test_a_statement_cancelled_on_the_way_does_not_hand_its_connection_back(server: Server) -> None:
    """A request cancelled mid-statement leaves the connection in doubt: it is closed, so no
    later statement can find it still busy or inside what the cancelled one left."""
    engine = server.engine
    backend = await backend_of_next_connection(engine)
    sleeping = asyncio.create_task(execute_on_driver(engine, "SELECT pg_sleep($1)", (5.0,)))
    await asyncio.sleep(0.3)
    sleeping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeping
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await backend_of_next_connection(engine) != backend
    await server.write("W01-B1-1")
