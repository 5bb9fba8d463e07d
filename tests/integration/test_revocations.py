"""Access that ends closes its sockets: the store's answer to "who is still allowed in", on the
embedded SQLite and on a real PostgreSQL.

Revoked tokens and displays, disabled users and sessions signed out, idled out or past their
absolute limit are all "gone"; everyone else is not, however many are asked about at once (the
names travel as one bound list). End to end, through the CLI and real sockets within 2 s:
tests/integration/test_ws.py and tests/integration/test_sessions.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from whiteboard.layout import load_layout, parse_layout
from whiteboard.store import accounts, migrate
from whiteboard.store.accounts import Principal, SessionLimits
from whiteboard.store.engine import open_engines
from whiteboard.store.tables import displays, sessions, users
from whiteboard.types import iso_z, now_z, utc_now

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
LIMITS = SessionLimits(idle=timedelta(minutes=15), absolute=timedelta(hours=12))
LAYOUT = {
    "sites": [
        {
            "code": "SJH",
            "name": "St James",
            "wards": [
                {
                    "code": w,
                    "name": w,
                    "specialty": "",
                    "beds": [{"code": f"{w}-B1-1", "bay": "B1", "kind": "bay"}],
                }
                for w in ("W01", "W02")
            ],
        }
    ]
}


@dataclass
class Store:
    writer: AsyncEngine
    reader: AsyncEngine


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/store.db"
    else:
        url = request.getfixturevalue("pg_database_url")
    writer, reader = open_engines(url)
    try:
        await migrate.upgrade(writer)
        await load_layout(writer, parse_layout(LAYOUT))
        yield Store(writer, reader)
    finally:
        await writer.dispose()
        if reader is not writer:
            await reader.dispose()


async def add_users(engine: AsyncEngine, *names: str) -> None:
    """Users straight into the table: their passwords are not under test (argon2 is slow)."""
    now = now_z()
    async with engine.begin() as conn:
        await conn.execute(
            insert(users),
            [{"username": n, "role": "nurse", "password_hash": "-", "created_at": now} for n in names],
        )


async def session_of(
    engine: AsyncEngine, username: str, *, idle_for: timedelta = timedelta(0), age: timedelta = timedelta(0)
) -> Principal:
    session_id = await accounts.start_session(engine, username)
    now = utc_now()
    async with engine.begin() as conn:
        await conn.execute(
            update(sessions)
            .where(sessions.c.id == session_id)
            .values(last_seen_at=iso_z(now - idle_for), created_at=iso_z(now - age))
        )
    return Principal("user", username, "nurse", session=session_id)


async def display_of(engine: AsyncEngine, ward: str = "W01") -> Principal:
    display_id, _code = await accounts.add_display(engine, ward, None)
    return Principal("display", display_id, "display", ward=ward)


async def everyone(store: Store) -> tuple[set[Principal], set[Principal]]:
    """(still allowed, no longer allowed): one principal for each way in, and each way out."""
    w = store.writer
    await accounts.create_token(w, "live-token", "nurse")
    await accounts.create_token(w, "revoked-token", "viewer")
    await accounts.revoke_token(w, "revoked-token")
    await add_users(w, "ann", "bo", "cy", "di", "ed")
    live_display, revoked_display = await display_of(w), await display_of(w, "W02")
    await accounts.revoke_display(w, revoked_display.name)
    ann = await session_of(w, "ann", idle_for=timedelta(minutes=14), age=timedelta(hours=11))
    ann_signed_out = await session_of(w, "ann")
    await accounts.end_session(w, ann_signed_out.session or "")
    bo_idle = await session_of(w, "bo", idle_for=timedelta(minutes=16))
    cy_too_old = await session_of(w, "cy", age=timedelta(hours=13))
    di = await session_of(w, "di")
    await accounts.disable_user(w, "di")
    ed_session = await session_of(w, "ed")
    async with w.begin() as conn:  # disabled without its sessions ended: the user row alone counts
        await conn.execute(update(users).where(users.c.username == "ed").values(enabled=False))
    allowed = {Principal("token", "live-token", "nurse"), live_display, ann}
    gone = {
        Principal("token", "revoked-token", "viewer"),
        Principal("token", "never-made", "nurse"),
        revoked_display,
        Principal("display", "dnope", "display", ward="W01"),
        ann_signed_out,
        bo_idle,
        cy_too_old,
        di,
        ed_session,
        Principal("user", "ann", "nurse", session="no-such-session"),
        Principal("user", "nobody", "nurse", session=ann.session),  # a live session, an unknown user
    }
    return allowed, gone


async def test_revoked_names_every_way_out_and_nobody_still_allowed(store: Store) -> None:
    allowed, gone = await everyone(store)
    assert await accounts.revoked(store.reader, [*allowed, *gone], LIMITS) == gone
    assert await accounts.revoked(store.reader, list(allowed), LIMITS) == set()
    assert await accounts.revoked(store.reader, [], LIMITS) == set()


async def test_revoked_answers_for_many_principals_at_once(store: Store) -> None:
    """Every display of a big trust at once, as one bound list (an IN list was a parameter each)."""
    now = now_z()
    ids = [f"d{i:05d}" for i in range(1500)]
    async with store.writer.begin() as conn:
        await conn.execute(
            insert(displays),
            [
                {
                    "id": d,
                    "ward_code": "W01",
                    "name": d,
                    "created_at": now,
                    "revoked_at": now if i % 3 == 0 else None,
                }
                for i, d in enumerate(ids)
            ],
        )
    principals = [Principal("display", d, "display", ward="W01") for d in ids]
    gone = await accounts.revoked(store.reader, principals, LIMITS)
    assert gone == {p for i, p in enumerate(principals) if i % 3 == 0}
    # The same statement with another number of names gives the right answer too.
    assert await accounts.revoked(store.reader, principals[:7], LIMITS) == {
        principals[0],
        principals[3],
        principals[6],
    }
