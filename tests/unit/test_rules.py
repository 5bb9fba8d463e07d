"""The ward rules, command by command: the events each decides, its Outcome, and every refusal.

Pure: no event loop, no I/O. Boards are built by hand or by running earlier commands through
`decide` and `apply_all`, the same way the shell moves a board on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from whiteboard.board.commands import (
    Admit,
    Command,
    Discharge,
    RaiseFlag,
    Scene,
    Transfer,
    UpdateBed,
    UpdateFlag,
    UpdateStay,
)
from whiteboard.board.events import EndedStay, Outcome, apply_all
from whiteboard.board.model import (
    ALERTS,
    Bed,
    BedState,
    Board,
    Flag,
    FlagStatus,
    Patient,
    Placement,
    Precaution,
    Stay,
    Ward,
)
from whiteboard.board.model import Discharge as Readiness
from whiteboard.board.rules import decide
from whiteboard.errors import Conflict, Invalid, NotFound, StaleVersion, WhiteboardError

AT = "2026-03-01T10:00:00.000Z"
LATER = "2026-03-02T09:30:00.000Z"
ACTOR = "user:alice"
NHS_OK = "9434765919"
NHS_BAD = "9434765918"  # the same number with a wrong check digit

#: J12's beds, in layout order: three available, then one of each other settable state.
J12_STATES: tuple[BedState, ...] = ("available", "available", "available", "reserved", "dirty", "closed")


# --- builders (used by the other core test modules too) --------------------------------------


def make_patient(
    pid: str = "p1",
    *,
    nhs_number: str | None = NHS_OK,
    mrn: str = "MRN001",
    given_name: str = "Peter",
    family_name: str = "Wong",
    dob: str | None = "1950-01-02",
    sex: Any = "male",
) -> Patient:
    return Patient(
        id=pid,
        nhs_number=nhs_number,
        mrn=mrn,
        given_name=given_name,
        family_name=family_name,
        dob=dob,
        sex=sex,
    )


def bed_code(ward: str, n: int) -> str:
    return f"{ward}-B1-{n}"


def make_board(
    ward: str = "J12",
    states: tuple[BedState, ...] = ("available",) * 6,
    *,
    seq: int = 0,
    unplaced: tuple[Stay, ...] = (),
    public_alerts: frozenset[str] | None = None,
) -> Board:
    beds = tuple(
        Bed(code=bed_code(ward, n), ward=ward, bay="B1", kind="bay", state=state)
        for n, state in enumerate(states, start=1)
    )
    extra = {} if public_alerts is None else {"public_alerts": public_alerts}
    return Board(
        ward=Ward(code=ward, name=f"Ward {ward}", site="RGH", specialty="Medicine", **extra),
        seq=seq,
        beds=beds,
        unplaced=unplaced,
    )


def make_stay(stay_id: str, patient: Patient, ward: str, bed: str | None = None, **fields: Any) -> Stay:
    return Stay(id=stay_id, version=1, patient=patient, ward=ward, bed=bed, admitted_at=AT, **fields)


def make_flag(
    fid: str = "f1",
    *,
    patient_id: str = "p1",
    code: str = "MRSA",
    status: FlagStatus = "suspected",
    precaution: Precaution = "contact",
    version: int = 1,
) -> Flag:
    return Flag(
        id=fid,
        patient_id=patient_id,
        code=code,
        status=status,
        precaution=precaution,
        raised_by="user:ipc",
        raised_at=AT,
        version=version,
    )


def make_scene(*boards: Board, actor: str = ACTOR, at: str = AT) -> Scene:
    return Scene(boards={b.ward.code: b for b in boards}, actor=actor, at=at)


def moved_on(scene: Scene, outcome: Outcome) -> Scene:
    """The scene with its boards replaced by the boards after the outcome's events."""
    boards = {code: apply_all(board, outcome.events) for code, board in scene.boards.items()}
    return Scene(boards=boards, actor=scene.actor, at=scene.at)


def run(scene: Scene, command: Command) -> tuple[Outcome, Scene]:
    outcome = decide(scene, command)
    after = moved_on(scene, outcome)
    # The boards the outcome carries (kept by the store's cache instead of applying the events
    # a second time) are exactly the boards its events leave.
    assert dict(outcome.boards) == after.boards
    return outcome, after


def hospital() -> Scene:
    """Ward J12 (beds in each state) and ward K7 (six available beds); nobody admitted."""
    return make_scene(make_board("J12", J12_STATES), make_board("K7"))


def admitted(
    scene: Scene | None = None, bed: str = "J12-B1-1", stay_id: str = "s1", patient: Patient | None = None
) -> Scene:
    scene = hospital() if scene is None else scene
    _, after = run(scene, Admit(stay_id=stay_id, patient=patient or make_patient(), bed=bed))
    return after


def find_stay(scene: Scene, stay_id: str) -> Stay:
    for board in scene.boards.values():
        stay = board.stay(stay_id)
        if stay is not None:
            return stay
    raise AssertionError(f"stay {stay_id} is nowhere")


