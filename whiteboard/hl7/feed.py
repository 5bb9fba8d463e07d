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
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import DBAPIError

from whiteboard.board.commands import Scene
from whiteboard.board.feed import FeedCommand, decide_feed
from whiteboard.board.model import Patient, Stay
from whiteboard.errors import Conflict, Invalid, NotFound, WhiteboardError
from whiteboard.hl7.ack import accept_ack, build_ack, refusal_ack
from whiteboard.hl7.parse import AdtMessage, Hl7Refused, parse_adt
from whiteboard.metrics import METRICS
from whiteboard.service import BoardService, new_id
from whiteboard.store import rows
from whiteboard.store import statements as st
from whiteboard.store.direct import run
from whiteboard.store.tables import stays, wards
from whiteboard.types import iso_z, now_z, utc_now

log = logging.getLogger("whiteboard.hl7")

#: Messages up to this size are parsed on the event loop (well under a millisecond for a real
#: ADT message, usually a few hundred bytes); bigger ones go to a worker thread so a
#: pathological one cannot hold up sockets. Two thread hand-offs per message were a large
#: part of a backlog replay's time.
INLINE_PARSE_BYTES = 16 * 1024

#: ERR-3 codes (HL7 table 0357) for the errors the board raises.
ERROR_CODES = {"not_found": "204", "conflict": "207", "invalid": "102"}


#: How far ahead of our clock an event time may be (clock skew between systems). Further out,
#: applying it would make every real message for the patient look "older" and be ignored.
FUTURE_SLACK = timedelta(hours=24)
EARLIEST_EVENT = datetime(1900, 1, 1, tzinfo=UTC)


