"""A small fake patient administration system: realistic ADT messages for the demo's feed,
the benchmarks and the tests. It writes ER7 text the way a real PAS does (PID-3 repetitions
with NHS and MR identifiers, PV1-3 `ward^bay^bed`, PV1-7 attending, PV2-9 EDD)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime

from whiteboard.service import PatientDetails

_counter = itertools.count(1)

SEX_CODES = {"male": "M", "female": "F", "other": "O", "unknown": "U"}


@dataclass(frozen=True, slots=True)
class Bed:
    ward: str
    bay: str
    code: str

    @property
    def pv1(self) -> str:
        return f"{self.ward}^{self.bay}^{self.code}"


def hl7_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S") + "+0000"


def _escape(text: str) -> str:
    """Escape the encoding characters a name may contain (O'Brien is fine; A^B is not)."""
    out = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    return out.replace("&", "\\T\\").replace("~", "\\R\\")


def adt(
    event: str,
    patient: PatientDetails,
    *,
    bed: Bed | None = None,
    prior: Bed | None = None,
    attending: str | None = None,
    edd: str | None = None,
    when: datetime | None = None,
    control_id: str | None = None,
    sender: str = "FAKEPAS",
    facility: str = "DEMO",
    version: str = "2.4",
) -> str:
    """One ADT message, segments ending in CR."""
    moment = when or datetime.now(UTC)
    control = control_id or f"{sender}{moment:%Y%m%d%H%M%S}{next(_counter):06d}"
    ids = []
    if patient.nhs_number:
        ids.append(f"{patient.nhs_number}^^^NHS^NH")
    ids.append(f"{patient.mrn}^^^{facility}^MR")
    dob = (patient.dob or "").replace("-", "")
    doctor = ""
    if attending:
        parts = attending.split()
        prefix, given, family = (
            (parts[0], " ".join(parts[1:-1]), parts[-1]) if len(parts) >= 3 else ("", "", attending)
        )
        doctor = (
            f"C{abs(hash(attending)) % 100000:05d}^{_escape(family)}^{_escape(given)}^^^{_escape(prefix)}"
        )
    pv1 = ["PV1", "1", "I", bed.pv1 if bed else "", "", "", prior.pv1 if prior else "", doctor]
    if event == "A03":
        pv1 += [""] * (45 - len(pv1)) + [hl7_time(moment)]
    segments = [
        f"MSH|^~\\&|{sender}|{facility}|WHITEBOARD|{facility}|{hl7_time(moment)}||ADT^{event}^ADT_{event}|"
        f"{control}|P|{version}",
        f"EVN|{event}|{hl7_time(moment)}",
        f"PID|1||{'~'.join(ids)}||{_escape(patient.family_name)}^{_escape(patient.given_name)}||{dob}|"
        f"{SEX_CODES.get(patient.sex, 'U')}",
        "|".join(pv1),
    ]
    if edd:
        segments.append("PV2" + "|" * 9 + edd.replace("-", ""))
    return "\r".join(segments) + "\r"
