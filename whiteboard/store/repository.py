"""The board's store of record: one transaction per command, state rows and events together.

`Repository.run` is the single write path. It locks the wards a command touches, loads their
boards, lets the pure rules decide, then writes the state rows and appends the events with the
next `seq` of each ward — all in one transaction. Nothing is published from here: the caller
hands the returned records to the broker only after the commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from whiteboard.board.commands import Scene
from whiteboard.board.events import Outcome
from whiteboard.board.model import Board, Flag, Patient, Stay
from whiteboard.board.rules import decide
from whiteboard.board.views import bed_json, stay_json
from whiteboard.errors import NotFound
from whiteboard.store import rows
from whiteboard.store.tables import beds, events, flags, patients, sites, stays, wards
from whiteboard.types import EventRecord, Json

#: Given the transaction and the loaded scene, build the command (may raise a WhiteboardError).
Planner = Callable[[AsyncConnection, Scene], Awaitable[Any]]
#: Which wards the command touches (read before and re-checked after locking).
WardFinder = Callable[[AsyncConnection], Awaitable[set[str]]]
Decider = Callable[[Scene, Any], Outcome]
After = Callable[[AsyncConnection], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Committed:
    outcome: Outcome
    records: tuple[EventRecord, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


class Repository:
    def __init__(self, writer: AsyncEngine, reader: AsyncEngine | None = None) -> None:
        self.writer = writer
        self.reader = reader or writer
        self._dialect = writer.dialect.name

    # --- the write path --------------------------------------------------------------------

    async def run(
        self,
        actor: str,
        at: str,
        find_wards: WardFinder,
        plan: Planner,
        *,
        decider: Decider = decide,
        after: After | None = None,
    ) -> Committed:
        """Decide and commit one command; the caller publishes `records` after this returns.

        `after` runs in the same transaction once the outcome is written (bookkeeping that
        must commit with the change or not at all, like a feed message's control ID).
        """
        for _attempt in range(5):
            async with self.writer.begin() as conn:
                ward_codes = await find_wards(conn)
                await self._lock_wards(conn, ward_codes)
                # A concurrent move may have changed the wards before we held the lock.
                if await find_wards(conn) != ward_codes:
                    await conn.rollback()
                    continue
                scene = Scene(boards=await self._boards(conn, ward_codes), actor=actor, at=at)
                command = await plan(conn, scene)
                outcome = decider(scene, command)
                records = await self.persist(conn, scene, outcome)
                if after is not None:
                    await after(conn)
            return Committed(outcome=outcome, records=records)
        raise NotFound("the record kept moving while it was being changed; try again")

    async def _lock_wards(self, conn: AsyncConnection, ward_codes: set[str]) -> None:
        if not ward_codes or self._dialect == "sqlite":
            return  # SQLite: BEGIN IMMEDIATE already holds the database's one write lock
        # Sorted, so two transactions touching the same wards never wait on each other in a cycle.
        await conn.execute(
            select(wards.c.code)
            .where(wards.c.code.in_(sorted(ward_codes)))
            .order_by(wards.c.code)
            .with_for_update()
        )

    async def _boards(self, conn: AsyncConnection, ward_codes: set[str]) -> dict[str, Board]:
        out: dict[str, Board] = {}
        for code in sorted(ward_codes):
            board = await rows.load_board(conn, code)
            if board is None:
                raise NotFound(f"ward {code} is not known")
            out[code] = board
        return out

    async def persist(self, conn: AsyncConnection, scene: Scene, outcome: Outcome) -> tuple[EventRecord, ...]:
        seqs = {code: board.seq for code, board in scene.boards.items()}
        records: list[EventRecord] = []
        touched_stays: dict[str, Stay] = {}
        touched_patients: dict[str, Patient] = {p.id: p for p in outcome.patients}
        for event in outcome.events:
            seqs[event.ward] += 1
            payload: Json = {}
            if event.bed is not None:
                payload["bed"] = bed_json(event.bed)
                await conn.execute(
                    update(beds)
                    .where(beds.c.code == event.bed.code)
                    .values(
                        state=event.bed.state,
                        version=event.bed.version,
                        stay_id=None if event.bed.stay is None else event.bed.stay.id,
                    )
                )
                if event.bed.stay is not None:
                    touched_stays[event.bed.stay.id] = event.bed.stay
            if event.unplaced is not None:
                payload["unplaced"] = [stay_json(s) for s in event.unplaced]
                touched_stays.update((s.id, s) for s in event.unplaced)
            if event.before is not None:
                payload["before"] = bed_json(event.before)
            if event.detail:
                payload["detail"] = dict(event.detail)
            record = EventRecord(event.ward, seqs[event.ward], scene.at, scene.actor, event.type, payload)
            records.append(record)
        for stay in touched_stays.values():
            touched_patients.setdefault(stay.patient.id, stay.patient)
        for patient in touched_patients.values():
            await self._upsert(conn, patients, rows.patient_row(patient), "id")
        for stay in touched_stays.values():
            await self._upsert(conn, stays, rows.stay_row(stay), "id")
        for ended in outcome.ended:
            await self._upsert(conn, patients, rows.patient_row(ended.stay.patient), "id")
            await self._upsert(
                conn,
                stays,
                {
                    **rows.stay_row(ended.stay),
                    "is_open": False,
                    "ended_at": ended.at,
                    "end_reason": ended.reason,
                },
                "id",
            )
        for stay_id in outcome.reopened:
            await conn.execute(
                update(stays)
                .where(stays.c.id == stay_id)
                .values(is_open=True, ended_at=None, end_reason=None)
            )
        for flag in outcome.flags:
            await self._upsert(conn, flags, rows.flag_row(flag), "id")
        if records:
            await conn.execute(
                events.insert(),
                [
                    {
                        "ward_code": r.ward,
                        "seq": r.seq,
                        "at": r.at,
                        "actor": r.actor,
                        "type": r.type,
                        "payload": r.payload,
                    }
                    for r in records
                ],
            )
            for code, seq in seqs.items():
                if seq != scene.boards[code].seq:
                    await conn.execute(update(wards).where(wards.c.code == code).values(seq=seq))
        return tuple(records)

    async def _upsert(self, conn: AsyncConnection, table: Any, row: dict[str, Any], key: str) -> None:
        dialect: Any = sqlite if self._dialect == "sqlite" else postgresql
        stmt = dialect.insert(table).values(**row)
        stmt = stmt.on_conflict_do_update(
            index_elements=[key], set_={k: v for k, v in row.items() if k != key}
        )
        await conn.execute(stmt)

    # --- lookups used while planning a command (inside the write transaction) -------------------

    @staticmethod
    async def ward_of_bed(conn: AsyncConnection, code: str) -> str:
        ward = (await conn.execute(select(beds.c.ward_code).where(beds.c.code == code))).scalar()
        if ward is None:
            raise NotFound(f"bed {code} is not known")
        return str(ward)

    @staticmethod
    async def open_stay_ward(conn: AsyncConnection, stay_id: str) -> str:
        ward = (
            await conn.execute(select(stays.c.ward_code).where(stays.c.id == stay_id, stays.c.is_open))
        ).scalar()
        if ward is None:
            raise NotFound(f"stay {stay_id} is not an open stay")
        return str(ward)

    @staticmethod
    async def open_stay_of(conn: AsyncConnection, patient_id: str) -> tuple[str, str] | None:
        """(stay id, ward) of the patient's open stay, if they are in."""
        row = (
            await conn.execute(
                select(stays.c.id, stays.c.ward_code).where(stays.c.patient_id == patient_id, stays.c.is_open)
            )
        ).first()
        return None if row is None else (row.id, row.ward_code)

    @staticmethod
    async def patient(conn: AsyncConnection, patient_id: str) -> Patient:
        row = (await conn.execute(select(patients).where(patients.c.id == patient_id))).first()
        if row is None:
            raise NotFound(f"patient {patient_id} is not known")
        return rows.patient_from(row._mapping)

    @staticmethod
    async def find_patient(conn: AsyncConnection, nhs_number: str | None, mrn: str | None) -> Patient | None:
        """The patient by NHS number, else by MRN (the feed's and the admit form's matching rule)."""
        if nhs_number:
            row = (await conn.execute(select(patients).where(patients.c.nhs_number == nhs_number))).first()
            if row is not None:
                return rows.patient_from(row._mapping)
        if mrn:
            row = (
                await conn.execute(
                    select(patients).where(patients.c.mrn == mrn).order_by(patients.c.id).limit(1)
                )
            ).first()
            if row is not None:
                return rows.patient_from(row._mapping)
        return None

    @staticmethod
    async def flags_of(conn: AsyncConnection, patient_id: str) -> tuple[Flag, ...]:
        result = await conn.execute(select(flags).where(flags.c.patient_id == patient_id))
        return tuple(rows.flag_from(r._mapping) for r in result)

    @staticmethod
    async def flag(conn: AsyncConnection, flag_id: str) -> Flag:
        row = (await conn.execute(select(flags).where(flags.c.id == flag_id))).first()
        if row is None:
            raise NotFound(f"flag {flag_id} is not known")
        return rows.flag_from(row._mapping)

    # --- reads ---------------------------------------------------------------------------------

    async def board(self, ward_code: str) -> Board:
        async with self.reader.connect() as conn:
            board = await rows.load_board(conn, ward_code)
        if board is None:
            raise NotFound(f"ward {ward_code} is not known")
        return board

    async def ward_exists(self, ward_code: str) -> bool:
        async with self.reader.connect() as conn:
            return (
                await conn.execute(select(wards.c.code).where(wards.c.code == ward_code))
            ).first() is not None

    async def list_wards(self) -> list[Json]:
        free = func.sum(case((beds.c.state == "available", 1), else_=0))
        query = (
            select(wards.c.code, wards.c.name, wards.c.site_code, func.count(beds.c.code), free)
            .select_from(wards.join(sites, sites.c.code == wards.c.site_code).outerjoin(beds))
            .group_by(wards.c.code, wards.c.name, wards.c.site_code, sites.c.position, wards.c.position)
            .order_by(sites.c.position, wards.c.position, wards.c.code)
        )
        async with self.reader.connect() as conn:
            result = await conn.execute(query)
            return [
                {"code": c, "name": n, "site": s, "beds_total": int(total or 0), "beds_free": int(fr or 0)}
                for c, n, s, total, fr in result
            ]

    async def ward_seqs(self, ward_codes: Sequence[str]) -> dict[str, int]:
        if not ward_codes:
            return {}
        async with self.reader.connect() as conn:
            result = await conn.execute(
                select(wards.c.code, wards.c.seq).where(wards.c.code.in_(list(ward_codes)))
            )
            return {code: int(seq) for code, seq in result}

    async def events_since(
        self, ward_code: str, since: int, limit: int = 1000, until: int | None = None
    ) -> list[EventRecord]:
        query = select(events).where(events.c.ward_code == ward_code, events.c.seq > since)
        if until is not None:
            query = query.where(events.c.seq <= until)
        query = query.order_by(events.c.seq).limit(limit)
        async with self.reader.connect() as conn:
            result = await conn.execute(query)
            return [EventRecord(r.ward_code, int(r.seq), r.at, r.actor, r.type, r.payload) for r in result]

    async def oldest_seq(self, ward_code: str) -> int | None:
        async with self.reader.connect() as conn:
            value = (
                await conn.execute(select(func.min(events.c.seq)).where(events.c.ward_code == ward_code))
            ).scalar()
        return None if value is None else int(value)

    async def stay_json(self, stay_id: str) -> Json:
        async with self.reader.connect() as conn:
            found = await rows.load_stays(conn, stays.c.id == stay_id)
        if not found:
            raise NotFound(f"stay {stay_id} is not known")
        return stay_json(found[0])