def find_bed(scene: Scene, code: str) -> Bed:
    for board in scene.boards.values():
        bed = board.bed(code)
        if bed is not None:
            return bed
    raise AssertionError(f"bed {code} is nowhere")


def refused(scene: Scene, command: Command, error: type[WhiteboardError]) -> WhiteboardError:
    """Assert `command` is refused with `error` and the scene is left exactly as it was."""
    boards = dict(scene.boards)
    with pytest.raises(error) as info:
        decide(scene, command)
    assert type(info.value) is error
    assert dict(scene.boards) == boards
    return info.value


def invalid_field(scene: Scene, command: Command, field: str) -> None:
    error = refused(scene, command, Invalid)
    assert error.message.startswith(f"{field}:"), error.message


# --- admit ---------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["available", "reserved"])
def test_admit_into_a_free_bed(state: BedState) -> None:
    scene = make_scene(make_board("J12", (state, "available"), seq=4))
    patient = make_patient()
    before = find_bed(scene, "J12-B1-1")
    outcome = decide(
        scene,
        Admit(
            stay_id="s1",
            patient=patient,
            bed="J12-B1-1",
            consultant="Dr A Patel",
            named_nurse="RN Jones",
            edd="2026-03-05",
        ),
    )
    (event,) = outcome.events
    assert event.type == "admit"
    assert event.ward == "J12"
    assert event.unplaced is None
    assert event.before == before
    assert event.bed is not None
    assert event.bed.code == "J12-B1-1"
    assert event.bed.state == "occupied"
    assert event.bed.version == before.version + 1
    assert event.bed.stay == outcome.stay

    stay = outcome.stay
    assert stay is not None
    assert (stay.id, stay.version, stay.ward, stay.bed) == ("s1", 1, "J12", "J12-B1-1")
    assert stay.patient == patient
    assert stay.admitted_at == AT
    assert (stay.consultant, stay.named_nurse, stay.edd) == ("Dr A Patel", "RN Jones", "2026-03-05")
    assert stay.flags == ()
    assert stay.discharge == Readiness()
    assert stay.previous == Placement(bed=None, ward=None, bed_state=state)

    assert outcome.bed == event.bed
    assert outcome.patients == (patient,)
    assert outcome.ended == ()
    assert outcome.flag is None

    after = moved_on(scene, outcome)
    assert after.boards["J12"].seq == 5


def test_admit_brings_only_the_active_flags_of_the_patient() -> None:
    suspected = make_flag("f1", code="MRSA", status="suspected")
    confirmed = make_flag("f2", code="CDIFF", status="confirmed")
    cleared = replace(make_flag("f3", code="CPE"), status="cleared")
    outcome = decide(
        hospital(),
        Admit(stay_id="s1", patient=make_patient(), bed="J12-B1-1", flags=(suspected, confirmed, cleared)),
    )
    assert outcome.stay is not None
    assert outcome.stay.flags == (suspected, confirmed)


def test_admit_without_an_nhs_number_is_accepted() -> None:
    outcome = decide(hospital(), Admit(stay_id="s1", patient=make_patient(nhs_number=None), bed="J12-B1-2"))
    assert outcome.stay is not None
    assert outcome.stay.patient.nhs_number is None


def test_admit_into_another_ward_of_the_scene() -> None:
    outcome, after = run(hospital(), Admit(stay_id="s1", patient=make_patient(), bed="K7-B1-3"))
    (event,) = outcome.events
    assert event.ward == "K7"
    assert outcome.stay is not None
    assert outcome.stay.ward == "K7"
    assert after.boards["K7"].seq == 1
    assert after.boards["J12"].seq == 0


@pytest.mark.parametrize("bed", ["J12-B1-5", "J12-B1-6"], ids=["dirty", "closed"])
def test_admit_into_a_dirty_or_closed_bed_conflicts(bed: str) -> None:
    refused(hospital(), Admit(stay_id="s2", patient=make_patient("p2"), bed=bed), Conflict)


def test_admit_into_an_occupied_bed_conflicts() -> None:
    scene = admitted()
    refused(scene, Admit(stay_id="s2", patient=make_patient("p2", mrn="M2"), bed="J12-B1-1"), Conflict)


def test_admit_a_patient_already_admitted_conflicts() -> None:
    scene = admitted()
    command = Admit(stay_id="s2", patient=make_patient(), bed="J12-B1-2", open_stay_id="s1")
    refused(scene, command, Conflict)


