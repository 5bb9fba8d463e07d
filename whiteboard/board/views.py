"""What each kind of screen may see, computed on the server.

The clinical view is the whole record. The display view is an allow-list projection of it:
a wall screen in a corridor gets initials, precautions, readiness and symbols, and nothing that
identifies a patient (no names, NHS number, MRN, date of birth, ids, NEWS2, organism or free
text). Working from the clinical JSON means a frame replayed from the event log is masked by the
very same function as a live one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from whiteboard.board.model import DEFAULT_PUBLIC_ALERTS, Bed, Board, Flag, Patient, Stay

View = Literal["clinical", "display"]
VIEWS: frozenset[str] = frozenset({"clinical", "display"})

Json = dict[str, Any]

DISPLAY_DISCHARGE_KEYS = ("medically_optimised", "pathway", "tto_ready", "transport_booked")


def patient_json(patient: Patient) -> Json:
    return {
        "id": patient.id,
        "nhs_number": patient.nhs_number,
        "mrn": patient.mrn,
        "given_name": patient.given_name,
        "family_name": patient.family_name,
        "initials": patient.initials,
        "dob": patient.dob,
        "sex": patient.sex,
    }


def flag_json(flag: Flag) -> Json:
    return {"id": flag.id, "code": flag.code, "status": flag.status, "precaution": flag.precaution}


def flag_detail_json(flag: Flag) -> Json:
    """A flag as the flags API answers it: with who raised and cleared it, and when."""
    return {
        **flag_json(flag),
        "patient_id": flag.patient_id,
        "version": flag.version,
        "raised_by": flag.raised_by,
        "raised_at": flag.raised_at,
        "cleared_by": flag.cleared_by,
        "cleared_at": flag.cleared_at,
    }


def stay_json(stay: Stay) -> Json:
    d = stay.discharge
    return {
        "id": stay.id,
        "version": stay.version,
        "bed": stay.bed,
        "ward": stay.ward,
        "patient": patient_json(stay.patient),
        "admitted_at": stay.admitted_at,
        "consultant": stay.consultant,
        "named_nurse": stay.named_nurse,
        "edd": stay.edd,
        "day_status": stay.day_status,
        "news2": stay.news2,
        "alerts": list(stay.alerts),
        "discharge": {
            "medically_optimised": d.medically_optimised,
            "pathway": d.pathway,
            "tto_ready": d.tto_ready,
            "transport_booked": d.transport_booked,
            "home_first": d.home_first,
            "blockers": d.blockers,
        },
        "flags": [flag_json(f) for f in stay.flags if f.active],
    }


def bed_json(bed: Bed) -> Json:
    """A bed in the clinical view."""
    return {
        "code": bed.code,
        "bay": bed.bay,
        "kind": bed.kind,
        "state": bed.state,
        "version": bed.version,
        "stay": None if bed.stay is None else stay_json(bed.stay),
    }


def display_stay(stay: Mapping[str, Any], public_alerts: Iterable[str] = DEFAULT_PUBLIC_ALERTS) -> Json:
    """The allow-list: every key is named here; anything not named never leaves the server."""
    shown = frozenset(public_alerts)
    discharge = stay.get("discharge") or {}
    return {
        "patient": {"initials": stay["patient"]["initials"]},
        "consultant": stay.get("consultant"),
        "named_nurse": stay.get("named_nurse"),
        "edd": stay.get("edd"),
        "day_status": stay.get("day_status"),
        "discharge": {k: discharge.get(k) for k in DISPLAY_DISCHARGE_KEYS},
        "flags": [
            {"status": f["status"], "precaution": f["precaution"]}
            for f in stay.get("flags", ())
            if f["status"] != "cleared"
        ],
        "alerts": [a for a in stay.get("alerts", ()) if a in shown],
    }


def display_bed(bed: Mapping[str, Any], public_alerts: Iterable[str] = DEFAULT_PUBLIC_ALERTS) -> Json:
    stay = bed.get("stay")
    return {
        "code": bed["code"],
        "bay": bed["bay"],
        "kind": bed["kind"],
        "state": bed["state"],
        "version": bed["version"],
        "stay": None if stay is None else display_stay(stay, public_alerts),
    }


def ward_json(board: Board) -> Json:
    w = board.ward
    return {"code": w.code, "name": w.name, "site": w.site, "specialty": w.specialty}


def snapshot(board: Board, view: View) -> Json:
    """The ward as one screen sees it: the first frame on a socket and the snapshot API."""
    beds = [bed_json(b) for b in board.beds]
    if view == "display":
        return {
            "ward": ward_json(board),
            "seq": board.seq,
            "beds": [display_bed(b, board.ward.public_alerts) for b in beds],
            # Stays without a bed carry names and nothing a wall needs: a display shows none.
            "unplaced": [],
        }
    return {
        "ward": ward_json(board),
        "seq": board.seq,
        "beds": beds,
        "unplaced": [stay_json(s) for s in board.unplaced],
    }


def change_frame(
    ward: str,
    seq: int,
    at: str,
    payload: Mapping[str, Any],
    view: View,
    public_alerts: Iterable[str] = DEFAULT_PUBLIC_ALERTS,
) -> Json:
    """One `change` frame for one view, from an event's stored (clinical) payload."""
    frame: Json = {"type": "change", "ward": ward, "seq": seq, "at": at}
    bed = payload.get("bed")
    if bed is not None:
        frame["bed"] = bed if view == "clinical" else display_bed(bed, public_alerts)
    unplaced = payload.get("unplaced")
    if unplaced is not None:
        frame["unplaced"] = unplaced if view == "clinical" else []
    return frame
