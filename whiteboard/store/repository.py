"""The board's store of record: one transaction per command, state rows and events together.

`Repository.run` is the single write path. It locks the wards a command touches, loads their
boards, lets the pure rules decide, then writes the state rows and appends the events with the
next `seq` of each ward — all in one transaction. Nothing is published from here: the caller
hands the returned records to the broker only after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, case, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from whiteboard.board.commands import Scene
from whiteboard.board.events import Outcome, apply_all
from whiteboard.board.model import Board, Flag, Patient, Stay
from whiteboard.board.rules import decide
from whiteboard.board.views import bed_json, stay_json
from whiteboard.errors import NotFound, Unauthenticated, WhiteboardError
from whiteboard.metrics import METRICS
from whiteboard.store import rows
from whiteboard.store import statements as st
from whiteboard.store.accounts import LIVE_TOKEN
from whiteboard.store.direct import as_one, run, run_together
from whiteboard.store.engine import (
    NotApplied,
    lost_connection,
    sync_sqlite_writer,
)
from whiteboard.store.held import HeldConnections
from whiteboard.store.tables import beds, events, flags, patients, sites, stays, wards
from whiteboard.types import EventRecord, Json

log = logging.getLogger("whiteboard.store")

#: Given the transaction and the loaded scene, build the command (may raise a WhiteboardError).
Planner = Callable[[Connection, Scene], Any]
#: Which wards the command touches (read before and re-checked after locking).
WardFinder = Callable[[Connection], set[str]]
#: This process's guess at those wards, when it has one, to lock without reading them first.
WardGuess = Callable[[], set[str] | None]
Decider = Callable[[Scene, Any], Outcome]
After = Callable[[Connection], None]


@dataclass(frozen=True, slots=True)
class OnBoard:
    """A command that needs nothing but one ward's board, and how to tell its subject (a bed,
    an open stay) is on a board: it may be written in one round trip (`Repository.run`)."""

    holds: Callable[[Board], bool]
    command: Callable[[Scene], Any]


class _LostBeforeCommit(Exception):
    """The write transaction's connection died before COMMIT was sent (see `Repository.run`)."""


