"""The board service: every write, from whichever shell, goes through here.

It turns a request into a command inside the write transaction (looking up the patient, their
open stay and flags), commits through the repository, and only then announces the committed
events to the broker. An announcement that fails is logged and counted, never raised: the
store is the truth and every process catches up from it.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy import Connection

from whiteboard.board import commands as cmd
from whiteboard.board.events import Outcome
from whiteboard.board.model import Board, FlagStatus, Patient, Precaution, Sex
from whiteboard.errors import Conflict, StaleVersion, WhiteboardError
from whiteboard.fanout.base import Broker, encode_event
from whiteboard.metrics import METRICS
from whiteboard.store.accounts import Principal
from whiteboard.store.repository import Committed, OnBoard, Repository
from whiteboard.types import EventRecord, now_z

log = logging.getLogger("whiteboard.service")


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class PatientDetails:
    mrn: str
    given_name: str
    family_name: str
    dob: str | None
    sex: Sex
    nhs_number: str | None = None


def _guess(lookup: Callable[[str], str | None], key: str) -> Callable[[], set[str] | None]:
    """The ward this process last saw `key` on, as a one-ward guess for `Repository.run`; read
    when called, so a retry after a wrong guess uses what the failed attempt learnt."""

    def guess() -> set[str] | None:
        ward = lookup(key)
        return None if ward is None else {ward}

    return guess


class BoardService:
    def __init__(self, repo: Repository, broker: Broker) -> None:
        self.repo = repo
        self.broker = broker

    async def announce(self, records: tuple[EventRecord, ...]) -> None:
        for record in records:
            try:
                await self.broker.publish(record.ward, encode_event(record))
            except Exception:  # never fail a committed write over news
                METRICS.publish_failures.inc()
                log.warning("could not announce %s seq %s; processes will catch up", record.ward, record.seq)

    async def _commit(
        self,
        kind: str,
        who: Principal,
        find_wards: Callable[[Connection], set[str]],
        plan: Callable[[Connection, cmd.Scene], cmd.Command],
        guess_wards: Callable[[], set[str] | None] | None = None,
        on_board: OnBoard | None = None,
        token: str | None = None,
    ) -> Committed:
        started = time.perf_counter()
        try:
            committed = await self.repo.run(
                who.actor, now_z(), find_wards, plan, guess_wards=guess_wards, on_board=on_board, token=token
            )
        except WhiteboardError as exc:
            METRICS.count(METRICS.commands, kind, exc.code)
            raise
        METRICS.commit_seconds.observe(time.perf_counter() - started)
        METRICS.count(METRICS.commands, kind, "ok")
        await self.announce(committed.records)
        return committed

    # --- patients moving ----------------------------------------------------------------------

    async def admit(
        self,
        who: Principal,
        bed: str,
        details: PatientDetails,
        consultant: str | None = None,
        named_nurse: str | None = None,
        edd: str | None = None,
    ) -> Outcome:
        def wards(conn: Connection) -> set[str]:
            return {self.repo.ward_of_bed(conn, bed)}

        def plan(conn: Connection, _scene: cmd.Scene) -> cmd.Command:
            patient, open_stay, flags = self.resolve_patient(conn, details)
            return cmd.Admit(
                stay_id=new_id("s"),
                patient=patient,
                bed=bed,
                flags=flags,
                consultant=consultant,
                named_nurse=named_nurse,
                edd=edd,
                open_stay_id=open_stay,
            )

        return (await self._commit("admit", who, wards, plan)).outcome

    def resolve_patient(self, conn: Connection, details: PatientDetails) -> tuple[Patient, str | None, tuple]:  # type: ignore[type-arg]
        """The patient these details name (by NHS number, else MRN), brought up to date, with
        their open stay id and their flags; or a new patient."""
        found = self.repo.find_patient(conn, details.nhs_number, details.mrn)
        if found is None:
            patient = Patient(
                id=new_id("p"),
                nhs_number=details.nhs_number,
                mrn=details.mrn,
                given_name=details.given_name,
                family_name=details.family_name,
                dob=details.dob,
                sex=details.sex,
            )
            return patient, None, ()
        if details.nhs_number and found.nhs_number and found.nhs_number != details.nhs_number:
            raise Conflict(f"MRN {details.mrn} belongs to a patient with a different NHS number")
        patient = replace(
            found,
            nhs_number=details.nhs_number or found.nhs_number,
            mrn=details.mrn,
            given_name=details.given_name,
            family_name=details.family_name,
            dob=details.dob,
            sex=details.sex,
        )
        open_stay = self.repo.open_stay_of(conn, found.id)
        flags = self.repo.flags_of(conn, found.id)
        return patient, None if open_stay is None else open_stay[0], flags

    async def transfer(self, who: Principal, stay_id: str, bed: str) -> Outcome:
        def wards(conn: Connection) -> set[str]:
            return {self.repo.open_stay_ward(conn, stay_id), self.repo.ward_of_bed(conn, bed)}

        def plan(_conn: Connection, _scene: cmd.Scene) -> cmd.Command:
            return cmd.Transfer(stay_id=stay_id, bed=bed)

        return (await self._commit("transfer", who, wards, plan)).outcome

    async def discharge(self, who: Principal, stay_id: str) -> Outcome:
        def wards(conn: Connection) -> set[str]:
            return {self.repo.open_stay_ward(conn, stay_id)}

        def plan(_conn: Connection, _scene: cmd.Scene) -> cmd.Command:
            return cmd.Discharge(stay_id=stay_id)

        guess = _guess(self.repo.stay_ward_guess, stay_id)
        return (await self._commit("discharge", who, wards, plan, guess)).outcome

    # --- edits --------------------------------------------------------------------------------

    async def update_stay(
        self,
        who: Principal,
        stay_id: str,
        if_version: int,
        changes: dict[str, object],
        token: str | None = None,
    ) -> Outcome:
        """`token`: the digest of the bearer token `who` came with, when only the commit is to
        check that it is still live (`Repository.run`)."""

        def wards(conn: Connection) -> set[str]:
            return {self.repo.open_stay_ward(conn, stay_id)}

        def command(_scene: cmd.Scene) -> cmd.Command:
            return cmd.UpdateStay(stay_id=stay_id, if_version=if_version, changes=changes)

        def on(board: Board) -> bool:
            return board.stay(stay_id) is not None

        guess = _guess(self.repo.stay_ward_guess, stay_id)
        return await self._edit("update_stay", who, wards, command, on, guess, token)

    async def update_bed(
        self, who: Principal, bed: str, if_version: int, state: str, token: str | None = None
    ) -> Outcome:
        """`token`: as for `update_stay`."""

        def wards(conn: Connection) -> set[str]:
            return {self.repo.ward_of_bed(conn, bed)}

        def command(_scene: cmd.Scene) -> cmd.Command:
            return cmd.UpdateBed(bed=bed, if_version=if_version, state=state)  # type: ignore[arg-type]

        def on(board: Board) -> bool:
            return board.bed(bed) is not None

        guess = _guess(self.repo.bed_ward_guess, bed)
        return await self._edit("update_bed", who, wards, command, on, guess, token)

    async def _edit(
        self,
        kind: str,
        who: Principal,
        find_wards: Callable[[Connection], set[str]],
        command: Callable[[cmd.Scene], cmd.Command],
        holds: Callable[[Board], bool],
        guess_wards: Callable[[], set[str] | None],
        token: str | None,
    ) -> Outcome:
        """An edit of one bed or stay: its command needs nothing but the ward's board, so it
        may be written in one round trip on this process's copy (`OnBoard`)."""

        def plan(_conn: Connection, scene: cmd.Scene) -> cmd.Command:
            return command(scene)

        at_once = OnBoard(holds, command)
        committed = await self._commit(kind, who, find_wards, plan, guess_wards, at_once, token)
        return committed.outcome

    # --- infection flags ----------------------------------------------------------------------

    async def raise_flag(
        self, who: Principal, patient_id: str, code: str, status: FlagStatus, precaution: Precaution
    ) -> Outcome:
        def wards(conn: Connection) -> set[str]:
            self.repo.patient(conn, patient_id)  # 404 for an unknown patient
            open_stay = self.repo.open_stay_of(conn, patient_id)
            return set() if open_stay is None else {open_stay[1]}

        def plan(conn: Connection, _scene: cmd.Scene) -> cmd.Command:
            open_stay = self.repo.open_stay_of(conn, patient_id)
            return cmd.RaiseFlag(
                flag_id=new_id("f"),
                patient=self.repo.patient(conn, patient_id),
                code=code,
                status=status,
                precaution=precaution,
                existing=self.repo.flags_of(conn, patient_id),
                open_stay_id=None if open_stay is None else open_stay[0],
            )

        return (await self._commit("raise_flag", who, wards, plan)).outcome

    async def update_flag(
        self, who: Principal, flag_id: str, status: FlagStatus, if_version: int | None
    ) -> Outcome:
        def wards(conn: Connection) -> set[str]:
            flag = self.repo.flag(conn, flag_id)
            open_stay = self.repo.open_stay_of(conn, flag.patient_id)
            return set() if open_stay is None else {open_stay[1]}

        def plan(conn: Connection, _scene: cmd.Scene) -> cmd.Command:
            flag = self.repo.flag(conn, flag_id)
            if if_version is not None and flag.version != if_version:
                raise StaleVersion(f"flag {flag_id} is at version {flag.version}, not {if_version}")
            open_stay = self.repo.open_stay_of(conn, flag.patient_id)
            return cmd.UpdateFlag(
                flag=flag, status=status, open_stay_id=None if open_stay is None else open_stay[0]
            )

        return (await self._commit("update_flag", who, wards, plan)).outcome
