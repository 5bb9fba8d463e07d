"""Rows to board values and back. The only place that knows both the tables and the model.

The loaders are synchronous, taking a SQLAlchemy `Connection`: the write path runs whole
transactions in one go (a worker thread for SQLite, `run_sync` for PostgreSQL), and async
readers call them through `AsyncConnection.run_sync`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Connection, Row, bindparam, select

from whiteboard.board.model import (
    DEFAULT_PUBLIC_ALERTS,
    Bed,
    BedKind,
    BedState,
    Board,
    DayStatus,
    Discharge,
    Flag,
    FlagStatus,
    Patient,
    Placement,
    Precaution,
    Sex,
    Stay,
    Ward,
)
from whiteboard.store.tables import beds, flags, patients, stays, wards


def ward_from(row: Row[Any] | Mapping[str, Any]) -> Ward:
    m = row._mapping if isinstance(row, Row) else row
    alerts = m["public_alerts"]
    return Ward(
        code=m["code"],
        name=m["name"],
        site=m["site_code"],
        specialty=m["specialty"] or "",
        public_alerts=frozenset(alerts) if alerts is not None else DEFAULT_PUBLIC_ALERTS,
    )


def patient_from(m: Mapping[Any, Any]) -> Patient:
    return Patient(
        id=m["id"],
        nhs_number=m["nhs_number"],
        mrn=m["mrn"],
        given_name=m["given_name"],
        family_name=m["family_name"],
        dob=m["dob"],
        sex=cast(Sex, m["sex"]),
    )


def patient_row(p: Patient) -> dict[str, Any]:
    return {
        "id": p.id,
        "nhs_number": p.nhs_number,
        "mrn": p.mrn,
        "given_name": p.given_name,
        "family_name": p.family_name,
        "dob": p.dob,
        "sex": p.sex,
    }


def flag_from(m: Mapping[Any, Any]) -> Flag:
    return Flag(
        id=m["id"],
        patient_id=m["patient_id"],
        code=m["code"],
        status=cast(FlagStatus, m["status"]),
        precaution=cast(Precaution, m["precaution"]),
        raised_by=m["raised_by"],
        raised_at=m["raised_at"],
        version=m["version"],
        cleared_by=m["cleared_by"],
        cleared_at=m["cleared_at"],
    )


def flag_row(f: Flag) -> dict[str, Any]:
    return {
        "id": f.id,
        "patient_id": f.patient_id,
        "code": f.code,
        "status": f.status,
        "precaution": f.precaution,
        "version": f.version,
        "raised_by": f.raised_by,
        "raised_at": f.raised_at,
        "cleared_by": f.cleared_by,
        "cleared_at": f.cleared_at,
    }


def stay_from(m: Mapping[Any, Any], patient: Patient, active_flags: Sequence[Flag]) -> Stay:
    prev = m["previous"]
    d = m["discharge"] or {}
    return Stay(
        id=m["id"],
        version=m["version"],
        patient=patient,
        ward=m["ward_code"],
        bed=m["bed_code"],
        admitted_at=m["admitted_at"],
        consultant=m["consultant"],
        named_nurse=m["named_nurse"],
        edd=m["edd"],
        day_status=cast("DayStatus | None", m["day_status"]),
        news2=m["news2"],
        alerts=tuple(m["alerts"] or ()),
        discharge=Discharge(**d),
        flags=tuple(active_flags),
        previous=None if prev is None else Placement(**prev),
    )


def stay_row(s: Stay) -> dict[str, Any]:
    d = s.discharge
    return {
        "id": s.id,
        "patient_id": s.patient.id,
        "ward_code": s.ward,
        "bed_code": s.bed,
        "is_open": True,
        "version": s.version,
        "admitted_at": s.admitted_at,
        "consultant": s.consultant,
        "named_nurse": s.named_nurse,
        "edd": s.edd,
        "day_status": s.day_status,
        "news2": s.news2,
        "alerts": list(s.alerts),
        "discharge": {
            "medically_optimised": d.medically_optimised,
            "pathway": d.pathway,
            "tto_ready": d.tto_ready,
            "transport_booked": d.transport_booked,
            "home_first": d.home_first,
            "blockers": d.blockers,
        },
        "previous": None
        if s.previous is None
        else {"bed": s.previous.bed, "ward": s.previous.ward, "bed_state": s.previous.bed_state},
    }


# A board is read whole whenever another process has changed it since this one cached it,
# so its statements are built once, not per read.
_ACTIVE_FLAGS = (
    select(flags)
    .where(flags.c.patient_id.in_(bindparam("patient_ids", expanding=True)), flags.c.status != "cleared")
    .order_by(flags.c.raised_at, flags.c.id)
)
_STAYS_WITH_PATIENTS = (
    select(stays, *[c.label(f"p_{c.name}") for c in patients.c])
    .join(patients, patients.c.id == stays.c.patient_id)
    .order_by(stays.c.admitted_at, stays.c.id)
)
_OPEN_STAYS_OF_WARD = _STAYS_WITH_PATIENTS.where(stays.c.ward_code == bindparam("ward"), stays.c.is_open)
_WARD = select(wards).where(wards.c.code == bindparam("ward"))
_BEDS_OF_WARD = (
    select(beds).where(beds.c.ward_code == bindparam("ward")).order_by(beds.c.position, beds.c.code)
)


def active_flags_of(conn: Connection, patient_ids: Sequence[str]) -> dict[str, list[Flag]]:
    out: dict[str, list[Flag]] = {pid: [] for pid in patient_ids}
    if not patient_ids:
        return out
    rows = conn.execute(_ACTIVE_FLAGS, {"patient_ids": list(patient_ids)})
    for row in rows:
        out[row.patient_id].append(flag_from(row._mapping))
    return out


def load_stays(conn: Connection, condition: Any) -> list[Stay]:
    """Stays matching `condition`, each with its patient and the patient's active flags."""
    return _stays_from(conn, conn.execute(_STAYS_WITH_PATIENTS.where(condition)).all())


def _stays_from(conn: Connection, rows: Sequence[Row[Any]]) -> list[Stay]:
    flag_map = active_flags_of(conn, [r.patient_id for r in rows])
    out = []
    for row in rows:
        m = row._mapping
        patient = patient_from({c.name: m[f"p_{c.name}"] for c in patients.c})
        out.append(stay_from(m, patient, flag_map[patient.id]))
    return out


def load_board(conn: Connection, ward_code: str) -> Board | None:
    ward_row = conn.execute(_WARD, {"ward": ward_code}).first()
    if ward_row is None:
        return None
    open_stays = _stays_from(conn, conn.execute(_OPEN_STAYS_OF_WARD, {"ward": ward_code}).all())
    by_bed = {s.bed: s for s in open_stays if s.bed is not None}
    bed_rows = conn.execute(_BEDS_OF_WARD, {"ward": ward_code})
    board_beds = tuple(
        Bed(
            code=b.code,
            ward=b.ward_code,
            bay=b.bay,
            kind=cast(BedKind, b.kind),
            state=cast(BedState, b.state),
            version=b.version,
            stay=by_bed.get(b.code) if b.stay_id else None,
        )
        for b in bed_rows
    )
    unplaced = tuple(s for s in open_stays if s.bed is None)
    return Board(ward=ward_from(ward_row), seq=ward_row.seq, beds=board_beds, unplaced=unplaced)
