"""The ADT feed's shell: raw HL7 in, ACK out, the board changed in between (or not at all).

One message is one transaction: duplicate check, patient lookup, the pure feed rules, the
state rows and events, the control ID and the patient's last feed time all commit together,
and only then is the ACK built. Whatever goes wrong, the sender gets an ACK (AR or AE with
the reason) and nothing half-applied is left behind.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from whiteboard.board.commands import Scene
from whiteboard.board.feed import FeedCommand, decide_feed
from whiteboard.board.model import Patient, Stay
from whiteboard.errors import Conflict, NotFound, WhiteboardError
from whiteboard.hl7.ack import accept_ack, build_ack, refusal_ack
from whiteboard.hl7.parse import AdtMessage, Hl7Refused, parse_adt
from whiteboard.metrics import METRICS
from whiteboard.service import BoardService, new_id
from whiteboard.store import rows
from whiteboard.store.tables import beds, hl7_messages, patients, stays, wards
from whiteboard.types import iso_z, now_z

log = logging.getLogger("whiteboard.hl7")

#: ERR-3 codes (HL7 table 0357) for the errors the board raises.
ERROR_CODES = {"not_found": "204", "conflict": "207", "invalid": "102"}


class AlreadyApplied(Exception):
    """The same control ID from the same sender was applied before: acknowledge, change nothing."""


def sender_of(adt: AdtMessage) -> str:
    return f"{adt.sending_app}|{adt.sending_facility}"


class Feed:
    def __init__(self, service: BoardService) -> None:
        self.service = service
        self.repo = service.repo

    async def receive(self, raw: bytes) -> str:
        """Apply one ADT message; return its ACK. Never raises for anything the sender sent."""
        try:
            # Parsing a pathological message can take a while: keep it off the event loop.
            adt = await asyncio.to_thread(parse_adt, raw)
        except Hl7Refused as refused:
            METRICS.hl7_messages.labels(refused.ack_code).inc()
            return refusal_ack(refused)
        try:
            await self.apply(adt)
        except AlreadyApplied:
            METRICS.hl7_messages.labels("AA").inc()
            return accept_ack(adt, "duplicate: already applied")
        except WhiteboardError as exc:
            METRICS.hl7_messages.labels(exc.hl7_ack).inc()
            return build_ack(
                exc.hl7_ack,  # type: ignore[arg-type]
                message=adt.message,
                control_id=adt.control_id,
                reason=exc.message,
                error_code=ERROR_CODES.get(exc.code, "207"),
            )
        METRICS.hl7_messages.labels("AA").inc()
        return accept_ack(adt)

    async def apply(self, adt: AdtMessage) -> None:
        actor = f"hl7:{sender_of(adt)}:{adt.control_id}"
        event_time = iso_z(adt.event_time)
        facts: dict[str, Any] = {}

        async def find_wards(conn: AsyncConnection) -> set[str]:
            facts.clear()
            facts.update(await self._facts(conn, adt))
            return set(facts["wards"])

        async def plan(conn: AsyncConnection, _scene: Scene) -> FeedCommand:
            await self._refuse_duplicate(conn, adt)
            found: Patient | None = facts["patient"]
            late = found is not None and facts["feed_time"] is not None and event_time < facts["feed_time"]
            return FeedCommand(
                event=adt.event,
                message_id=f"{sender_of(adt)}:{adt.control_id}",
                patient=self._patient(adt, found),
                new_stay_id=new_id("s"),
                open_stay_id=facts["open_stay"],
                discharged=facts["discharged"],
                ward=adt.location.ward if adt.location else None,
                bed=adt.location.bed if adt.location else None,
                consultant=adt.attending,
                edd=adt.edd,
                discharge_time=None if adt.discharge_time is None else iso_z(adt.discharge_time),
                out_of_order=late,
            )

        async def after(conn: AsyncConnection) -> None:
            await conn.execute(
                hl7_messages.insert().values(
                    sender=sender_of(adt), control_id=adt.control_id, received_at=now_z(), event=adt.event
                )
            )
            patient_id = facts["patient"].id if facts["patient"] else None
            if patient_id is None:
                patient_id = await self._patient_id_by(conn, adt)
            if patient_id is not None:
                await conn.execute(
                    update(patients)
                    .where(patients.c.id == patient_id)
                    .where((patients.c.feed_time.is_(None)) | (patients.c.feed_time < event_time))
                    .values(feed_time=event_time)
                )

        committed = await self.repo.run(actor, now_z(), find_wards, plan, decider=decide_feed, after=after)
        await self.service.announce(committed.records)

    # --- lookups inside the transaction --------------------------------------------------------

    async def _facts(self, conn: AsyncConnection, adt: AdtMessage) -> dict[str, Any]:
        """The patient, their open stay, and every ward this message may touch."""
        found = await self.repo.find_patient(conn, adt.nhs_number, adt.mrn)
        if adt.nhs_number and found is not None and found.nhs_number and found.nhs_number != adt.nhs_number:
            raise Conflict(f"PID-3: MRN {adt.mrn} belongs to a patient with a different NHS number")
        if found is None and adt.event != "A01":
            raise NotFound(f"{adt.event}: no patient on the board with this NHS number or MRN")
        ward_set: set[str] = set()
        if adt.location is not None:
            if adt.location.bed:
                ward_set.add(await self._ward_of_bed(conn, adt.location.bed))
            elif adt.event in ("A01", "A02"):
                raise NotFound("PV1-3: no bed given")
            elif not await self._ward_exists(conn, adt.location.ward):
                raise NotFound(f"PV1-3: ward {adt.location.ward} is not known")
        open_stay: str | None = None
        discharged: Stay | None = None
        feed_time: str | None = None
        if found is not None:
            feed_time = (
                await conn.execute(select(patients.c.feed_time).where(patients.c.id == found.id))
            ).scalar()
            row = (
                await conn.execute(
                    select(stays.c.id, stays.c.ward_code, stays.c.previous).where(
                        stays.c.patient_id == found.id, stays.c.is_open
                    )
                )
            ).first()
            if row is not None:
                open_stay = row.id
                ward_set.add(row.ward_code)
                previous = row.previous or {}
                if adt.event == "A12" and previous.get("bed"):
                    ward_set.add(await self._ward_of_bed(conn, previous["bed"]))
            elif adt.event == "A13":
                discharged = await self._last_discharged(conn, found.id)
                if discharged is not None and discharged.bed is not None and not adt.location:
                    ward_set.add(await self._ward_of_bed(conn, discharged.bed))
        return {
            "patient": found,
            "open_stay": open_stay,
            "discharged": discharged,
            "feed_time": feed_time,
            "wards": sorted(ward_set),
        }

    async def _refuse_duplicate(self, conn: AsyncConnection, adt: AdtMessage) -> None:
        seen = await conn.execute(
            select(hl7_messages.c.control_id).where(
                hl7_messages.c.sender == sender_of(adt), hl7_messages.c.control_id == adt.control_id
            )
        )
        if seen.first() is not None:
            raise AlreadyApplied()

    async def _last_discharged(self, conn: AsyncConnection, patient_id: str) -> Stay | None:
        found = await rows.load_stays(
            conn, (stays.c.patient_id == patient_id) & ~stays.c.is_open & (stays.c.end_reason == "discharged")
        )
        if not found:
            return None
        ended = {
            r.id: r.ended_at
            for r in await conn.execute(
                select(stays.c.id, stays.c.ended_at).where(stays.c.patient_id == patient_id)
            )
        }
        return max(found, key=lambda s: ended.get(s.id) or "")

    @staticmethod
    async def _ward_of_bed(conn: AsyncConnection, code: str) -> str:
        ward = (await conn.execute(select(beds.c.ward_code).where(beds.c.code == code))).scalar()
        if ward is None:
            raise NotFound(f"PV1-3: bed {code} is not known")
        return str(ward)

    @staticmethod
    async def _ward_exists(conn: AsyncConnection, code: str) -> bool:
        return (await conn.execute(select(wards.c.code).where(wards.c.code == code))).first() is not None

    async def _patient_id_by(self, conn: AsyncConnection, adt: AdtMessage) -> str | None:
        found = await self.repo.find_patient(conn, adt.nhs_number, adt.mrn)
        return None if found is None else found.id

    @staticmethod
    def _patient(adt: AdtMessage, found: Patient | None) -> Patient:
        details: dict[str, Any] = {
            "mrn": adt.mrn or (found.mrn if found else ""),
            "given_name": adt.given_name or (found.given_name if found else ""),
            "family_name": adt.family_name or (found.family_name if found else ""),
            "dob": adt.dob or (found.dob if found else None),
            "sex": adt.sex if adt.sex != "unknown" or found is None else found.sex,
        }
        if found is None:
            return Patient(id=new_id("p"), nhs_number=adt.nhs_number, **details)
        return replace(found, nhs_number=adt.nhs_number or found.nhs_number, **details)