def test_admit_into_an_unknown_bed_is_not_found() -> None:
    refused(hospital(), Admit(stay_id="s1", patient=make_patient(), bed="X9-B1-1"), NotFound)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"nhs_number": NHS_BAD}, "patient.nhs_number"),
        ({"nhs_number": "943476591"}, "patient.nhs_number"),
        ({"nhs_number": "943 476 5919"}, "patient.nhs_number"),
        ({"nhs_number": "٩٤٣٤٧٦٥٩١٩"}, "patient.nhs_number"),  # Arabic-Indic digits
        ({"mrn": ""}, "patient.mrn"),
        ({"mrn": "   "}, "patient.mrn"),
        ({"mrn": "M\x00"}, "patient.mrn"),
        ({"given_name": "Pe\x1bter"}, "patient.given_name"),
        ({"family_name": "W" * 201}, "patient.family_name"),
        ({"given_name": "", "family_name": " "}, "patient"),
        ({"dob": "1950-02-30"}, "patient.dob"),
        ({"dob": "02/01/1950"}, "patient.dob"),
        ({"dob": "1850-01-01"}, "patient.dob"),
        ({"sex": "M"}, "patient.sex"),
    ],
)
def test_admit_refuses_a_bad_patient_naming_the_field(changes: dict[str, Any], field: str) -> None:
    command = Admit(stay_id="s1", patient=make_patient(**changes), bed="J12-B1-1")
    invalid_field(hospital(), command, field)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"edd": "2026-02-30"}, "edd"),
        ({"edd": "5 March"}, "edd"),
        ({"consultant": "Dr\x07 Bell"}, "consultant"),
        ({"named_nurse": "N" * 201}, "named_nurse"),
    ],
)
def test_admit_refuses_bad_stay_fields_naming_the_field(changes: dict[str, Any], field: str) -> None:
    command = Admit(stay_id="s1", patient=make_patient(), bed="J12-B1-1", **changes)
    invalid_field(hospital(), command, field)


def test_admit_strips_names_and_empties_become_null() -> None:
    outcome = decide(
        hospital(),
        Admit(stay_id="s1", patient=make_patient(), bed="J12-B1-1", consultant="  Dr Lee ", named_nurse=""),
    )
    assert outcome.stay is not None
    assert outcome.stay.consultant == "Dr Lee"
    assert outcome.stay.named_nurse is None


# --- transfer ------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "state"), [("J12-B1-3", "available"), ("J12-B1-4", "reserved")])
def test_transfer_within_a_ward_is_two_events(target: str, state: BedState) -> None:
    scene = admitted()
    old_bed = find_bed(scene, "J12-B1-1")
    new_bed = find_bed(scene, target)
    stay = find_stay(scene, "s1")
    assert new_bed.state == state

    outcome, after = run(scene, Transfer(stay_id="s1", bed=target))
    leave, arrive = outcome.events

    assert (leave.type, leave.ward, leave.unplaced) == ("transfer", "J12", None)
    assert leave.before == old_bed
    assert leave.bed == replace(old_bed, state="dirty", stay=None, version=old_bed.version + 1)
    assert leave.detail["to"] == target

    moved = outcome.stay
    assert moved is not None
    assert (arrive.type, arrive.ward, arrive.unplaced) == ("transfer", "J12", None)
    assert arrive.before == new_bed
    assert arrive.bed == replace(new_bed, state="occupied", stay=moved, version=new_bed.version + 1)
    assert arrive.detail["origin"] == "J12-B1-1"

    assert moved.version == stay.version + 1
    assert (moved.ward, moved.bed) == ("J12", target)
    assert moved.patient == stay.patient
    assert moved.previous == Placement(bed="J12-B1-1", ward="J12", bed_state=state)
    assert after.boards["J12"].seq == scene.boards["J12"].seq + 2


def test_transfer_across_wards_is_one_event_per_ward() -> None:
    scene = admitted()
    outcome, after = run(scene, Transfer(stay_id="s1", bed="K7-B1-2"))
    leave, arrive = outcome.events
    assert (leave.ward, arrive.ward) == ("J12", "K7")
    assert leave.bed is not None
    assert (leave.bed.code, leave.bed.state, leave.bed.stay) == ("J12-B1-1", "dirty", None)
    assert arrive.bed is not None
    assert (arrive.bed.code, arrive.bed.state) == ("K7-B1-2", "occupied")
    assert outcome.stay is not None
    assert (outcome.stay.ward, outcome.stay.bed, outcome.stay.version) == ("K7", "K7-B1-2", 2)
    assert arrive.bed.stay == outcome.stay
    assert after.boards["J12"].seq == scene.boards["J12"].seq + 1
    assert after.boards["K7"].seq == scene.boards["K7"].seq + 1
    assert after.boards["J12"].stay("s1") is None
    assert after.boards["K7"].stay("s1") == outcome.stay


def test_transfer_from_the_unplaced_list() -> None:
    waiting = make_stay("s9", make_patient("p9", mrn="M9"), "J12")
    other = make_stay("s8", make_patient("p8", mrn="M8"), "J12")
    scene = make_scene(make_board("J12", J12_STATES, seq=7, unplaced=(other, waiting)), make_board("K7"))
    outcome, after = run(scene, Transfer(stay_id="s9", bed="K7-B1-1"))
    leave, arrive = outcome.events
    assert (leave.type, leave.ward, leave.bed, leave.before) == ("transfer", "J12", None, None)
    assert leave.unplaced == (other,)
    assert arrive.ward == "K7"
    assert arrive.unplaced is None
    assert outcome.stay is not None
    assert (outcome.stay.ward, outcome.stay.bed, outcome.stay.version) == ("K7", "K7-B1-1", 2)
    assert outcome.stay.previous == Placement(bed=None, ward="J12", bed_state="available")
    assert after.boards["J12"].unplaced == (other,)
    assert after.boards["J12"].seq == 8