@dataclass(frozen=True, slots=True)
class Committed:
    outcome: Outcome
    records: tuple[EventRecord, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def _driver_in_transaction(conn: Connection) -> bool:
    try:
        return bool(getattr(conn.connection.dbapi_connection, "in_transaction", True))
    except Exception:  # closed or invalidated on the way: not to be reused either way
        return True


class BoardCache:
    """This process's copies of boards it has written, each valid only at its (layout, seq).

    A board is the same board exactly while its ward's `seq` and `layout_version` are
    unchanged: every change to what a board shows is an event (which moves `seq` on), and a
    layout load moves `layout_version` on. Any other process's write moves `seq`, so a stale
    copy is never used; entries are stored only after their transaction has committed.

    Two writes to one ward can commit in one order and be remembered in the other (on
    PostgreSQL the second waits on the ward lock, not on the first's return to the event
    loop), so a board never replaces a later one: with the older copy kept, every following
    write to the ward found the cache one seq behind and read the ward again — in a burst
    through the API on one process, nine writes in ten.
    """

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._boards: dict[str, tuple[int, Board]] = {}

    def get(self, ward: str, seq: int, layout_version: int) -> Board | None:
        hit = self._boards.get(ward)
        if hit is None or hit[0] != layout_version or hit[1].seq != seq:
            return None
        return hit[1]

    def latest(self, ward: str) -> tuple[int, Board] | None:
        """The newest copy held of `ward`, with its layout version: exact only while the store
        still has the ward at that (layout, seq), which only the store can say."""
        return self._boards.get(ward)

    def put(self, board: Board, layout_version: int) -> None:
        held = self._boards.get(board.ward.code)
        if held is not None and (held[0], held[1].seq) > (layout_version, board.seq):
            return
        if held is None and len(self._boards) >= self.limit:
            self._boards.pop(next(iter(self._boards)))
        self._boards[board.ward.code] = (layout_version, board)


@dataclass(frozen=True, slots=True)
class _Job:
    actor: str
    at: str
    find_wards: WardFinder
    plan: Planner
    decider: Decider
    after: After | None
    guess_wards: WardGuess | None = None
    on_board: OnBoard | None = None
    #: The digest of a bearer token that must still be live when the write commits.
    token: str | None = None


Step = tuple[Any, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Writes:
    """What storing one outcome takes: state rows, event rows, the wards' new seqs, and for the
    usual command all of it as the steps of one statement (`direct.run_together`)."""

    records: tuple[EventRecord, ...]
    rows: list[Step]
    events: list[dict[str, Any]]
    seqs: list[Step]
    together: list[Step] | None


@dataclass(frozen=True, slots=True)
class _Done:
    committed: Committed
    boards: dict[str, Board]
    layouts: dict[str, int]


def held_connections(engine: AsyncEngine) -> int:
    """How many of the pool's connections one-statement writes may hold: a fifth, at least one
    (4 of the default 20; in a burst of 500 writes a second on two processes, 1-3 are in use)."""
    size = getattr(engine.pool, "size", None)
    return max(1, size() // 5) if callable(size) else 1


class Repository:
    def __init__(
        self, writer: AsyncEngine, reader: AsyncEngine | None = None, *, verify_cache: bool = False
    ) -> None:
        self.writer = writer
        self.reader = reader or writer
        self._dialect = writer.dialect.name
        self.cache = BoardCache()
        self._bed_wards: dict[str, str] = {}
        #: Per ward, this process's writes to it take turns here before taking a connection.
        self._ward_turns: dict[str, asyncio.Lock] = {}
        #: The ward each open stay was last seen on: a guess, checked under the ward's lock.
        self._stay_wards: dict[str, str] = {}
        #: Check every cached board against a fresh load (tests turn this on).
        self.verify_cache = verify_cache
        self._sync_writer: Engine | None = None
        self._write_thread: ThreadPoolExecutor | None = None
        #: The writer thread's own connection, kept open between transactions (see
        #: `_run_in_thread`); only ever used from that one thread.
        self._writer_conn: Connection | None = None
        #: PostgreSQL: a few connections held for the one-statement writes (`_write_at_once`).
        self._held: HeldConnections | None = None
        if self._dialect == "postgresql":
            self._held = HeldConnections(writer, held_connections(writer))
        if self._dialect == "sqlite":
            # SQLite has one writer at a time anyway: one thread of ours runs every write.
            self._sync_writer = sync_sqlite_writer(writer)
            self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="whiteboard-writer")

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
        guess_wards: WardGuess | None = None,
        on_board: OnBoard | None = None,
        token: str | None = None,
    ) -> Committed:
        """Decide and commit one command; the caller publishes `records` after this returns.

        `find_wards`, `plan` and `after` are synchronous and run inside the transaction: on
        SQLite the whole transaction runs in this process's one writer thread (one thread hop
        instead of one per statement); on PostgreSQL through `run_sync`. `after` runs once the
        outcome is written (bookkeeping that must commit with the change or not at all, like a
        feed message's control ID). On PostgreSQL, `guess_wards` (when it has a guess) stands in
        for the `find_wards` read before locking; the read after locking checks it, and a wrong
        guess costs a second try. With `on_board` too, the command is first tried in one round
        trip on this process's copy of the guessed ward (`_write_at_once`). With `token` (a
        bearer token's digest, its name and role known but its liveness not yet checked), the
        write commits only while that token is not revoked, checked in the write's own statement
        or transaction: else Unauthenticated, and nothing is written.
        """
        job = _Job(actor, at, find_wards, plan, decider, after, guess_wards, on_board, token)
        if self._sync_writer is not None:
            loop = asyncio.get_running_loop()
            committed: Committed = await loop.run_in_executor(self._write_thread, self._run_in_thread, job)
            return committed
        guess = None if guess_wards is None else guess_wards()
        async with self._turns(guess):
            if on_board is not None and guess is not None and len(guess) == 1:
                done = await self._write_at_once(job, on_board, *guess)
                METRICS.count(METRICS.write_paths, "one_statement" if done else "fell_back")
                if done is not None:
                    return self._remember(done)
            attempts, lost_once = 0, False
            while attempts < 5:
                try:
                    done = await self._transaction(job, retry_lost=not lost_once)
                except _LostBeforeCommit:
                    lost_once = True
                    log.warning("the database connection was lost before the commit; trying once more")
                    continue
                if done is not None:
                    return self._remember(done)
                attempts += 1
        raise NotFound("the record kept moving while it was being changed; try again")

    @contextlib.asynccontextmanager
    async def _turns(self, wards: set[str] | None) -> AsyncIterator[None]:
        """This process's writes to one ward, when it knows the ward up front, one at a time.

        They would queue on the ward's row lock anyway; queued here instead, each waiting write
        holds no pooled connection (in a burst, writes waiting on a few busy wards held most of
        the pool, and reads and other wards' writes waited behind them) and finds the board as
        the write before it left it in the cache. The row lock stays the rule between
        processes, and for a guess that proves wrong. Locks are taken in ward order, before
        any row lock, so no two writes wait on each other in a circle."""
        if wards is not None and len(wards) == 1:  # nearly every write: no exit stack to build
            (ward,) = wards
            async with self._ward_turns.setdefault(ward, asyncio.Lock()):
                yield
            return
        async with contextlib.AsyncExitStack() as turns:
            for ward in sorted(wards or ()):
                await turns.enter_async_context(self._ward_turns.setdefault(ward, asyncio.Lock()))
            yield

    async def _transaction(self, job: _Job, *, retry_lost: bool) -> _Done | None:
        async with self.writer.begin() as conn:
            try:
                return await conn.run_sync(self._attempt, job)
            except Exception as error:
                # Lost before COMMIT was sent: the database has rolled it back, so it is safe to
                # run again on a fresh connection. (A COMMIT whose answer was lost is never run
                # again: it may have been applied.)
                if retry_lost and lost_connection(error):
                    raise _LostBeforeCommit from error
                raise

    async def _write_at_once(self, job: _Job, on_board: OnBoard, ward: str) -> _Done | None:
        """The command decided on this process's newest copy of `ward` and written in one
        statement, outside any transaction, that applies only while the store still has the
        ward at that copy's (layout, seq); None, with nothing written, where that cannot be
        done or the store has moved on — the locked path then decides afresh.

        A ward's board changes only with an event, which moves its seq on, or with a layout
        load, which moves its layout version on (`BoardCache`). So while the ward's row holds
        the copy's (seq, layout), the copy is the board as committed, and the outcome decided on
        it is the one the locked path would decide. The statement writes the rows, the event
        and the ward's new seq together, the seq through SET_WARD_SEQ_IF_AT: once another write
        to the ward has committed it makes the statement fail as a whole (and the event's
        (ward, seq) would clash too). One round trip, where the locked path takes four: BEGIN,
        the lock, the write, COMMIT. Every command it is used for carries If-Match, so even a
        statement whose answer was lost (applied or not, nobody knows) is safe to decide again
        on the locked path: applied, it is refused there as stale, never applied twice.
        """
        held = self.cache.latest(ward)
        if held is None or not on_board.holds(held[1]):
            return None
        layout, board = held
        scene = Scene(boards={ward: board}, actor=job.actor, at=job.at)
        try:
            outcome = job.decider(scene, on_board.command(scene))
        except WhiteboardError:
            return None  # refused on a copy that may be behind: the locked path answers
        writes = self._writes(scene, outcome)
        if writes.together is None or len(writes.seqs) != 1:
            return None
        *steps, (_set_seq, params) = writes.together
        at = {**params, "w_was": board.seq, "w_layout": layout}
        if job.token is None:
            steps.append((st.SET_WARD_SEQ_IF_AT, at))
        else:
            steps.append((st.SET_WARD_SEQ_IF_AT_FOR_TOKEN, {**at, "t_hash": job.token}))
        one = as_one(self.writer.dialect, steps)
        if one is None or self._held is None:  # (only PostgreSQL's statements can be one)
            return None
        try:
            await self._held.send(*one)
        except NotApplied as error:
            if not error.lost:
                log.debug("one-statement write to %s at seq %s fell back: %s", ward, board.seq, error)
            return None
        except DBAPIError:  # no connection to be had: the locked path will say so
            return None
        done = _Done(Committed(outcome=outcome, records=writes.records), {ward: board}, {ward: layout})
        if self.verify_cache:
            await self._verify_written(ward, apply_all(board, outcome.events))
        return done

    async def _verify_written(self, ward: str, expected: Board) -> None:
        """Tests: the board as stored is the one the one-statement write expected."""
        stored = await self.board(ward)
        if stored.seq == expected.seq and stored != expected:
            raise RuntimeError(f"ward {ward}: a one-statement write left the store unlike its copy")

    def _run_in_thread(self, job: _Job) -> Committed:
        # One connection for every write, kept open: checking one out of the pool and handing
        # it back (with its reset) for every transaction was a tenth of a feed message's CPU.
        conn = self._writer_conn
        if conn is None or conn.closed or conn.invalidated:
            assert self._sync_writer is not None
            conn = self._writer_conn = self._sync_writer.connect()
        try:
            with conn.begin():
                done = self._attempt(conn, job)
        except BaseException:
            # The transaction is rolled back. A connection left in doubt is not reused: one
            # still inside BEGIN IMMEDIATE (its ROLLBACK failed) would hold the write lock.
            if conn.in_transaction() or conn.invalidated or _driver_in_transaction(conn):
                conn.close()
                self._writer_conn = None
            raise
        assert done is not None  # SQLite holds its write lock from BEGIN: nothing can move
        return self._remember(done)

    def _attempt(self, conn: Connection, job: _Job) -> _Done | None:
        if job.token is not None and run(conn, LIVE_TOKEN, {"hash": job.token}).first() is None:
            raise Unauthenticated("unknown or revoked token")
        guess = None
        if self._dialect != "sqlite" and job.guess_wards is not None:
            guess = job.guess_wards()
        ward_codes = job.find_wards(conn) if guess is None else guess
        versions = None
        if self._dialect != "sqlite":
            versions = self._lock_wards(conn, ward_codes)
            # A concurrent move may have changed the wards before we held their locks.
            if job.find_wards(conn) != ward_codes:
                return None
        boards, layouts = self._boards(conn, ward_codes, versions)
        scene = Scene(boards=boards, actor=job.actor, at=job.at)
        outcome = job.decider(scene, job.plan(conn, scene))
        records = self.persist(conn, scene, outcome)
        if job.after is not None:
            job.after(conn)
        return _Done(Committed(outcome=outcome, records=records), boards, layouts)

    def _remember(self, done: _Done) -> Committed:
        """After the commit, and only then, keep the boards as they now are."""
        for code, board in done.boards.items():
            held = self.cache.latest(code)
            if held is None or held[0] != done.layouts[code]:
                self._learn_wards(board)  # a board read afresh: where its beds and stays are
            # The boards the outcome was decided into (`Outcome.boards`): the events applied once.
            after = done.committed.outcome.boards.get(code)
            if after is None:  # an outcome made without a draft: apply its events here
                after = apply_all(board, done.committed.outcome.events)
            self.cache.put(after, done.layouts[code])
        for event in done.committed.outcome.events:
            if event.bed is not None and event.bed.stay is not None:
                self._guess_stay_ward(event.bed.stay.id, event.ward)
        return done.committed

    @staticmethod
    def _lock_wards(conn: Connection, ward_codes: set[str]) -> dict[str, tuple[int, int]]:
        """Lock the wards' rows (PostgreSQL) and return their (seq, layout version)."""
        if not ward_codes:
            return {}
        if len(ward_codes) == 1:  # nearly every command: no IN list to write per execution
            (code,) = ward_codes
            row = run(conn, st.LOCK_WARD, {"code": code}).first()
            return {} if row is None else {code: (int(row[0]), int(row[1]))}
        found = conn.execute(st.LOCK_WARDS, {"codes": sorted(ward_codes)})
        return {code: (int(seq), int(layout)) for code, seq, layout in found}

    def _boards(
        self, conn: Connection, ward_codes: set[str], versions: dict[str, tuple[int, int]] | None = None
    ) -> tuple[dict[str, Board], dict[str, int]]:
        """The boards of `ward_codes` as committed, from the cache when it is still exact.

        `versions` are the wards' (seq, layout version) when the caller has just read them
        under lock; otherwise they are read here."""
        if not ward_codes:
            return {}, {}
        if versions is None:
            versions = {}
            for code in sorted(ward_codes):
                found = run(conn, st.WARD_VERSION, {"code": code}).first()
                if found is not None:
                    versions[code] = (int(found[0]), int(found[1]))
        out: dict[str, Board] = {}
        for code in sorted(ward_codes):
            if code not in versions:
                raise NotFound(f"ward {code} is not known")
            seq, layout = versions[code]
            board = self.cache.get(code, seq, layout)
            if board is None or self.verify_cache:
                loaded = rows.load_board(conn, code)
                assert loaded is not None
                if board is not None and board != loaded:
                    raise RuntimeError(f"ward {code}: the cached board differs from the store at seq {seq}")
                board = loaded
            out[code] = board
        return out, {code: layout for code, (_seq, layout) in versions.items()}

    def persist(self, conn: Connection, scene: Scene, outcome: Outcome) -> tuple[EventRecord, ...]:
        """Write the outcome's rows and append its events: only the rows that changed, and
        for the usual command (one event, no stay ended or reopened, no flag) as one statement
        (`direct.run_together`)."""
        writes = self._writes(scene, outcome)
        if writes.together is not None:
            run_together(conn, writes.together)
        else:
            for statement, params in writes.rows:
                run(conn, statement, params)
            if writes.records:
                run(conn, st.APPEND_EVENTS, writes.events)
                for statement, params in writes.seqs:
                    run(conn, statement, params)
        return writes.records

    def _writes(self, scene: Scene, outcome: Outcome) -> _Writes:
        """The statements that store `outcome` on top of the boards `scene` was loaded with."""
        seqs = {code: board.seq for code, board in scene.boards.items()}
        records: list[EventRecord] = []
        writes: list[Step] = []
        #: The beds as stored: as loaded, then as this outcome writes them.
        stored_beds = {bed.code: bed for board in scene.boards.values() for bed in board.beds}
        touched_stays: dict[str, Stay] = {}
        touched_patients: dict[str, Patient] = {p.id: p for p in outcome.patients}
        for event in outcome.events:
            seqs[event.ward] += 1
            payload: Json = {}
            if event.bed is not None:
                payload["bed"] = bed_json(event.bed)
                stay_id = None if event.bed.stay is None else event.bed.stay.id
                held = stored_beds.get(event.bed.code)
                # A stay's own edit leaves its bed's row as it was: no write for it.
                if held is None or (held.state, held.version, held.stay and held.stay.id) != (
                    event.bed.state,
                    event.bed.version,
                    stay_id,
                ):
                    writes.append(
                        (
                            st.SET_BED,
                            {
                                "b_code": event.bed.code,
                                "b_state": event.bed.state,
                                "b_version": event.bed.version,
                                "b_stay": stay_id,
                            },
                        )
                    )
                    stored_beds[event.bed.code] = event.bed
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
        # What the loaded boards already hold is already stored: write only what changed.
        stored = {
            stay.id: stay
            for board in scene.boards.values()
            for stay in board.stays()
            if stay.id in touched_stays or stay.patient.id in touched_patients
        }
        stored_patients = {stay.patient.id: stay.patient for stay in stored.values()}
        for patient in touched_patients.values():
            if stored_patients.get(patient.id) != patient:
                writes.append(self._upsert(patients, rows.patient_row(patient), "id"))
        for stay in touched_stays.values():
            if stored.get(stay.id) != stay:
                writes.append(self._upsert(stays, rows.stay_row(stay), "id"))
        for ended in outcome.ended:
            writes.append(self._upsert(patients, rows.patient_row(ended.stay.patient), "id"))
            writes.append(
                self._upsert(
                    stays,
                    {
                        **rows.stay_row(ended.stay),
                        "is_open": False,
                        "ended_at": ended.at,
                        "end_reason": ended.reason,
                    },
                    "id",
                )
            )
        for stay_id in outcome.reopened:
            writes.append((st.REOPEN_STAY, {"s_id": stay_id}))
        for flag in outcome.flags:
            writes.append(self._upsert(flags, rows.flag_row(flag), "id"))
        events_rows = [
            {
                "ward_code": r.ward,
                "seq": r.seq,
                "at": r.at,
                "actor": r.actor,
                "type": r.type,
                "payload": r.payload,
            }
            for r in records
        ]
        seq_writes = [
            (st.SET_WARD_SEQ, {"w_code": code, "w_seq": seq})
            for code, seq in seqs.items()
            if seq != scene.boards[code].seq
        ]
        # One statement only where no row is named twice: one event (so one bed, one stay,
        # one patient at most) and nothing ended, reopened or flagged.
        together = None
        if len(records) == 1 and not (outcome.ended or outcome.reopened or outcome.flags):
            together = [*writes, (st.APPEND_EVENTS, events_rows[0]), *seq_writes]
        return _Writes(tuple(records), writes, events_rows, seq_writes, together)

    def _upsert(self, table: Any, row: dict[str, Any], key: str) -> tuple[Any, dict[str, Any]]:
        return st.upsert_for(self._dialect, table, row, key), row

    # --- lookups used while planning a command (inside the write transaction) -------------------

    def ward_of_bed(self, conn: Connection, code: str) -> str:
        # A bed never changes ward (a layout load refuses to move one) and is never deleted,
        # so what was found once stays true.
        ward = self._bed_wards.get(code)
        if ward is None:
            found = run(conn, st.WARD_OF_BED, {"code": code}).scalar()
            if found is None:
                raise NotFound(f"bed {code} is not known")
            self._bed_wards[code] = ward = str(found)
        return ward

    def open_stay_ward(self, conn: Connection, stay_id: str) -> str:
        ward = run(conn, st.WARD_OF_OPEN_STAY, {"s_id": stay_id}).scalar()
        if ward is None:
            self._stay_wards.pop(stay_id, None)
            raise NotFound(f"stay {stay_id} is not an open stay")
        self._guess_stay_ward(stay_id, str(ward))
        return str(ward)

    def _learn_wards(self, board: Board) -> None:
        for bed in board.beds:
            self._bed_wards[bed.code] = board.ward.code
        for stay in board.stays():
            self._guess_stay_ward(stay.id, board.ward.code)

    def bed_ward_guess(self, code: str) -> str | None:
        """The ward of the bed, if this process has read it (a bed never changes ward)."""
        return self._bed_wards.get(code)

    def stay_ward_guess(self, stay_id: str) -> str | None:
        """The ward this process last saw the open stay on (it may have moved since)."""
        return self._stay_wards.get(stay_id)

    def _guess_stay_ward(self, stay_id: str, ward: str) -> None:
        if len(self._stay_wards) >= 100_000 and stay_id not in self._stay_wards:
            self._stay_wards.clear()  # bounded: guesses are only a shortcut
        self._stay_wards[stay_id] = ward

    @staticmethod
    def open_stay_of(conn: Connection, patient_id: str) -> tuple[str, str] | None:
        """(stay id, ward) of the patient's open stay, if they are in."""
        row = run(conn, st.OPEN_STAY_OF_PATIENT, {"p_id": patient_id}).first()
        return None if row is None else (row[0], row[1])

    @staticmethod
    def patient(conn: Connection, patient_id: str) -> Patient:
        row = (conn.execute(select(patients).where(patients.c.id == patient_id))).first()
        if row is None:
            raise NotFound(f"patient {patient_id} is not known")
        return rows.patient_from(row._mapping)

    @staticmethod
    def find_patient_row(conn: Connection, nhs_number: str | None, mrn: str | None) -> dict[str, Any] | None:
        """The patient's row by NHS number, else by MRN (the feed's and the admit form's rule)."""
        for statement, value in ((st.PATIENT_BY_NHS, nhs_number), (st.PATIENT_BY_MRN, mrn)):
            if value:
                found = run(conn, statement, {"value": value})
                row = found.first()
                if row is not None:
                    return found.mapping(row)
        return None

    @classmethod
    def find_patient(cls, conn: Connection, nhs_number: str | None, mrn: str | None) -> Patient | None:
        row = cls.find_patient_row(conn, nhs_number, mrn)
        return None if row is None else rows.patient_from(row)

    @staticmethod
    def flags_of(conn: Connection, patient_id: str) -> tuple[Flag, ...]:
        result = conn.execute(select(flags).where(flags.c.patient_id == patient_id))
        return tuple(rows.flag_from(r._mapping) for r in result)

    @staticmethod
    def flag(conn: Connection, flag_id: str) -> Flag:
        row = (conn.execute(select(flags).where(flags.c.id == flag_id))).first()
        if row is None:
            raise NotFound(f"flag {flag_id} is not known")
        return rows.flag_from(row._mapping)

    # --- reads ---------------------------------------------------------------------------------

    async def board(self, ward_code: str) -> Board:
        """The ward as committed at one seq: every query of the read sees the same snapshot
        (SQLite's deferred transaction does; PostgreSQL needs REPEATABLE READ for it)."""
        async with self.reader.connect() as conn:
            if self._dialect != "sqlite":
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            board = await conn.run_sync(rows.load_board, ward_code)
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

    async def ward_versions(self, ward_code: str) -> tuple[int, int] | None:
        """The ward's (seq, layout version): what a board of it is the same board at."""
        async with self.reader.connect() as conn:
            found = (await conn.execute(st.WARD_VERSION, {"code": ward_code})).first()
        return None if found is None else (int(found[0]), int(found[1]))

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
            found = await conn.run_sync(rows.load_stays, stays.c.id == stay_id)
        if not found:
            raise NotFound(f"stay {stay_id} is not known")
        return stay_json(found[0])

    async def get_patient(self, patient_id: str) -> Patient:
        async with self.reader.connect() as conn:
            return await conn.run_sync(self.patient, patient_id)

    async def release_connections(self) -> None:
        """Hand the connections held for one-statement writes back to the pool, before the
        engine is disposed of (which would otherwise close them abruptly)."""
        if self._held is not None:
            await self._held.close()

    def close(self) -> None:
        """Release the writer thread and the synchronous SQLite engine (the async engines are
        their owner's to dispose)."""
        if self._write_thread is not None:
            self._write_thread.shutdown(wait=True)
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None
        if self._sync_writer is not None:
            self._sync_writer.dispose()