def check_event_time(adt: AdtMessage) -> None:
    """Refuse (AE) an event time no real admission can have: it would freeze the patient."""
    if adt.event_time > utc_now() + FUTURE_SLACK:
        raise Invalid("EVN-2: the event time is more than a day in the future; check the sending clock")
    if adt.event_time < EARLIEST_EVENT:
        raise Invalid("EVN-2: the event time is before 1900")


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
            if len(raw) <= INLINE_PARSE_BYTES:
                adt = parse_adt(raw)
            else:
                adt = await asyncio.to_thread(parse_adt, raw)
        except Hl7Refused as refused:
            METRICS.hl7_messages.labels(refused.ack_code).inc()
            return refusal_ack(refused)
        try:
            await self.apply(adt)
        except AlreadyApplied:
            METRICS.hl7_messages.labels("AA").inc()
            return accept_ack(adt, "duplicate: already applied")
        except DBAPIError as exc:
            # Input our checks let through but the database refused: never leave the sender
            # without an answer, and never log the values (they are patient data).
            log.error(
                "HL7 %s from %s could not be stored: %s",
                adt.control_id,
                sender_of(adt),
                type(exc.orig).__name__,
            )
            METRICS.hl7_messages.labels("AE").inc()
            return build_ack(
                "AE", message=adt.message, control_id=adt.control_id, reason="the message could not be stored"
            )
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
        check_event_time(adt)
        actor = f"hl7:{sender_of(adt)}:{adt.control_id}"
        event_time = iso_z(adt.event_time)
        facts: dict[str, Any] = {}

        def find_wards(conn: Connection) -> set[str]:
            facts.clear()
            facts.update(self._facts(conn, adt))
            return set(facts["wards"])

        def plan(conn: Connection, _scene: Scene) -> FeedCommand:
            # Recording the control ID is the duplicate check: the row is there already, or the
            # message is new. Either way it commits with the change, or not at all.
            remember = {
                "sender": sender_of(adt),
                "control_id": adt.control_id,
                "received_at": now_z(),
                "event": adt.event,
            }
            if run(conn, st.record_message(conn.dialect.name), remember).rowcount == 0:
                raise AlreadyApplied()
            found: Patient | None = facts["patient"]
            late = found is not None and facts["feed_time"] is not None and event_time < facts["feed_time"]
            patient = self._patient(adt, found)
            facts["patient_id"] = patient.id
            return FeedCommand(
                event=adt.event,
                message_id=f"{sender_of(adt)}:{adt.control_id}",
                patient=patient,
                new_stay_id=new_id("s"),
                open_stay_id=facts["open_stay"],
                discharged=facts["discharged"],
                ward=adt.location.ward if adt.location else None,
                bed=adt.location.bed if adt.location else None,
                consultant=adt.attending,
                edd=adt.edd,
                discharge_time=None if adt.discharge_time is None else iso_z(adt.discharge_time),
                out_of_order=late,
                last_ward=facts["last_ward"],
            )

        def after(conn: Connection) -> None:
            # The patient row exists by now (a new patient was written with the outcome), unless
            # nothing was kept of them (a late message for someone never admitted).
            run(conn, st.SET_FEED_TIME, {"p_id": facts["patient_id"], "p_time": event_time})

        committed = await self.repo.run(actor, now_z(), find_wards, plan, decider=decide_feed, after=after)
        await self.service.announce(committed.records)

    # --- lookups inside the transaction --------------------------------------------------------

    def _facts(self, conn: Connection, adt: AdtMessage) -> dict[str, Any]:
        """The patient, their open stay, and every ward this message may touch."""
        row = self.repo.find_patient_row(conn, adt.nhs_number, adt.mrn)
        found = None if row is None else rows.patient_from(row)
        if adt.nhs_number and found is not None and found.nhs_number and found.nhs_number != adt.nhs_number:
            raise Conflict(f"PID-3: MRN {adt.mrn} belongs to a patient with a different NHS number")
        if found is None and adt.event != "A01":
            raise NotFound(f"{adt.event}: no patient on the board with this NHS number or MRN")
        ward_set: set[str] = set()
        if adt.location is not None:
            if adt.location.bed:
                ward_set.add(self._ward_of_bed(conn, adt.location.bed))
            elif adt.event in ("A01", "A02"):
                raise NotFound("PV1-3: no bed given")
            elif not self._ward_exists(conn, adt.location.ward):
                raise NotFound(f"PV1-3: ward {adt.location.ward} is not known")
            else:
                ward_set.add(adt.location.ward)
        open_stay: str | None = None
        discharged: Stay | None = None
        feed_time: str | None = None
        last_ward: str | None = None
        if found is not None:
            assert row is not None
            feed_time = row["feed_time"]
            stay = run(conn, st.OPEN_STAY_OF_PATIENT, {"p_id": found.id}).first()
            if stay is not None:
                open_stay, ward, previous = stay
                ward_set.add(ward)
                if adt.event == "A12" and (previous or {}).get("bed"):
                    ward_set.add(self._ward_of_bed(conn, previous["bed"]))
            else:
                last_ward = run(conn, st.LAST_WARD_OF_PATIENT, {"p_id": found.id}).scalar()
                if last_ward is not None:
                    ward_set.add(last_ward)  # where a late message about them is recorded
            if stay is None and adt.event == "A13":
                discharged = self._last_discharged(conn, found.id)
                if discharged is not None and discharged.bed is not None and not adt.location:
                    ward_set.add(self._ward_of_bed(conn, discharged.bed))
        return {
            "patient": found,
            "open_stay": open_stay,
            "discharged": discharged,
            "feed_time": feed_time,
            "last_ward": last_ward,
            "wards": sorted(ward_set),
        }

    def _last_discharged(self, conn: Connection, patient_id: str) -> Stay | None:
        found = rows.load_stays(
            conn, (stays.c.patient_id == patient_id) & ~stays.c.is_open & (stays.c.end_reason == "discharged")
        )
        if not found:
            return None
        ended = {
            r.id: r.ended_at
            for r in conn.execute(
                select(stays.c.id, stays.c.ended_at).where(stays.c.patient_id == patient_id)
            )
        }
        return max(found, key=lambda s: ended.get(s.id) or "")

    def _ward_of_bed(self, conn: Connection, code: str) -> str:
        try:
            return self.repo.ward_of_bed(conn, code)
        except NotFound:
            raise NotFound(f"PV1-3: bed {code} is not known") from None

    @staticmethod
    def _ward_exists(conn: Connection, code: str) -> bool:
        return (conn.execute(select(wards.c.code).where(wards.c.code == code))).first() is not None

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