def test_transfer_from_unplaced_to_a_bed_on_the_same_ward() -> None:
    waiting = make_stay("s9", make_patient("p9", mrn="M9"), "J12")
    scene = make_scene(make_board("J12", J12_STATES, unplaced=(waiting,)))
    outcome, after = run(scene, Transfer(stay_id="s9", bed="J12-B1-2"))
    assert [e.ward for e in outcome.events] == ["J12", "J12"]
    assert after.boards["J12"].unplaced == ()
    assert after.boards["J12"].seq == 2
    assert find_bed(after, "J12-B1-2").stay == outcome.stay


def test_transfer_to_the_same_bed_conflicts() -> None:
    refused(admitted(), Transfer(stay_id="s1", bed="J12-B1-1"), Conflict)


def test_transfer_to_an_occupied_bed_conflicts() -> None:
    scene = admitted(admitted(), bed="J12-B1-2", stay_id="s2", patient=make_patient("p2", mrn="M2"))
    refused(scene, Transfer(stay_id="s1", bed="J12-B1-2"), Conflict)


@pytest.mark.parametrize("bed", ["J12-B1-5", "J12-B1-6"], ids=["dirty", "closed"])
def test_transfer_to_a_dirty_or_closed_bed_conflicts(bed: str) -> None:
    refused(admitted(), Transfer(stay_id="s1", bed=bed), Conflict)


def test_transfer_of_an_unknown_stay_is_not_found() -> None:
    refused(admitted(), Transfer(stay_id="nope", bed="J12-B1-2"), NotFound)


def test_transfer_to_an_unknown_bed_is_not_found() -> None:
    refused(admitted(), Transfer(stay_id="s1", bed="J12-B9-9"), NotFound)


# --- discharge -----------------------------------------------------------------------------


def test_discharge_from_a_bed_leaves_it_dirty() -> None:
    scene = admitted(bed="J12-B1-4")  # a reserved bed
    bed = find_bed(scene, "J12-B1-4")
    stay = find_stay(scene, "s1")
    outcome, after = run(scene, Discharge(stay_id="s1"))
    (event,) = outcome.events
    assert (event.type, event.ward, event.unplaced) == ("discharge", "J12", None)
    assert event.before == bed
    assert event.bed == replace(bed, state="dirty", stay=None, version=bed.version + 1)
    assert event.detail["stay_id"] == "s1"
    assert outcome.stay == stay
    assert outcome.ended == (EndedStay(stay=stay, reason="discharged", at=AT),)
    assert after.boards["J12"].stay("s1") is None
    assert after.boards["J12"].seq == scene.boards["J12"].seq + 1


def test_discharge_from_the_unplaced_list() -> None:
    waiting = make_stay("s9", make_patient("p9", mrn="M9"), "K7")
    scene = make_scene(make_board("K7", seq=3, unplaced=(waiting,)))
    outcome, after = run(scene, Discharge(stay_id="s9"))
    (event,) = outcome.events
    assert (event.type, event.ward, event.bed, event.before) == ("discharge", "K7", None, None)
    assert event.unplaced == ()
    assert outcome.ended == (EndedStay(stay=waiting, reason="discharged", at=AT),)
    assert after.boards["K7"].unplaced == ()
    assert after.boards["K7"].beds == scene.boards["K7"].beds
    assert after.boards["K7"].seq == 4


def test_discharge_of_an_unknown_stay_is_not_found() -> None:
    refused(admitted(), Discharge(stay_id="s2"), NotFound)


# --- update stay ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("consultant", "Dr A Patel", "Dr A Patel"),
        ("consultant", "  Dr Lee ", "Dr Lee"),
        ("consultant", "", None),
        ("consultant", None, None),
        ("named_nurse", "RN Jones", "RN Jones"),
        ("named_nurse", None, None),
        ("edd", "2026-03-05", "2026-03-05"),
        ("edd", "2028-02-29", "2028-02-29"),
        ("edd", None, None),
        ("day_status", "red", "red"),
        ("day_status", "green", "green"),
        ("day_status", None, None),
        ("news2", 0, 0),
        ("news2", 7, 7),
        ("news2", 20, 20),
        ("news2", None, None),
        ("alerts", ["dementia", "falls_risk", "dementia"], ("falls_risk", "dementia")),
        ("alerts", list(reversed(ALERTS)), ALERTS),
        ("alerts", (), ()),
    ],
)
def test_update_stay_sets_each_field(field: str, value: Any, expected: Any) -> None:
    scene = admitted()
    stay = find_stay(scene, "s1")
    bed = find_bed(scene, "J12-B1-1")
    outcome, after = run(scene, UpdateStay(stay_id="s1", if_version=stay.version, changes={field: value}))
    (event,) = outcome.events
    assert (event.type, event.ward, event.unplaced) == ("stay_update", "J12", None)
    assert event.before == bed
    updated = outcome.stay
    assert updated is not None
    assert getattr(updated, field) == expected
    assert updated.version == stay.version + 1
    assert updated == replace(stay, version=stay.version + 1, **{field: expected})
    assert event.bed is not None
    assert event.bed.stay == updated
    assert (event.bed.code, event.bed.state) == (bed.code, "occupied")
    assert event.detail["fields"] == [field]
    assert find_stay(after, "s1") == updated


