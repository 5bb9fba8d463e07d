"""Access that ends closes its sockets: the store's answer to "who is still allowed in", and the
hub's once-a-second check built on it, on the embedded SQLite and on a real PostgreSQL.

Revoked tokens and displays, disabled users and sessions signed out, idled out or past their
absolute limit are all "gone"; everyone else is not, however many are asked about at once (the
names travel as one bound list). The hub keeps who has sockets open as sockets join and leave,
closes (1008) every socket of a principal found gone, and asks the store nothing when it holds
no sockets. End to end, through the CLI and real sockets within 2 s:
tests/integration/test_ws.py and tests/integration/test_sessions.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from whiteboard.fanout.hub import CLOSE_POLICY, Client, Hub
from whiteboard.fanout.memory import MemoryBroker
from whiteboard.layout import load_layout, parse_layout
from whiteboard.store import accounts, migrate
from whiteboard.store.accounts import Principal, SessionLimits
from whiteboard.store.engine import open_engines
from whiteboard.store.repository import Repository
from whiteboard.store.tables import displays, sessions, users
from whiteboard.types import iso_z, now_z, utc_now

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


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    writer, reader = open_engines(database_url)
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


class Screen:
    async def send_text(self, data: str) -> None:
        pass

    def write_now(self, frame: bytes) -> bool:
        return True

    async def close(self, code: int, reason: str = "") -> None:
        pass


async def join(hub: Hub, principal: Principal, ward: str = "W01") -> Client:
    view = "display" if principal.kind == "display" else "clinical"
    client = hub.new_client(ward, view, Screen(), principal)
    await hub.join(client)
    return client


def checkouts(engine: AsyncEngine) -> list[int]:
    """Counts the connections taken from `engine`'s pool: every read of the store takes one."""
    taken: list[int] = []

    def on_checkout(*_args: Any) -> None:
        taken.append(1)

    event.listen(engine.sync_engine, "checkout", on_checkout)
    return taken


async def test_the_hub_closes_every_socket_of_a_principal_found_gone_and_no_other(store: Store) -> None:
    allowed, gone = await everyone(store)
    hub = Hub(Repository(store.writer, store.reader), MemoryBroker(), session_limits=LIMITS)
    try:
        # Each principal twice, on two wards: both of its sockets close, or neither.
        sockets = {p: [await join(hub, p, "W01"), await join(hub, p, "W02")] for p in [*allowed, *gone]}
        await hub._end_revoked()
        for principal, clients in sockets.items():
            for client in clients:
                if principal in gone:
                    assert client.ended and client.close_code == CLOSE_POLICY, principal
                    assert client.close_reason == f"{principal.kind} {principal.name} no longer allowed"
                else:
                    assert not client.ended, principal
        # A socket that joins later, as one of those gone, is closed on the next check.
        late = await join(hub, next(iter(gone)))
        await hub._end_revoked()
        assert late.close_code == CLOSE_POLICY
    finally:
        await hub.stop()


async def test_the_hub_keeps_who_is_connected_as_sockets_come_and_go(store: Store) -> None:
    await accounts.create_token(store.writer, "t1", "nurse")
    token = Principal("token", "t1", "nurse")
    display = await display_of(store.writer)
    hub = Hub(Repository(store.writer, store.reader), MemoryBroker(), session_limits=LIMITS)
    taken = checkouts(store.reader)
    try:
        await hub._end_revoked()
        assert taken == []  # no sockets: the store is not asked
        first, second = await join(hub, token, "W01"), await join(hub, token, "W02")
        screen = await join(hub, display, "W01")
        assert hub._principals == {token: {first, second}, display: {screen}}
        await hub.leave(first)
        assert hub._principals == {token: {second}, display: {screen}}
        await accounts.revoke_display(store.writer, display.name)
        taken.clear()
        await hub._end_revoked()
        assert len(taken) == 1  # one connection, one statement, for every principal
        assert screen.close_code == CLOSE_POLICY and not second.ended
        await hub.leave(second)
        await hub.leave(screen)
        assert hub._principals == {}
        taken.clear()
        await hub._end_revoked()
        assert taken == []
    finally:
        await hub.stop()


async def test_a_control_message_closes_the_sockets_of_that_principal_only(store: Store) -> None:
    """Another process announcing a revocation (Redis) closes it here at once, by kind and name."""
    hub = Hub(Repository(store.writer, store.reader), MemoryBroker(), session_limits=LIMITS)
    try:
        one = Principal("token", "one", "nurse")
        a, b = await join(hub, one, "W01"), await join(hub, one, "W02")
        other = await join(hub, Principal("token", "two", "nurse"))
        same_name_other_kind = await join(hub, Principal("user", "one", "nurse", session="s"))
        hub._on_control({"kind": "token", "name": "one"})
        assert a.close_code == b.close_code == CLOSE_POLICY
        assert not other.ended and not same_name_other_kind.ended
    finally:
        await hub.stop()
