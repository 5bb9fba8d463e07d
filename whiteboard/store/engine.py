"""Opening the store: engines per process, tuned per dialect.

SQLite (the embedded default) runs in WAL mode and every write transaction starts with
BEGIN IMMEDIATE, so two writers queue for the lock instead of failing half-way through.
PostgreSQL serialises writers per ward with SELECT … FOR UPDATE on the ward rows instead.
SQL parameters are kept out of error messages: they are patient data, and errors get logged.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import orjson
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util.concurrency import greenlet_spawn


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


#: JSON columns (event payloads, stays' alerts and discharge) written and read with orjson:
#: the standard library's json was a tenth of the CPU of every write.
JSON_CODEC: dict[str, Any] = {"json_serializer": _json_text, "json_deserializer": orjson.loads}
#: What every engine is opened with; parameters never appear in errors.
ENGINE_OPTIONS: dict[str, Any] = {"hide_parameters": True, **JSON_CODEC}


def open_engines(url: str, *, connections: int = 20) -> tuple[AsyncEngine, AsyncEngine]:
    """The engine writes go through and the one reads go through (the same one on PostgreSQL).

    SQLite readers in WAL mode never wait for a writer, but only if their transactions are not
    started with BEGIN IMMEDIATE, hence a second engine for them.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        writer = create_async_engine(url, connect_args={"timeout": 30}, **ENGINE_OPTIONS)
        reader = create_async_engine(url, connect_args={"timeout": 30}, **ENGINE_OPTIONS)
        _tune_sqlite(writer.sync_engine, "BEGIN IMMEDIATE")
        _tune_sqlite(reader.sync_engine, "BEGIN")
        return writer, reader
    # At most `connections` to PostgreSQL, all kept once opened: with "overflow" connections a
    # burst past the pool's size opened and closed a connection (TLS offer, start-up, type
    # set-up) for every request beyond it: 8 % of the CPU of a profiled burst. Last in, first out, so
    # after a burst the connections in use stay few and the rest stay idle.
    engine = create_async_engine(
        url, pool_size=connections, max_overflow=0, pool_use_lifo=True, **ENGINE_OPTIONS
    )
    ping_when_in_doubt(engine.sync_engine)
    return engine, engine


#: A pooled connection idle at least this long is pinged before it is used again.
IDLE_PING_SECONDS = 1.0


def ping_when_in_doubt(engine: Engine, idle_seconds: float = IDLE_PING_SECONDS) -> None:
    """Ping a pooled connection before use only when there is reason to doubt it.

    SQLAlchemy's `pool_pre_ping` pings on every checkout, and asyncpg's ping is three round
    trips (BEGIN, an empty query, ROLLBACK): six of an API write's fifteen, and three quarters
    of PostgreSQL's CPU for it. A connection handed back a moment ago is as alive as one that
    just answered, so only these are pinged: one idle for `idle_seconds` or more (a database
    restart, an idle timeout or a dropped route shows up here), and one checked in before any
    connection of the pool was found dead. A failed ping invalidates the whole pool, as
    pre-ping does, and the checkout goes on with a fresh connection. What is left, a connection
    that died within the last second unseen, fails its first statement as it would have failed
    just after a pre-ping; the hot paths (the token lookup, the write transaction) retry once
    on a lost connection before anything was committed (`retry_when_lost`).
    """
    last_lost = [0.0]  # monotonic time a connection of this pool was last invalidated

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "invalidate")
    def _invalidate(_dbapi_connection: Any, _record: Any, _exception: Any) -> None:
        last_lost[0] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None:  # a new connection: just opened
            return
        if time.monotonic() - idle_since < idle_seconds and idle_since > last_lost[0]:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.InvalidatePoolError(f"a pooled connection failed its ping: {error!r}") from error


def lost_connection(error: BaseException) -> bool:
    """True for a statement that failed because its connection was found dead (and has been
    invalidated): the database restarted or dropped it. Nothing it began was committed."""
    return isinstance(error, exc.DBAPIError) and error.connection_invalidated


class NotApplied(Exception):
    """A statement sent straight to the driver (`execute_on_driver`) that did not apply: the
    database refused it (`lost` False: nothing of it was applied), or the connection was lost on
    the way (`lost` True: whether it was applied nobody knows)."""

    def __init__(self, cause: BaseException, *, lost: bool) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.lost = lost


async def execute_on_driver(engine: AsyncEngine, sql: str, values: tuple[Any, ...]) -> None:
    """Run one PostgreSQL statement, outside any transaction, on the asyncpg driver of a
    pooled connection: the pool still checks the connection out (pinging it when in doubt) and
    back in, but nothing of SQLAlchemy's per-execution machinery runs.

    For the write path's one-statement writes (`Repository._write_at_once`), which carry their
    own safety in the statement. Through an AsyncConnection (AUTOCOMMIT, a greenlet, the
    adapted cursor) the same statement took ~510 µs of this process's CPU; this way ~230 µs,
    against ~120 µs for asyncpg on a connection of its own (docs/benchmarks.md, "How the
    targets stand"), which is what `held.HeldConnections` spends.

    Raises NotApplied when the statement did not apply; a connection that was lost, or is in
    doubt after an error or a cancellation, is invalidated rather than handed back.
    """
    fairy = await engine.raw_connection()
    driver = fairy.driver_connection
    assert driver is not None  # checked out, so open
    try:
        await driver.execute(sql, *values)
    except BaseException as error:
        refused = refused_by_database(error, driver)
        if refused:
            await greenlet_spawn(fairy.close)
        else:
            await greenlet_spawn(fairy.invalidate, error)
        if isinstance(error, Exception):
            raise NotApplied(error, lost=not refused) from error
        raise
    await greenlet_spawn(fairy.close)


def refused_by_database(error: BaseException, driver: Any) -> bool:
    """The database said no to a statement (a constraint, say) and its connection is as good as
    before; anything else leaves the connection lost or in doubt."""
    return isinstance(error, asyncpg.PostgresError) and not driver.is_closed()


def sync_sqlite_writer(async_writer: AsyncEngine) -> Engine:
    """A plain (pysqlite) engine on the same SQLite file, for writes run whole in one thread.

    Going through aiosqlite costs a thread hop per cursor call — dozens per command. The write
    path instead runs each transaction start to finish in one worker thread: one hop.
    """
    url = async_writer.url.set(drivername="sqlite+pysqlite")
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **ENGINE_OPTIONS)
    _tune_sqlite(engine, "BEGIN IMMEDIATE")
    return engine


def _tune_sqlite(engine: Engine, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)


async def outside_transaction(conn: AsyncConnection) -> AsyncConnection:
    """`conn` for a read of one statement: on PostgreSQL outside any transaction (autocommit),
    which spares a BEGIN and a ROLLBACK round trip on every authenticated request. SQLite's
    connections are left as they are: we begin their transactions ourselves (`_tune_sqlite`),
    and SQLAlchemy's AUTOCOMMIT there would hand that back to the driver."""
    if conn.dialect.name == "sqlite":
        return conn
    return await conn.execution_options(isolation_level="AUTOCOMMIT")


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"