def test_update_stay_of_an_unplaced_stay_replaces_the_list() -> None:
    first = make_stay("s8", make_patient("p8", mrn="M8"), "J12")
    waiting = make_stay("s9", make_patient("p9", mrn="M9"), "J12")
    scene = make_scene(make_board("J12", unplaced=(first, waiting)))
    outcome, after = run(scene, UpdateStay(stay_id="s9", if_version=1, changes={"news2": 3}))
    (event,) = outcome.events
    assert (event.type, event.bed, event.before) == ("stay_update", None, None)
    assert outcome.stay is not None
    assert event.unplaced == (first, outcome.stay)
    assert outcome.stay.news2 == 3
    assert outcome.stay.bed is None
    assert after.boards["J12"].unplaced == (first, outcome.stay)


def test_update_stay_merges_discharge_key_by_key() -> None:
    scene = admitted()
    steps: list[tuple[dict[str, Any], Readiness]] = [
        ({"medically_optimised": True, "pathway": 2}, Readiness(medically_optimised=True, pathway=2)),
        ({"tto_ready": True}, Readiness(medically_optimised=True, pathway=2, tto_ready=True)),
        (
            {"transport_booked": True, "home_first": True, "blockers": "Awaiting POC"},
            Readiness(True, 2, True, True, True, "Awaiting POC"),
        ),
        ({"pathway": None, "blockers": None}, Readiness(True, None, True, True, True, "")),
        ({"medically_optimised": False, "pathway": 0}, Readiness(False, 0, True, True, True, "")),
        ({}, Readiness(False, 0, True, True, True, "")),
    ]
    for changes, expected in steps:
        version = find_stay(scene, "s1").version
        outcome, scene = run(scene, UpdateStay("s1", version, {"discharge": changes}))
        assert outcome.stay is not None
        assert outcome.stay.discharge == expected
        assert outcome.stay.version == version + 1
        assert find_stay(scene, "s1").discharge == expected


def test_update_stay_many_fields_at_once() -> None:
    scene = admitted()
    changes = {"news2": 5, "day_status": "green", "alerts": ["dnacpr"], "discharge": {"pathway": 1}}
    outcome = decide(scene, UpdateStay("s1", 1, changes))
    assert outcome.stay is not None
    stay = outcome.stay
    assert (stay.news2, stay.day_status, stay.alerts, stay.discharge.pathway) == (5, "green", ("dnacpr",), 1)
    assert stay.version == 2
    (event,) = outcome.events
    assert event.detail["fields"] == sorted(changes)


@pytest.mark.parametrize("stale", [0, 2, 99])
def test_update_stay_with_a_stale_version_decides_nothing(stale: int) -> None:
    scene = admitted()
    refused(scene, UpdateStay("s1", stale, {"news2": 3}), StaleVersion)


def test_update_stay_checks_the_version_before_the_values() -> None:
    refused(admitted(), UpdateStay("s1", 5, {"news2": 99}), StaleVersion)


def test_update_stay_of_an_unknown_stay_is_not_found() -> None:
    refused(admitted(), UpdateStay("nope", 1, {"news2": 3}), NotFound)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"news2": -1}, "news2"),
        ({"news2": 21}, "news2"),
        ({"news2": True}, "news2"),
        ({"news2": False}, "news2"),
        ({"news2": 3.0}, "news2"),
        ({"news2": "5"}, "news2"),
        ({"alerts": ["falls_risk", "zombie_risk"]}, "alerts"),
        ({"alerts": "falls_risk"}, "alerts"),
        ({"alerts": [1]}, "alerts"),
        ({"alerts": None}, "alerts"),
        ({"edd": "2026-02-30"}, "edd"),
        ({"edd": "2026-13-01"}, "edd"),
        ({"edd": "05/03/2026"}, "edd"),
        ({"edd": "2026-3-5"}, "edd"),
        ({"edd": 20260305}, "edd"),
        ({"day_status": "amber"}, "day_status"),
        ({"day_status": ["red"]}, "day_status"),
        ({"day_status": 1}, "day_status"),
        ({"consultant": "Dr\x00 Who"}, "consultant"),
        ({"consultant": "C" * 201}, "consultant"),
        ({"consultant": 7}, "consultant"),
        ({"named_nurse": "\x1b[2J"}, "named_nurse"),
        ({"discharge": {"pathway": 4}}, "discharge.pathway"),
        ({"discharge": {"pathway": -1}}, "discharge.pathway"),
        ({"discharge": {"pathway": True}}, "discharge.pathway"),
        ({"discharge": {"pathway": "1"}}, "discharge.pathway"),
        ({"discharge": {"pathway": 1.0}}, "discharge.pathway"),
        ({"discharge": {"blockers": "b" * 1001}}, "discharge.blockers"),
        ({"discharge": {"blockers": "waiting\x07"}}, "discharge.blockers"),
        ({"discharge": {"blockers": 3}}, "discharge.blockers"),
        ({"discharge": {"medically_optimised": "yes"}}, "discharge.medically_optimised"),
        ({"discharge": {"tto_ready": 1}}, "discharge.tto_ready"),
        ({"discharge": {"transport_booked": None}}, "discharge.transport_booked"),
        ({"discharge": {"home_first": "true"}}, "discharge.home_first"),
        ({"discharge": {"ready": True}}, "discharge.ready"),
        ({"discharge": ["pathway"]}, "discharge"),
        ({"discharge": None}, "discharge"),
        ({"bed": "J12-B1-2"}, "bed"),
        ({"version": 3}, "version"),
    ],
)
def test_update_stay_refuses_invalid_values_naming_the_field(changes: dict[str, Any], field: str) -> None:
    invalid_field(admitted(), UpdateStay("s1", 1, changes), field)


