"""Connections held out of the pool for one-statement writes (`whiteboard.store.held`).

They save the pool's check-out and check-in on every write, and must lose none of what the
pool does: a connection idle or in doubt is pinged before its next use, one lost or under a
cancelled statement is never reused, nothing waits for a held one, and disposing of the engine
or shutting down leaves none open.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.test_pg_connections import count_pings
from tests.services import psql
from whiteboard.store.engine import IDLE_PING_SECONDS, NotApplied, open_engines
from whiteboard.store.held import HeldConnections

pytestmark = pytest.mark.postgres

BACKEND = "SELECT pg_backend_pid() WHERE $1::int = 1"  # a statement with a value, as writes are


@pytest.fixture
async def engine(pg_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine, _reader = open_engines(pg_database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


def backends(pg_database_url: str) -> set[int]:
    """This database's server processes other than psql's own."""
    out = psql(
        pg_database_url,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    ).stdout
    return {int(line) for line in out.split()}


async def held_backend(held: HeldConnections) -> int:
    """The server process behind the held connection `send` would use next."""
    assert held._free, "no connection is held"
    return int(await held._free[-1].driver.fetchval("SELECT pg_backend_pid()"))


async def test_statements_in_a_row_use_one_held_connection_and_the_pool_lends_it_once(
    engine: AsyncEngine,
) -> None:
    held = HeldConnections(engine, size=2)
    for _ in range(20):
        await held.send(BACKEND, (1,))
    assert held.held == 1
    assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]  # held, not handed back
    await held.close()
    assert held.held == 0
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_held_connection_left_idle_is_handed_back_and_pinged_before_its_next_use(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldConnections(engine, size=2)
    pings = count_pings(engine, monkeypatch)
    await held.send(BACKEND, (1,))
    await held.send(BACKEND, (1,))
    assert pings == []  # in steady use: never pinged
    await asyncio.sleep(IDLE_PING_SECONDS + 0.2)
    await held.send(BACKEND, (1,))
    assert pings == [1]  # idle a while: back to the pool, which pinged it on the way out again
    await held.send(BACKEND, (1,))
    assert pings == [1]
    await held.close()


async def test_a_refused_statement_keeps_its_held_connection(engine: AsyncEngine) -> None:
    held = HeldConnections(engine, size=1)
    await held.send(BACKEND, (1,))
    backend = await held_backend(held)
    with pytest.raises(NotApplied) as refused:
        await held.send("SELECT 1 / $1::int", (0,))
    assert refused.value.lost is False
    assert await held_backend(held) == backend
    await held.close()


async def test_a_lost_held_connection_is_dropped_and_the_next_statement_finds_a_live_one(
    engine: AsyncEngine, pg_database_url: str
) -> None:
    held = HeldConnections(engine, size=1)
    await held.send(BACKEND, (1,))
    backend = await held_backend(held)
    psql(pg_database_url, f"SELECT pg_terminate_backend({backend})")
    await asyncio.sleep(0.1)
    with pytest.raises(NotApplied) as lost:
        await held.send(BACKEND, (1,))
    assert lost.value.lost is True
    assert held.held == 0
    await held.send(BACKEND, (1,))  # the pool found the dead one's siblings in doubt: pinged, fine
    assert await held_backend(held) != backend
    await held.close()


async def test_a_cancelled_statement_never_leaves_its_connection_held(engine: AsyncEngine) -> None:
    held = HeldConnections(engine, size=1)
    await held.send(BACKEND, (1,))
    backend = await held_backend(held)
    sleeping = asyncio.create_task(held.send("SELECT pg_sleep($1)", (5.0,)))
    await asyncio.sleep(0.3)
    sleeping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeping
    assert held.held == 0
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    await held.send(BACKEND, (1,))
    assert await held_backend(held) != backend
    await held.close()


async def test_with_every_held_connection_busy_a_statement_goes_through_the_pool_without_waiting(
    engine: AsyncEngine,
) -> None:
    held = HeldConnections(engine, size=1)
    started = asyncio.get_running_loop().time()
    await asyncio.gather(*(held.send("SELECT pg_sleep($1)", (0.5,)) for _ in range(3)))
    assert asyncio.get_running_loop().time() - started < 1.4  # side by side, not one after another
    assert held.held == 1
    assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]  # the others went back
    await held.close()


async def test_disposing_of_the_engine_closes_the_held_connections(
    pg_database_url: str,
) -> None:
    engine, _reader = open_engines(pg_database_url)
    held = HeldConnections(engine, size=2)
    await held.send(BACKEND, (1,))
    backend = await held_backend(held)
    await engine.dispose()
    assert held.held == 0
    await asyncio.sleep(0.2)
    assert backend not in backends(pg_database_url)
    await held.send(BACKEND, (1,))  # the engine is usable after dispose(), and so are these
    await held.close()
    await engine.dispose()


async def test_a_connection_in_use_when_the_engine_is_disposed_of_is_closed_when_it_comes_back(
    pg_database_url: str,
) -> None:
    engine, _reader = open_engines(pg_database_url)
    held = HeldConnections(engine, size=1)
    await held.send(BACKEND, (1,))
    backend = await held_backend(held)
    sleeping = asyncio.create_task(held.send("SELECT pg_sleep($1)", (0.5,)))
    await asyncio.sleep(0.2)
    await engine.dispose()
    await sleeping
    assert held.held == 0
    await asyncio.sleep(0.2)
    assert backend not in backends(pg_database_url)
    await engine.dispose()
