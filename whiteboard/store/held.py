"""A few PostgreSQL connections held out of the pool for the one-statement writes.

`engine.execute_on_driver` checks a connection out of SQLAlchemy's pool for each statement
and back in afterwards: pool events, the reset on return and two greenlet hops, ~110 µs of
the ~230 µs of CPU a statement cost, where asyncpg itself takes ~120. In a burst the same few
connections go out and back hundreds of times a second, so `HeldConnections` keeps them out
between statements and sends straight on their drivers.

The pool's rules still hold for them. A held connection unused for the pool's idle time, or
held while the pool lost a connection, is handed back to the pool with its idle time kept,
so the pool pings it before anyone uses it again (`engine.ping_when_in_doubt`). One lost, in
doubt after an error, or under a cancelled statement is invalidated, never reused. Disposing
of the engine invalidates the held ones. When all are busy, a statement goes through the pool
as before: nothing ever waits for a held connection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util.concurrency import greenlet_spawn

from whiteboard.store.engine import IDLE_PING_SECONDS, NotApplied, execute_on_driver, refused_by_database


@dataclass(slots=True)
class _Held:
    fairy: Any  # SQLAlchemy's checked-out connection (PoolProxiedConnection)
    driver: Any  # its asyncpg connection
    pool: Any  # the pool it came from (the engine's until the engine is disposed of)
    generation: int  # `HeldConnections.close` calls before it was checked out
    last_used: float


class HeldConnections:
    """Up to `size` connections of `engine`'s pool, kept checked out for `send`."""

    def __init__(self, engine: AsyncEngine, size: int, idle_seconds: float = IDLE_PING_SECONDS) -> None:
        self.engine = engine
        self.size = size
        self.idle_seconds = idle_seconds
        self._free: list[_Held] = []  # last used last: the busiest stay busy, the rest go idle
        self._count = 0  # held, free or in use (and being checked out)
        self._generation = 0
        event.listen(engine.sync_engine, "invalidate", self._doubt)
        event.listen(engine.sync_engine, "engine_disposed", self._disposed)

    @property
    def held(self) -> int:
        return self._count

    async def send(self, sql: str, values: tuple[Any, ...]) -> None:
        """`execute_on_driver`, on a held connection when one is free or may be taken."""
        held = await self._take()
        if held is None:
            await execute_on_driver(self.engine, sql, values)
            return
        try:
            await held.driver.execute(sql, *values)
        except BaseException as error:
            refused = refused_by_database(error, held.driver)
            if refused:
                await self._put_back(held)
            else:
                await self._drop(held, error)
            if isinstance(error, Exception):
                raise NotApplied(error, lost=not refused) from error
            raise
        await self._put_back(held)

    async def close(self) -> None:
        """Hand every free held connection back to the pool (one in use goes when it is done)."""
        self._generation += 1
        while self._free:
            await self._hand_back(self._free.pop())

    async def _take(self) -> _Held | None:
        now = time.monotonic()
        while self._free:
            held = self._free.pop()
            if now - held.last_used < self.idle_seconds:
                return held
            await self._hand_back(held)  # idle a while: the pool pings it before its next use
        if self._count >= self.size:
            return None
        self._count += 1
        try:
            fairy = await self.engine.raw_connection()
        except BaseException:
            self._count -= 1
            raise
        return _Held(fairy, fairy.driver_connection, self.engine.sync_engine.pool, self._generation, now)

    async def _put_back(self, held: _Held) -> None:
        if held.pool is not self.engine.sync_engine.pool:  # disposed of while it was in use
            await self._drop(held, None)
            return
        if held.generation != self._generation:  # closed while it was in use
            await self._hand_back(held)
            return
        held.last_used = time.monotonic()
        self._free.append(held)

    async def _hand_back(self, held: _Held) -> None:
        """Check `held` back into its pool, as idle since it was last used."""
        self._count -= 1
        info = held.fairy.info
        await greenlet_spawn(held.fairy.close)
        info["idle_since"] = held.last_used  # read by ping_when_in_doubt's check-out

    async def _drop(self, held: _Held, error: BaseException | None) -> None:
        self._count -= 1
        await greenlet_spawn(held.fairy.invalidate, error)

    def _doubt(self, *_args: Any) -> None:
        """The pool found a connection dead: ping the held ones too before they are used."""
        for held in self._free:
            held.last_used = float("-inf")

    def _disposed(self, *_args: Any) -> None:
        # Runs inside AsyncEngine.dispose's greenlet, once the old pool's idle connections are
        # closed; ones in use are closed as they come back (`_put_back`).
        while self._free:
            held = self._free.pop()
            self._count -= 1
            held.fairy.invalidate()