def test_update_stay_accepts_blockers_at_the_limit_with_newlines() -> None:
    blockers = ("Awaiting care package\n\tand OT review " * 40)[:1000]
    outcome = decide(admitted(), UpdateStay("s1", 1, {"discharge": {"blockers": blockers}}))
    assert outcome.stay is not None
    assert outcome.stay.discharge.blockers == blockers


def test_update_stay_does_not_touch_the_scene() -> None:
    scene = admitted()
    boards = dict(scene.boards)
    decide(scene, UpdateStay("s1", 1, {"news2": 3}))
    assert dict(scene.boards) == boards
    assert find_stay(scene, "s1").news2 is None


def test_the_outcome_carries_each_board_as_its_events_leave_it() -> None:
    scene = admitted()
    outcome = decide(scene, Transfer(stay_id="s1", bed="K7-B1-2"))
    for code, board in scene.boards.items():
        assert outcome.boards[code] == apply_all(board, outcome.events)
    assert outcome.boards["J12"].seq == scene.boards["J12"].seq + 1
    assert outcome.boards["K7"].bed("K7-B1-2") == outcome.events[1].bed
    # What was decided is the events and the answer: the boards are left out of equality.
    assert outcome == replace(outcome, boards={})


# --- update bed ----------------------------------------------------------------------------


SETTABLE: tuple[BedState, ...] = ("available", "dirty", "closed", "reserved")


@pytest.mark.parametrize("start", SETTABLE)
@pytest.mark.parametrize("target", SETTABLE)
def test_update_bed_between_settable_states(start: BedState, target: BedState) -> None:
    scene = make_scene(make_board("J12", (start,), seq=2))
    bed = find_bed(scene, "J12-B1-1")
    outcome, after = run(scene, UpdateBed(bed="J12-B1-1", if_version=bed.version, state=target))
    if start == target:
        assert outcome.events == ()
        assert outcome.bed == bed
        assert after.boards == scene.boards
        return
    (event,) = outcome.events
    assert (event.type, event.ward, event.unplaced) == ("bed_update", "J12", None)
    assert event.before == bed
    assert event.bed == replace(bed, state=target, version=bed.version + 1)
    assert outcome.bed == event.bed
    assert outcome.stay is None
    assert after.boards["J12"].seq == 3


def test_update_bed_to_occupied_is_invalid() -> None:
    scene = hospital()
    invalid_field(scene, UpdateBed(bed="J12-B1-1", if_version=1, state="occupied"), "state")


@pytest.mark.parametrize("state", SETTABLE)
def test_update_bed_of_an_occupied_bed_conflicts(state: BedState) -> None:
    scene = admitted()
    bed = find_bed(scene, "J12-B1-1")
    refused(scene, UpdateBed(bed="J12-B1-1", if_version=bed.version, state=state), Conflict)


def test_update_bed_with_a_stale_version_decides_nothing() -> None:
    scene = admitted(bed="J12-B1-2")
    _, scene = run(scene, Discharge(stay_id="s1"))  # J12-B1-2 is now dirty, version 3
    assert find_bed(scene, "J12-B1-2").version == 3
    refused(scene, UpdateBed(bed="J12-B1-2", if_version=2, state="available"), StaleVersion)
    outcome = decide(scene, UpdateBed(bed="J12-B1-2", if_version=3, state="available"))
    assert outcome.bed is not None
    assert (outcome.bed.state, outcome.bed.version) == ("available", 4)


def test_update_bed_checks_the_version_first() -> None:
    refused(admitted(), UpdateBed(bed="J12-B1-1", if_version=1, state="occupied"), StaleVersion)


def test_update_bed_of_an_unknown_bed_is_not_found() -> None:
    refused(hospital(), UpdateBed(bed="Z1-B1-1", if_version=1, state="closed"), NotFound)


# --- raise flag ----------------------------------------------------------------------------


def raise_flag(
    code: str = "MRSA",
    status: FlagStatus = "suspected",
    *,
    existing: tuple[Flag, ...] = (),
    open_stay_id: str | None = None,
    precaution: Precaution = "contact",
    flag_id: str = "f1",
) -> RaiseFlag:
    return RaiseFlag(
        flag_id=flag_id,
        patient=make_patient(),
        code=code,
        status=status,
        precaution=precaution,
        existing=existing,
        open_stay_id=open_stay_id,
    )


