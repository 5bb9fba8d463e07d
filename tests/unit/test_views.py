"""The clinical and display views: exact key sets (DESIGN 4.2) and the display allow-list.

A wall display must never receive identifying data, so these tests build a stay with every field
filled in and scan the serialised display output for each sensitive value.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from tests.unit.test_rules import make_board, make_flag, make_patient
from whiteboard.board.model import ALERTS, DEFAULT_PUBLIC_ALERTS, Bed, Board, Discharge, Flag, Patient, Stay
from whiteboard.board.views import (
    bed_json,
    change_frame,
    display_bed,
    display_stay,
    flag_json,
    snapshot,
    stay_json,
)

# DESIGN 4.2, written out again here so a change to either side shows up.
STAY_KEYS = {
    "id",
    "version",
    "bed",
    "ward",
    "patient",
    "admitted_at",
    "consultant",
    "named_nurse",
    "edd",
    "day_status",
    "news2",
    "alerts",
    "discharge",
    "flags",
}
PATIENT_KEYS = {"id", "nhs_number", "mrn", "given_name", "family_name", "initials", "dob", "sex"}
DISCHARGE_KEYS = {"medically_optimised", "pathway", "tto_ready", "transport_booked", "home_first", "blockers"}
FLAG_KEYS = {"id", "code", "status", "precaution"}
BED_KEYS = {"code", "bay", "kind", "state", "version", "stay"}
DISPLAY_STAY_KEYS = {
    "patient",
    "consultant",
    "named_nurse",
    "edd",
    "day_status",
    "discharge",
    "flags",
    "alerts",
}
DISPLAY_DISCHARGE_KEYS = {"medically_optimised", "pathway", "tto_ready", "transport_booked"}
SNAPSHOT_KEYS = {"ward", "seq", "beds", "unplaced"}

GIVEN = "Bartholomew"
FAMILY = "Featherstonehaugh"
NHS = "9434765919"
MRN = "RGH7734521"
DOB = "1938-07-14"
BLOCKERS = "Awaiting social worker Quigley-Smythe re nursing home place"
NEWS2 = 13


def full_patient() -> Patient:
    return make_patient(
        "pat-91c2", nhs_number=NHS, mrn=MRN, given_name=GIVEN, family_name=FAMILY, dob=DOB, sex="female"
    )


def full_flags() -> tuple[Flag, ...]:
    return (
        make_flag("flag-aa1", patient_id="pat-91c2", code="MRSA", status="confirmed", precaution="contact"),
        make_flag(
            "flag-bb2", patient_id="pat-91c2", code="NOROVIRUS", status="suspected", precaution="droplet"
        ),
    )


def full_stay(ward: str = "J12", bed: str | None = "J12-B1-1") -> Stay:
    return Stay(
        id="stay-7f3a",
        version=4,
        patient=full_patient(),
        ward=ward,
        bed=bed,
        admitted_at="2026-02-27T08:15:00.000Z",
        consultant="Dr A Patel",
        named_nurse="RN Okafor",
        edd="2026-03-05",
        day_status="red",
        news2=NEWS2,
        alerts=ALERTS,
        discharge=Discharge(
            medically_optimised=True,
            pathway=2,
            tto_ready=True,
            transport_booked=False,
            home_first=True,
            blockers=BLOCKERS,
        ),
        flags=full_flags(),
    )


def full_bed(stay: Stay | None = None) -> Bed:
    return Bed(
        code="J12-B1-1",
        ward="J12",
        bay="B1",
        kind="side_room",
        state="occupied",
        version=7,
        stay=full_stay() if stay is None else stay,
    )


SECRETS = (
    GIVEN,
    FAMILY,
    NHS,
    "943 476 5919",
    MRN,
    DOB,
    BLOCKERS,
    "Quigley",
    "MRSA",
    "NOROVIRUS",
    "stay-7f3a",
    "pat-91c2",
    "flag-aa1",
    "flag-bb2",
    "2026-02-27T08:15",
    str(NEWS2),
    '"news2"',
    '"id"',
    '"sex"',
    '"mrn"',
    '"dob"',
    '"nhs_number"',
    '"given_name"',
    '"family_name"',
    '"code":"MRSA"',
    '"blockers"',
    '"home_first"',
    '"admitted_at"',
    "female",
    "dnacpr",
    "learning_disability",
    "allergy",
)


def assert_nothing_identifying(shown: Any) -> None:
    text = orjson.dumps(shown).decode()
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} reached a display: {text}"


# --- the display allow-list ------------------------------------------------------------------


def test_display_bed_carries_none_of_the_sensitive_values() -> None:
    shown = display_bed(bed_json(full_bed()))
    assert_nothing_identifying(shown)
    assert shown["stay"]["patient"] == {"initials": "BF"}


def test_display_bed_has_exactly_the_allowed_keys() -> None:
    shown = display_bed(bed_json(full_bed()))
    assert set(shown) == BED_KEYS
    stay = shown["stay"]
    assert set(stay) == DISPLAY_STAY_KEYS
    assert set(stay["patient"]) == {"initials"}
    assert set(stay["discharge"]) == DISPLAY_DISCHARGE_KEYS
    assert stay["flags"]
    assert all(set(f) == {"status", "precaution"} for f in stay["flags"])


def test_display_bed_values() -> None:
    shown = display_bed(bed_json(full_bed()))
    assert {k: shown[k] for k in BED_KEYS - {"stay"}} == {
        "code": "J12-B1-1",
        "bay": "B1",
        "kind": "side_room",
        "state": "occupied",
        "version": 7,
    }
    assert shown["stay"] == {
        "patient": {"initials": "BF"},
        "consultant": "Dr A Patel",
        "named_nurse": "RN Okafor",
        "edd": "2026-03-05",
        "day_status": "red",
        "discharge": {
            "medically_optimised": True,
            "pathway": 2,
            "tto_ready": True,
            "transport_booked": False,
        },
        "flags": [
            {"status": "confirmed", "precaution": "contact"},
            {"status": "suspected", "precaution": "droplet"},
        ],
        "alerts": ["falls_risk", "nil_by_mouth", "dementia", "pressure_ulcer_risk"],
    }


def test_display_keeps_only_the_default_public_alerts() -> None:
    assert {"falls_risk", "dementia", "nil_by_mouth", "pressure_ulcer_risk"} == DEFAULT_PUBLIC_ALERTS
    for alert in ALERTS:
        stay = replace(full_stay(), alerts=(alert,))
        shown = display_stay(stay_json(stay))
        assert shown["alerts"] == ([alert] if alert in DEFAULT_PUBLIC_ALERTS else [])


def test_a_ward_may_choose_its_own_public_alerts() -> None:
    chosen = frozenset({"dnacpr", "oxygen"})
    board = make_board("J12", ("available",), public_alerts=chosen)
    board = board.with_bed(replace(full_bed(), ward="J12"))
    (shown,) = snapshot(board, "display")["beds"]
    assert shown["stay"]["alerts"] == ["dnacpr", "oxygen"]
    assert display_bed(bed_json(full_bed()), chosen)["stay"]["alerts"] == ["dnacpr", "oxygen"]
    assert display_bed(bed_json(full_bed()), ())["stay"]["alerts"] == []


def test_display_never_shows_a_cleared_flag() -> None:
    clinical = stay_json(full_stay())
    clinical["flags"].append({"id": "flag-cc3", "code": "CPE", "status": "cleared", "precaution": "contact"})
    shown = display_stay(clinical)
    assert shown["flags"] == [
        {"status": "confirmed", "precaution": "contact"},
        {"status": "suspected", "precaution": "droplet"},
    ]
    only_cleared = replace(full_stay(), flags=(replace(full_flags()[0], status="cleared"),))
    assert stay_json(only_cleared)["flags"] == []
    assert display_stay(stay_json(only_cleared))["flags"] == []


def test_display_drops_unknown_keys_a_stored_payload_might_carry() -> None:
    clinical = bed_json(full_bed())
    clinical["secret"] = FAMILY
    clinical["stay"]["notes"] = FAMILY
    clinical["stay"]["patient"]["address"] = FAMILY
    clinical["stay"]["discharge"]["social_worker"] = FAMILY
    clinical["stay"]["flags"][0]["organism"] = "MRSA"
    shown = display_bed(clinical)
    assert_nothing_identifying(shown)
    assert set(shown) == BED_KEYS
    assert set(shown["stay"]) == DISPLAY_STAY_KEYS


def test_an_empty_bed_on_a_display() -> None:
    bed = Bed(code="J12-B1-2", ward="J12", bay="B1", kind="bay", state="dirty", version=3)
    assert display_bed(bed_json(bed)) == {
        "code": "J12-B1-2",
        "bay": "B1",
        "kind": "bay",
        "state": "dirty",
        "version": 3,
        "stay": None,
    }


def board_with_everything() -> Board:
    waiting = replace(full_stay(bed=None), id="stay-8e1b")
    board = make_board("J12", ("available", "closed"), seq=12, unplaced=(waiting,))
    return board.with_bed(full_bed())


def test_display_snapshot_hides_the_unplaced_list() -> None:
    board = board_with_everything()
    shown = snapshot(board, "display")
    assert set(shown) == SNAPSHOT_KEYS
    assert shown["unplaced"] == []
    assert shown["seq"] == 12
    assert shown["ward"] == {"code": "J12", "name": "Ward J12", "site": "RGH", "specialty": "Medicine"}
    assert [b["code"] for b in shown["beds"]] == ["J12-B1-1", "J12-B1-2"]
    assert_nothing_identifying(shown)
    assert "stay-8e1b" not in orjson.dumps(shown).decode()


def test_display_change_frames_carry_no_identifying_data() -> None:
    board = board_with_everything()
    payload: dict[str, Any] = {
        "bed": bed_json(full_bed()),
        "unplaced": [stay_json(s) for s in board.unplaced],
    }
    frame = change_frame("J12", 4, "2026-03-01T10:00:00.000Z", payload, "display")
    assert frame["unplaced"] == []
    assert frame["bed"] == display_bed(payload["bed"])
    assert frame["bed"] == snapshot(board, "display")["beds"][0]
    assert {k: frame[k] for k in ("type", "ward", "seq", "at")} == {
        "type": "change",
        "ward": "J12",
        "seq": 4,
        "at": "2026-03-01T10:00:00.000Z",
    }
    assert_nothing_identifying(frame)


def test_change_frame_for_an_unplaced_only_event() -> None:
    payload = {"unplaced": [stay_json(full_stay(bed=None))]}
    display = change_frame("J12", 2, "2026-03-01T10:00:00.000Z", payload, "display")
    assert "bed" not in display
    assert display["unplaced"] == []
    clinical = change_frame("J12", 2, "2026-03-01T10:00:00.000Z", payload, "clinical")
    assert clinical["unplaced"] == payload["unplaced"]
    assert "bed" not in clinical


def test_change_frame_uses_the_wards_public_alerts() -> None:
    payload = {"bed": bed_json(full_bed())}
    frame = change_frame("J12", 1, "2026-03-01T10:00:00.000Z", payload, "display", frozenset({"oxygen"}))
    assert frame["bed"]["stay"]["alerts"] == ["oxygen"]


def test_clinical_change_frame_passes_the_payload_through() -> None:
    payload = {"bed": bed_json(full_bed()), "before": bed_json(full_bed()), "detail": {"x": 1}}
    frame = change_frame("J12", 5, "2026-03-01T10:00:00.000Z", payload, "clinical")
    assert frame == {
        "type": "change",
        "ward": "J12",
        "seq": 5,
        "at": "2026-03-01T10:00:00.000Z",
        "bed": payload["bed"],
    }


# --- the clinical view -----------------------------------------------------------------------


def test_clinical_stay_has_exactly_the_keys_of_design() -> None:
    stay = stay_json(full_stay())
    assert set(stay) == STAY_KEYS
    assert set(stay["patient"]) == PATIENT_KEYS
    assert set(stay["discharge"]) == DISCHARGE_KEYS
    assert all(set(f) == FLAG_KEYS for f in stay["flags"])
    assert stay["flags"] == [flag_json(f) for f in full_flags()]
    assert stay["patient"] == {
        "id": "pat-91c2",
        "nhs_number": NHS,
        "mrn": MRN,
        "given_name": GIVEN,
        "family_name": FAMILY,
        "initials": "BF",
        "dob": DOB,
        "sex": "female",
    }
    assert stay["alerts"] == list(ALERTS)
    assert stay["news2"] == NEWS2
    assert stay["discharge"]["blockers"] == BLOCKERS
    assert orjson.loads(orjson.dumps(stay)) == stay


def test_clinical_bed_and_snapshot_keys() -> None:
    board = board_with_everything()
    shown = snapshot(board, "clinical")
    assert set(shown) == SNAPSHOT_KEYS
    assert all(set(b) == BED_KEYS for b in shown["beds"])
    assert shown["beds"][0]["stay"] == stay_json(full_stay())
    assert shown["beds"][1]["stay"] is None
    assert [s["id"] for s in shown["unplaced"]] == ["stay-8e1b"]
    assert shown["unplaced"][0]["bed"] is None


def test_a_stay_without_an_nhs_number_or_dob() -> None:
    stay = replace(full_stay(), patient=replace(full_patient(), nhs_number=None, dob=None))
    patient = stay_json(stay)["patient"]
    assert (patient["nhs_number"], patient["dob"]) == (None, None)


# --- initials --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "family", "initials"),
    [
        ("Peter", "Wong", "PW"),
        ("mary-jane", "o'neil", "MO"),
        ("Mary-Jane", "O'Neil", "MO"),
        ("", "Wong", "W"),
        ("Peter", "", "P"),
        ("", "", ""),
        ("  'peter", "-wong", "PW"),
        ("Élodie", "ñúñez", "ÉÑ"),
        ("3rd", "wong", "RW"),
    ],
)
def test_initials(given: str, family: str, initials: str) -> None:
    patient = make_patient(given_name=given, family_name=family)
    assert patient.initials == initials
    assert stay_json(replace(full_stay(), patient=patient))["patient"]["initials"] == initials
    assert display_stay(stay_json(replace(full_stay(), patient=patient)))["patient"] == {"initials": initials}
