"""One-statement writes (PostgreSQL): a bed or stay edit decided on this process's copy of its
ward and written in one round trip — applied only while the store still has the ward as the
copy was, else decided again under the ward's lock. Never a stale copy's outcome stored, never
a refusal that came only from a stale copy, never one write applied twice.

Each `Store` service here is a server process as far as the store can tell (engines and board
copies of its own); every write checks the boards it used against a fresh read (verify_cache).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.test_store import (
    NURSE,
    Store,
    check_log_matches_state,
    details,
    hospital_layout,
    row,
    store_with_hospital,
)
from whiteboard.errors import StaleVersion
from whiteboard.layout import load_layout, parse_layout
from whiteboard.metrics import METRICS
from whiteboard.service import BoardService
from whiteboard.store.engine import NotApplied
from whiteboard.store.held import HeldConnections
from whiteboard.store.tables import stays

pytestmark = pytest.mark.postgres


@pytest.fixture
async def store(pg_database_url: str) -> AsyncIterator[Store]:
    async with store_with_hospital(pg_database_url) as s:
        yield s


def paths() -> dict[str, float]:
    """How many edits so far were written in one statement, and how many fell back."""
    return {
        path: METRICS.write_paths.labels(path)._value.get()  # type: ignore[attr-defined]
        for path in ("one_statement", "fell_back")
    }


def moved(before: dict[str, float]) -> dict[str, float]:
    now = paths()
    return {path: now[path] - before[path] for path in now}


async def bed_version(service: BoardService, ward: str, code: str) -> int:
    bed = (await service.repo.board(ward)).bed(code)
    assert bed is not None
    return bed.version


async def test_an_edit_on_a_ward_this_process_wrote_last_is_one_statement(store: Store) -> None:
    admitted = await store.service.admit(NURSE, "W01-B1-1", details(1))
    assert admitted.stay is not None
    before = paths()
    await store.service.update_stay(NURSE, admitted.stay.id, 1, {"news2": 3})
    await store.service.update_bed(NURSE, "W01-B1-2", 1, "closed")
    assert moved(before) == {"one_statement": 2, "fell_back": 0}
    assert [r.seq for r in store.broker.published] == [1, 2, 3]
    await check_log_matches_state(store)


async def test_a_copy_another_process_has_moved_past_never_decides_the_edit(store: Store) -> None:
    """The other process edits the stay (consultant, version 2). This process's copy still has
    version 1: an If-Match of 1 passes on the copy, but the store refuses the statement and the
    lock path answers 412; an If-Match of 2 fails on the copy, and the lock path applies it. The
    other process's consultant survives both (the stay's row is written whole)."""
    admitted = await store.service.admit(NURSE, "W01-B1-1", details(1))
    assert admitted.stay is not None
    stay = admitted.stay.id
    other = await store.second_service()
    await other.update_stay(NURSE, stay, 1, {"consultant": "Dr Other"})

    before = paths()
    with pytest.raises(StaleVersion):
        await store.service.update_stay(NURSE, stay, 1, {"news2": 5})
    outcome = await store.service.update_stay(NURSE, stay, 2, {"news2": 6})
    assert moved(before) == {"one_statement": 0, "fell_back": 2}
    assert outcome.stay is not None and outcome.stay.version == 3
    stored = await row(store.writer, stays, id=stay)
    assert (stored["consultant"], stored["news2"], stored["version"]) == ("Dr Other", 6, 3)
    await check_log_matches_state(store)

    before = paths()  # the lock path left this process's copy current again
    await store.service.update_stay(NURSE, stay, 3, {"news2": 2})
    assert moved(before) == {"one_statement": 1, "fell_back": 0}


async def test_a_layout_load_since_the_copy_sends_the_edit_to_the_lock_path(store: Store) -> None:
    """A layout load moves the ward's layout version, not its seq: a copy at the same seq but
    the old layout (the old ward name) is not written from."""
    await store.service.update_bed(NURSE, "W01-B1-1", 1, "closed")
    await load_layout(store.writer, parse_layout(hospital_layout(w01_name="Ward One (Acute)")))
    before = paths()
    await store.service.update_bed(NURSE, "W01-B1-2", 1, "closed")
    assert moved(before) == {"one_statement": 0, "fell_back": 1}
    held = store.repo.cache.latest("W01")
    assert held is not None and held[1].ward.name == "Ward One (Acute)"
    await check_log_matches_state(store)


async def test_two_processes_editing_one_ward_at_once_lose_nothing(store: Store) -> None:
    """Each round both processes flip a bed of their own on one ward at the same moment, and
    both try one version of one stay: every flip lands once, seq 1..N without a gap, and of
    the two stay edits exactly one is applied and the other refused 412."""
    admitted = await store.service.admit(NURSE, "W01-B1-7", details(1))
    assert admitted.stay is not None
    stay = admitted.stay.id
    other = await store.second_service()
    await other.update_bed(NURSE, "W01-B1-2", 1, "closed")  # each process has written W01 once
    await store.service.update_bed(NURSE, "W01-B1-1", 1, "closed")
    rounds, won = 12, 0
    for i in range(rounds):
        version = int((await row(store.writer, stays, id=stay))["version"])
        results = await asyncio.gather(
            store.service.update_bed(NURSE, "W01-B1-1", 2 + i, "available" if i % 2 == 0 else "closed"),
            other.update_bed(NURSE, "W01-B1-2", 2 + i, "available" if i % 2 == 0 else "closed"),
            store.service.update_stay(NURSE, stay, version, {"news2": i % 7}),
            other.update_stay(NURSE, stay, version, {"news2": (i + 3) % 7}),
            return_exceptions=True,
        )
        assert not any(isinstance(r, BaseException) for r in results[:2]), results
        refused = [r for r in results[2:] if isinstance(r, BaseException)]
        assert len(refused) == 1 and isinstance(refused[0], StaleVersion), results
        won += 1
    assert await bed_version(store.service, "W01", "W01-B1-1") == 2 + rounds
    assert await bed_version(other, "W01", "W01-B1-2") == 2 + rounds
    assert int((await row(store.writer, stays, id=stay))["version"]) == 1 + won
    await check_log_matches_state(store)


async def test_a_statement_whose_answer_was_lost_is_never_applied_twice(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection is lost after the statement was applied: the lock path decides again on
    the store, finds the bed already at the new version, and refuses (412) — one event, not
    two."""
    await store.service.update_bed(NURSE, "W01-B1-1", 1, "closed")
    send = HeldConnections.send

    async def applied_then_lost(held: HeldConnections, sql: str, values: Any) -> None:
        await send(held, sql, values)
        raise NotApplied(ConnectionError("connection lost"), lost=True)

    monkeypatch.setattr(HeldConnections, "send", applied_then_lost)
    with pytest.raises(StaleVersion):
        await store.service.update_bed(NURSE, "W01-B1-1", 2, "available")
    monkeypatch.undo()
    assert await bed_version(store.service, "W01", "W01-B1-1") == 3
    board = await store.repo.board("W01")
    assert board.seq == 2
    await check_log_matches_state(store)