@pytest.mark.parametrize("status", ["suspected", "confirmed"])
def test_raise_flag_without_an_open_stay_changes_no_board(status: FlagStatus) -> None:
    scene = hospital()
    outcome, after = run(scene, raise_flag(" mrsa ", status, precaution="droplet"))
    assert outcome.events == ()
    assert after.boards == scene.boards
    flag = outcome.flag
    assert flag == Flag(
        id="f1",
        patient_id="p1",
        code="MRSA",
        status=status,
        precaution="droplet",
        raised_by=ACTOR,
        raised_at=AT,
        version=1,
    )
    assert outcome.flags == (flag,)
    assert outcome.stay is None


def test_raise_flag_with_an_open_stay_changes_their_bed() -> None:
    scene = admitted(bed="J12-B1-2")
    bed = find_bed(scene, "J12-B1-2")
    earlier = make_flag("f0", code="CDIFF", status="confirmed")
    _, scene = run(scene, raise_flag("CDIFF", "confirmed", open_stay_id="s1", flag_id="f0"))
    assert [f.id for f in find_stay(scene, "s1").flags] == ["f0"]
    bed = find_bed(scene, "J12-B1-2")

    outcome, after = run(scene, raise_flag("ESBL", existing=(earlier,), open_stay_id="s1", flag_id="f1"))
    (event,) = outcome.events
    assert (event.type, event.ward, event.unplaced) == ("flag_raise", "J12", None)
    assert event.before == bed
    assert event.detail["flag"] == "f1"
    assert outcome.flag is not None
    assert event.bed is not None
    assert event.bed.stay is not None
    assert [f.id for f in event.bed.stay.flags] == ["f0", "f1"]
    assert event.bed.stay.flags[-1] == outcome.flag
    assert (event.bed.code, event.bed.state) == ("J12-B1-2", "occupied")
    assert find_stay(after, "s1").flags == event.bed.stay.flags
    assert after.boards["J12"].seq == scene.boards["J12"].seq + 1


def test_raise_flag_on_an_unplaced_stay_replaces_the_list() -> None:
    waiting = make_stay("s9", make_patient(), "K7")
    scene = make_scene(make_board("K7", unplaced=(waiting,)))
    outcome, after = run(scene, raise_flag("NOROVIRUS", open_stay_id="s9"))
    (event,) = outcome.events
    assert (event.type, event.ward, event.bed) == ("flag_raise", "K7", None)
    assert event.unplaced is not None
    (stay,) = event.unplaced
    assert stay.flags == (outcome.flag,)
    assert after.boards["K7"].unplaced == event.unplaced


def test_raise_flag_for_an_unknown_open_stay_is_not_found() -> None:
    refused(hospital(), raise_flag(open_stay_id="ghost"), NotFound)


@pytest.mark.parametrize("status", ["suspected", "confirmed"])
def test_a_second_active_flag_for_one_organism_conflicts(status: FlagStatus) -> None:
    existing = (make_flag("f0", code="MRSA", status=status),)
    refused(admitted(), raise_flag("mrsa", existing=existing, open_stay_id="s1"), Conflict)


def test_a_cleared_flag_does_not_block_a_new_one() -> None:
    existing = (replace(make_flag("f0", code="MRSA"), status="cleared"), make_flag("f2", code="VRE"))
    outcome = decide(hospital(), raise_flag("MRSA", existing=existing))
    assert outcome.flag is not None
    assert outcome.flag.code == "MRSA"


@pytest.mark.parametrize("code", ["", " ", "M", "MRSA!", "MR SA", "1MRSA", "_MRSA", "X" * 21, "ÉSBL"])
def test_raise_flag_with_a_bad_organism_code_is_invalid(code: str) -> None:
    invalid_field(hospital(), raise_flag(code), "code")


@pytest.mark.parametrize("code", ["MRSA", "cpe", "COVID19", "MDR_TB", "XX", "X" * 20])
def test_raise_flag_accepts_organism_codes_of_the_right_shape(code: str) -> None:
    outcome = decide(hospital(), raise_flag(code))
    assert outcome.flag is not None
    assert outcome.flag.code == code.upper()


def test_raise_flag_as_cleared_is_invalid() -> None:
    invalid_field(hospital(), raise_flag(status="cleared"), "status")


def test_raise_flag_with_an_unknown_status_or_precaution_is_invalid() -> None:
    invalid_field(hospital(), raise_flag(status="probable"), "status")  # type: ignore[arg-type]
    invalid_field(hospital(), raise_flag(precaution="gloves"), "precaution")  # type: ignore[arg-type]


# --- update flag ---------------------------------------------------------------------------


def flagged(status: FlagStatus = "suspected") -> tuple[Scene, Flag]:
    """J12-B1-1 holds s1, whose patient has flag f1 in `status`, raised while admitted."""
    scene = admitted()
    outcome, scene = run(scene, raise_flag("MRSA", "suspected", open_stay_id="s1"))
    assert outcome.flag is not None
    flag = outcome.flag
    if status != "suspected":
        outcome, scene = run(scene, UpdateFlag(flag=flag, status=status, open_stay_id="s1"))
        assert outcome.flag is not None
        flag = outcome.flag
    return scene, flag


def test_confirm_a_flag_with_an_open_stay() -> None:
    scene, flag = flagged("suspected")
    bed = find_bed(scene, "J12-B1-1")
    outcome, after = run(scene, UpdateFlag(flag=flag, status="confirmed", open_stay_id="s1"))
    confirmed = outcome.flag
    assert confirmed == replace(flag, status="confirmed", version=flag.version + 1)
    assert confirmed.cleared_by is None
    assert outcome.flags == (confirmed,)
    (event,) = outcome.events
    assert (event.type, event.ward, event.unplaced) == ("flag_update", "J12", None)
    assert event.before == bed
    assert event.detail["flag"] == flag.id
    assert event.detail["status"] == "confirmed"
    assert event.bed is not None
    assert event.bed.stay is not None
    assert event.bed.stay.flags == (confirmed,)
    assert find_stay(after, "s1").flags == (confirmed,)


@pytest.mark.parametrize("start", ["suspected", "confirmed"])
def test_clear_a_flag_with_an_open_stay_takes_it_off_the_stay(start: FlagStatus) -> None:
    scene, flag = flagged(start)
    other = make_flag("f7", code="VRE")
    _, scene = run(scene, raise_flag("VRE", existing=(flag,), open_stay_id="s1", flag_id="f7"))
    scene = Scene(boards=scene.boards, actor="user:ipc-bob", at=LATER)
    outcome, after = run(scene, UpdateFlag(flag=flag, status="cleared", open_stay_id="s1"))
    cleared = outcome.flag
    assert cleared is not None
    assert (cleared.status, cleared.version) == ("cleared", flag.version + 1)
    assert (cleared.cleared_by, cleared.cleared_at) == ("user:ipc-bob", LATER)
    (event,) = outcome.events
    assert event.type == "flag_update"
    assert event.bed is not None
    assert event.bed.stay is not None
    remaining = event.bed.stay.flags
    assert [f.id for f in remaining] == ["f7"]
    assert remaining[0] == replace(other, raised_by=ACTOR)
    assert find_stay(after, "s1").flags == remaining


@pytest.mark.parametrize(("start", "target"), [("suspected", "confirmed"), ("confirmed", "cleared")])
def test_update_flag_without_an_open_stay_changes_no_board(start: FlagStatus, target: FlagStatus) -> None:
    scene = hospital()
    flag = make_flag(status=start, version=3)
    outcome, after = run(scene, UpdateFlag(flag=flag, status=target))
    assert outcome.events == ()
    assert after.boards == scene.boards
    assert outcome.flag is not None
    assert (outcome.flag.status, outcome.flag.version) == (target, 4)


@pytest.mark.parametrize(
    ("start", "target"),
    [
        ("cleared", "suspected"),
        ("cleared", "confirmed"),
        ("cleared", "cleared"),
        ("confirmed", "suspected"),
        ("confirmed", "confirmed"),
        ("suspected", "suspected"),
    ],
)
def test_flag_moves_that_go_backwards_conflict(start: FlagStatus, target: FlagStatus) -> None:
    refused(hospital(), UpdateFlag(flag=make_flag(status=start), status=target), Conflict)
    scene, flag = flagged("suspected")
    refused(scene, UpdateFlag(flag=replace(flag, status=start), status=target, open_stay_id="s1"), Conflict)


def test_update_flag_for_an_unknown_open_stay_is_not_found() -> None:
    refused(hospital(), UpdateFlag(flag=make_flag(), status="confirmed", open_stay_id="ghost"), NotFound)


def test_flags_follow_the_stay_across_a_transfer() -> None:
    scene, flag = flagged("confirmed")
    outcome, after = run(scene, Transfer(stay_id="s1", bed="K7-B1-1"))
    assert outcome.stay is not None
    assert outcome.stay.flags == (flag,)
    assert find_stay(after, "s1").flags == (flag,)


# --- the command itself ----------------------------------------------------------------------


def test_decide_refuses_what_is_not_a_command() -> None:
    with pytest.raises(TypeError):
        decide(hospital(), "admit")  # type: ignore[arg-type]


def test_same_command_same_decision() -> None:
    scene = admitted()
    command = Transfer(stay_id="s1", bed="K7-B1-4")
    assert decide(scene, command) == decide(scene, command)


def _mapping_equal(a: Mapping[str, Board], b: Mapping[str, Board]) -> bool:
    return dict(a) == dict(b)


def test_a_refusal_midway_leaves_no_trace() -> None:
    """A transfer to an unknown bed fails after the stay is found: nothing has been decided."""
    scene = admitted()
    boards = dict(scene.boards)
    with pytest.raises(NotFound):
        decide(scene, Transfer(stay_id="s1", bed="K7-B1-99"))
    assert _mapping_equal(scene.boards, boards)
