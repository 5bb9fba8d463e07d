"""Replay is the proof: the events a command decides carry a board from before to after.

For every kind of command, applying `outcome.events` to the scene's boards gives boards that hold
exactly what the Outcome says (the stay in its new bed, the bed in its new state...), and a client
that starts from the snapshot and applies the change frames built from those events ends with the
snapshot of the board after. A stateful hypothesis test then drives random command sequences
against a small hospital and checks the board's invariants after every step.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.unit.test_rules import (
    AT,
    J12_STATES,
    admitted,
    find_bed,
    find_stay,
    flagged,
    hospital,
    make_board,
    make_flag,
    make_patient,
    make_scene,
    make_stay,
    moved_on,
    raise_flag,
    run,
)
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
from whiteboard.board.events import Event, Outcome, apply, apply_all
from whiteboard.board.model import (
    ALERTS,
    BED_STATES,
    Bed,
    BedState,
    Board,
    Flag,
    Patient,
    Placement,
    Stay,
)
from whiteboard.board.rules import decide
from whiteboard.board.views import View, bed_json, change_frame, snapshot, stay_json
from whiteboard.errors import WhiteboardError

Json = dict[str, Any]
VIEWS: tuple[View, ...] = ("clinical", "display")


# --- what the shell stores and a client does ---------------------------------------------------


def payload_of(event: Event) -> Json:
    """An event's stored payload, shaped as the store writes it."""
    payload: Json = {}
    if event.bed is not None:
        payload["bed"] = bed_json(event.bed)
    if event.unplaced is not None:
        payload["unplaced"] = [stay_json(s) for s in event.unplaced]
    return payload


def frames_for(before: Board, events: tuple[Event, ...], view: View) -> list[Json]:
    frames = []
    seq = before.seq
    for event in events:
        if event.ward != before.ward.code:
            continue
        seq += 1
        frames.append(change_frame(event.ward, seq, AT, payload_of(event), view, before.ward.public_alerts))
    return frames


def client_replay(snap: Json, frames: list[Json]) -> Json:
    """What a screen does with change frames: replace the bed by code, replace the unplaced list."""
    out = copy.deepcopy(snap)
    for frame in frames:
        assert frame["type"] == "change"
        assert frame["seq"] == out["seq"] + 1
        if "bed" in frame:
            codes = [b["code"] for b in out["beds"]]
            out["beds"][codes.index(frame["bed"]["code"])] = frame["bed"]
        if "unplaced" in frame:
            out["unplaced"] = frame["unplaced"]
        out["seq"] = frame["seq"]
    return out


def replay_checked(scene: Scene, outcome: Outcome) -> dict[str, Board]:
    """Apply the events one by one, checking each `before` is the bed as it then stood."""
    boards = dict(scene.boards)
    for event in outcome.events:
        board = boards[event.ward]
        if event.before is not None:
            assert event.bed is not None
            assert event.before.code == event.bed.code
            assert board.bed(event.before.code) == event.before
        if event.bed is not None:
            assert event.bed.ward == event.ward
            assert board.bed(event.bed.code) is not None, "an event names a bed its ward lacks"
        assert event.bed is not None or event.unplaced is not None, "an event changes nothing"
        boards[event.ward] = apply(board, event)
    return boards


# --- every kind of command ---------------------------------------------------------------------


def _with_unplaced() -> Scene:
    waiting = make_stay("s9", make_patient("p9", mrn="M9", given_name="Ann", family_name="Ng"), "J12")
    return make_scene(make_board("J12", J12_STATES, seq=5, unplaced=(waiting,)), make_board("K7", seq=2))


def _flag_case(status: str, *, open_stay: bool) -> tuple[Scene, Command]:
    scene, flag = flagged("suspected")
    return scene, UpdateFlag(flag=flag, status=status, open_stay_id="s1" if open_stay else None)  # type: ignore[arg-type]


CASES: dict[str, Callable[[], tuple[Scene, Command]]] = {
    "admit": lambda: (hospital(), Admit("s1", make_patient(), "J12-B1-2", consultant="Dr Lee")),
    "admit_reserved": lambda: (hospital(), Admit("s1", make_patient(), "J12-B1-4")),
    "admit_with_flags": lambda: (
        hospital(),
        Admit("s1", make_patient(), "K7-B1-1", flags=(make_flag(), make_flag("f2", code="CPE"))),
    ),
    "transfer_within_ward": lambda: (admitted(), Transfer("s1", "J12-B1-3")),
    "transfer_across_wards": lambda: (admitted(), Transfer("s1", "K7-B1-6")),
    "transfer_from_unplaced": lambda: (_with_unplaced(), Transfer("s9", "J12-B1-1")),
    "transfer_from_unplaced_across": lambda: (_with_unplaced(), Transfer("s9", "K7-B1-1")),
    "discharge": lambda: (admitted(), Discharge("s1")),
    "discharge_unplaced": lambda: (_with_unplaced(), Discharge("s9")),
    "update_stay": lambda: (
        admitted(),
        UpdateStay("s1", 1, {"news2": 4, "alerts": ["dnacpr", "falls_risk"], "discharge": {"pathway": 1}}),
    ),
    "update_unplaced_stay": lambda: (_with_unplaced(), UpdateStay("s9", 1, {"day_status": "red"})),
    "update_bed": lambda: (hospital(), UpdateBed("J12-B1-5", 1, "available")),
    "update_bed_same_state": lambda: (hospital(), UpdateBed("J12-B1-6", 1, "closed")),
    "raise_flag": lambda: (admitted(), raise_flag("CDIFF", "confirmed", open_stay_id="s1")),
    "raise_flag_unplaced": lambda: (_with_unplaced(), raise_flag("TB", "suspected", open_stay_id="s9")),
    "raise_flag_not_admitted": lambda: (hospital(), raise_flag("VRE")),
    "confirm_flag": lambda: _flag_case("confirmed", open_stay=True),
    "clear_flag": lambda: _flag_case("cleared", open_stay=True),
    "clear_flag_not_admitted": lambda: _flag_case("cleared", open_stay=False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_events_carry_the_boards_to_what_the_outcome_says(case: str) -> None:
    scene, command = CASES[case]()
    outcome = decide(scene, command)
    boards = replay_checked(scene, outcome)
    after = {code: apply_all(board, outcome.events) for code, board in scene.boards.items()}
    assert after == boards

    per_ward = Counter(e.ward for e in outcome.events)
    for code, board in after.items():
        assert board.seq == scene.boards[code].seq + per_ward[code]
        assert board.ward == scene.boards[code].ward
        assert [b.code for b in board.beds] == [b.code for b in scene.boards[code].beds]

    ended = {e.stay.id for e in outcome.ended}
    if outcome.stay is not None and outcome.stay.id in ended:
        assert all(b.stay(outcome.stay.id) is None for b in after.values())
    elif outcome.stay is not None:
        stay = outcome.stay
        places = [(code, s) for code, b in after.items() for s in b.stays() if s.id == stay.id]
        assert places == [(stay.ward, stay)]
        if stay.bed is not None:
            bed = after[stay.ward].bed(stay.bed)
            assert bed is not None
            assert bed.stay == stay
            assert bed.state == "occupied"
        else:
            assert stay in after[stay.ward].unplaced

    if outcome.bed is not None:
        assert after[outcome.bed.ward].bed(outcome.bed.code) == outcome.bed

    if outcome.flag is not None and isinstance(command, RaiseFlag | UpdateFlag) and command.open_stay_id:
        holder = next(s for b in after.values() for s in b.stays() if s.id == command.open_stay_id)
        ids = [f.id for f in holder.flags]
        assert (outcome.flag.id in ids) == outcome.flag.active
        if outcome.flag.active:
            assert outcome.flag in holder.flags


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_client_replaying_the_frames_reaches_the_snapshot_after(case: str, view: View) -> None:
    scene, command = CASES[case]()
    outcome = decide(scene, command)
    for code, before in scene.boards.items():
        after = apply_all(before, outcome.events)
        replayed = client_replay(snapshot(before, view), frames_for(before, outcome.events, view))
        assert replayed == snapshot(after, view)
        # ...and the frames survive the wire.
        assert orjson.loads(orjson.dumps(replayed)) == snapshot(after, view), code


# --- snapshots after, written out by hand ---------------------------------------------------------


def beds_but(board: Board, *changed: Bed) -> tuple[Bed, ...]:
    by_code = {b.code: b for b in changed}
    return tuple(by_code.get(b.code, b) for b in board.beds)


def test_admit_snapshot_after() -> None:
    scene = hospital()
    patient = make_patient()
    outcome, after = run(scene, Admit("s1", patient, "J12-B1-2", consultant="Dr Lee", edd="2026-03-04"))
    j12 = scene.boards["J12"]
    stay = Stay(
        id="s1",
        version=1,
        patient=patient,
        ward="J12",
        bed="J12-B1-2",
        admitted_at=AT,
        consultant="Dr Lee",
        edd="2026-03-04",
        previous=Placement(bed=None, ward=None, bed_state="available"),
    )
    occupied = Bed("J12-B1-2", "J12", "B1", "bay", "occupied", version=2, stay=stay)
    expected = replace(j12, seq=1, beds=beds_but(j12, occupied))
    assert after.boards["J12"] == expected
    assert after.boards["K7"] == scene.boards["K7"]

    clinical = snapshot(after.boards["J12"], "clinical")
    assert clinical["seq"] == 1
    assert clinical["unplaced"] == []
    assert clinical["beds"][1] == {
        "code": "J12-B1-2",
        "bay": "B1",
        "kind": "bay",
        "state": "occupied",
        "version": 2,
        "stay": {
            "id": "s1",
            "version": 1,
            "bed": "J12-B1-2",
            "ward": "J12",
            "patient": {
                "id": "p1",
                "nhs_number": "9434765919",
                "mrn": "MRN001",
                "given_name": "Peter",
                "family_name": "Wong",
                "initials": "PW",
                "dob": "1950-01-02",
                "sex": "male",
            },
            "admitted_at": AT,
            "consultant": "Dr Lee",
            "named_nurse": None,
            "edd": "2026-03-04",
            "day_status": None,
            "news2": None,
            "alerts": [],
            "discharge": {
                "medically_optimised": False,
                "pathway": None,
                "tto_ready": False,
                "transport_booked": False,
                "home_first": False,
                "blockers": "",
            },
            "flags": [],
        },
    }
    display = snapshot(after.boards["J12"], "display")
    assert display["beds"][1] == {
        "code": "J12-B1-2",
        "bay": "B1",
        "kind": "bay",
        "state": "occupied",
        "version": 2,
        "stay": {
            "patient": {"initials": "PW"},
            "consultant": "Dr Lee",
            "named_nurse": None,
            "edd": "2026-03-04",
            "day_status": None,
            "discharge": {
                "medically_optimised": False,
                "pathway": None,
                "tto_ready": False,
                "transport_booked": False,
            },
            "flags": [],
            "alerts": [],
        },
    }
    assert outcome.stay == stay


def test_transfer_within_a_ward_snapshot_after() -> None:
    scene = admitted()
    j12 = scene.boards["J12"]
    stay = find_stay(scene, "s1")
    _, after = run(scene, Transfer("s1", "J12-B1-4"))
    moved = replace(
        stay,
        version=2,
        bed="J12-B1-4",
        previous=Placement(bed="J12-B1-1", ward="J12", bed_state="reserved"),
    )
    expected = replace(
        j12,
        seq=j12.seq + 2,
        beds=beds_but(
            j12,
            Bed("J12-B1-1", "J12", "B1", "bay", "dirty", version=3, stay=None),
            Bed("J12-B1-4", "J12", "B1", "bay", "occupied", version=2, stay=moved),
        ),
    )
    assert after.boards["J12"] == expected
    assert snapshot(after.boards["J12"], "clinical") == snapshot(expected, "clinical")
    states = [b["state"] for b in snapshot(after.boards["J12"], "display")["beds"]]
    assert states == ["dirty", "available", "available", "occupied", "dirty", "closed"]


def test_transfer_across_wards_snapshot_after() -> None:
    scene = admitted()
    _, after = run(scene, Transfer("s1", "K7-B1-1"))
    j12, k7 = snapshot(after.boards["J12"], "clinical"), snapshot(after.boards["K7"], "clinical")
    assert (j12["seq"], k7["seq"]) == (2, 1)
    assert j12["beds"][0]["stay"] is None
    assert j12["beds"][0]["state"] == "dirty"
    assert k7["beds"][0]["stay"]["ward"] == "K7"
    assert k7["beds"][0]["stay"]["bed"] == "K7-B1-1"
    assert k7["beds"][0]["stay"]["version"] == 2
    assert k7["beds"][0]["stay"]["patient"]["id"] == "p1"


def test_discharge_and_bed_update_snapshot_after() -> None:
    scene = admitted(bed="J12-B1-3")
    _, scene = run(scene, Discharge("s1"))
    _, scene = run(scene, UpdateBed("J12-B1-3", 3, "available"))
    j12 = make_board("J12", J12_STATES)
    expected = replace(
        j12, seq=3, beds=beds_but(j12, Bed("J12-B1-3", "J12", "B1", "bay", "available", version=4))
    )
    assert scene.boards["J12"] == expected


def test_unplaced_transfer_snapshot_after() -> None:
    scene = _with_unplaced()
    _, after = run(scene, Transfer("s9", "J12-B1-3"))
    clinical = snapshot(after.boards["J12"], "clinical")
    assert clinical["seq"] == 7
    assert clinical["unplaced"] == []
    assert clinical["beds"][2]["stay"]["id"] == "s9"
    before = snapshot(scene.boards["J12"], "clinical")
    assert [s["id"] for s in before["unplaced"]] == ["s9"]
    assert snapshot(scene.boards["J12"], "display")["unplaced"] == []


def test_flag_clear_snapshot_after() -> None:
    scene, flag = flagged("confirmed")
    bed = snapshot(scene.boards["J12"], "clinical")["beds"][0]
    assert bed["stay"]["flags"] == [
        {"id": flag.id, "code": "MRSA", "status": "confirmed", "precaution": "contact"}
    ]
    shown = snapshot(scene.boards["J12"], "display")["beds"][0]
    assert shown["stay"]["flags"] == [{"status": "confirmed", "precaution": "contact"}]
    _, after = run(scene, UpdateFlag(flag=flag, status="cleared", open_stay_id="s1"))
    assert snapshot(after.boards["J12"], "clinical")["beds"][0]["stay"]["flags"] == []
    assert snapshot(after.boards["J12"], "display")["beds"][0]["stay"]["flags"] == []


def test_a_scene_is_never_changed_by_deciding() -> None:
    for make in CASES.values():
        scene, command = make()
        boards = dict(scene.boards)
        decide(scene, command)
        assert dict(scene.boards) == boards


def test_apply_refuses_another_wards_event_and_apply_all_skips_it() -> None:
    scene = admitted()
    outcome = decide(scene, Transfer("s1", "K7-B1-1"))
    leave, arrive = outcome.events
    with pytest.raises(ValueError, match="K7"):
        apply(scene.boards["J12"], arrive)
    assert apply_all(scene.boards["J12"], outcome.events) == apply(scene.boards["J12"], leave)
    assert moved_on(scene, outcome).boards["K7"] == apply(scene.boards["K7"], arrive)


# --- random sequences against a small hospital ------------------------------------------------


def _nhs(nine: str) -> str:
    """Nine digits and their Modulus 11 check digit (callers pick digits whose check is not 10)."""
    total = sum(int(d) * (10 - i) for i, d in enumerate(nine))
    check = (11 - total % 11) % 11
    assert check != 10
    return nine + str(check)


FAMILIES = (
    "Quennell",
    "Oyelaran",
    "Zabludowicz",
    "Hargreaves",
    "Xenakis",
    "Lindqvist",
    "Montague",
    "Ferreira",
)
PATIENTS: tuple[Patient, ...] = tuple(
    make_patient(
        f"p{i}",
        nhs_number=None if i in (2, 5, 7) else _nhs(f"40102321{i}"),
        mrn=f"RGH{i:05d}",
        given_name=("Peter", "Mary-Jane", "", "Olu")[i % 4],
        family_name=FAMILIES[i],
        dob=f"19{40 + i}-0{1 + i}-1{i}",
        sex=("male", "female", "other", "unknown")[i % 4],
    )
    for i in range(len(FAMILIES))
)
#: Patients 6 and 7 start on the unplaced lists (as the feed leaves them); the others start at home.
SEEDED = {"u1": ("J12", PATIENTS[6]), "u2": ("K7", PATIENTS[7])}
K7_STATES: tuple[BedState, ...] = ("available", "available", "dirty", "closed", "reserved", "available")
BED_CODES = tuple(f"{w}-B1-{n}" for w in ("J12", "K7") for n in range(1, 7))
ORGANISMS = ("MRSA", "CDIFF", "cpe", "NOROVIRUS", "bad code!")

_valid_changes = st.fixed_dictionaries(
    {},
    optional={
        "consultant": st.sampled_from([None, "", "Dr Lee", "Dr Patel"]),
        "named_nurse": st.sampled_from([None, "RN Okafor"]),
        "edd": st.sampled_from([None, "2026-03-05", "2026-04-01"]),
        "day_status": st.sampled_from([None, "red", "green"]),
        "news2": st.one_of(st.none(), st.integers(0, 20)),
        "alerts": st.lists(st.sampled_from(ALERTS), max_size=4),
        "discharge": st.fixed_dictionaries(
            {},
            optional={
                "medically_optimised": st.booleans(),
                "pathway": st.sampled_from([None, 0, 1, 2, 3]),
                "tto_ready": st.booleans(),
                "transport_booked": st.booleans(),
                "home_first": st.booleans(),
                "blockers": st.sampled_from(["", "Awaiting package of care", None]),
            },
        ),
    },
)
_invalid_changes = st.sampled_from(
    [
        {"news2": 21},
        {"news2": True},
        {"edd": "2026-02-30"},
        {"alerts": ["zombie"]},
        {"day_status": "amber"},
        {"discharge": {"pathway": 4}},
        {"discharge": {"blockers": "x" * 1001}},
        {"consultant": "Dr\x00"},
        {"bed": "J12-B1-1"},
    ]
)
STAY_CHANGES = st.one_of(_valid_changes, _valid_changes, _invalid_changes)


class Hospital(RuleBasedStateMachine):
    """Two wards of six beds, driven the way the shell drives the core."""

    def __init__(self) -> None:
        super().__init__()
        unplaced = {
            ward: tuple(make_stay(sid, p, ward) for sid, (w, p) in SEEDED.items() if w == ward)
            for ward in ("J12", "K7")
        }
        self.scene = make_scene(
            make_board("J12", J12_STATES, unplaced=unplaced["J12"]),
            make_board("K7", K7_STATES, unplaced=unplaced["K7"]),
        )
        self.flags: dict[str, Flag] = {}
        self.ids = 0
        self.accepted = 0
        self.refused = 0

    # the shell's side: ids, the patient's open stay and flags ----------------------------------

    def new_id(self, prefix: str) -> str:
        self.ids += 1
        return f"{prefix}{self.ids}"

    def stays(self) -> list[Stay]:
        return [s for b in self.scene.boards.values() for s in b.stays()]

    def open_stay_of(self, patient_id: str) -> str | None:
        found = [s.id for s in self.stays() if s.patient.id == patient_id]
        assert len(found) <= 1, f"patient {patient_id} has two open stays"
        return found[0] if found else None

    def flags_of(self, patient_id: str) -> tuple[Flag, ...]:
        return tuple(f for f in self.flags.values() if f.patient_id == patient_id)

    def step(self, command: Command) -> Outcome | None:
        before = self.scene
        kept = dict(before.boards)
        try:
            outcome = decide(before, command)
        except WhiteboardError:
            self.refused += 1
            assert self.scene is before
            assert all(before.boards[code] is board for code, board in kept.items())
            return None
        self.accepted += 1
        boards = replay_checked(before, outcome)
        after = moved_on(before, outcome)
        assert dict(after.boards) == boards
        per_ward = Counter(e.ward for e in outcome.events)
        for code, board in after.boards.items():
            old = before.boards[code]
            assert board.seq == old.seq + per_ward[code]
            for was, now in zip(old.beds, board.beds, strict=True):
                assert now.version >= was.version
                assert now.version <= was.version + 1, "a bed moved on more than one version at once"
        old_stays = {s.id: s for s in self.stays()}
        self.scene = after
        if outcome.flag is not None:  # the shell stores the flag beside the board
            self.flags[outcome.flag.id] = outcome.flag
        for stay in self.stays():
            if stay.id in old_stays:
                assert stay.version >= old_stays[stay.id].version
        return outcome

    # commands -----------------------------------------------------------------------------------

    @rule(patient=st.sampled_from(PATIENTS), bed=st.sampled_from((*BED_CODES, "J12-B9-9")))
    def admit(self, patient: Patient, bed: str) -> None:
        open_stay = self.open_stay_of(patient.id)
        stay_id = self.new_id("s")
        outcome = self.step(
            Admit(stay_id, patient, bed, flags=self.flags_of(patient.id), open_stay_id=open_stay)
        )
        if open_stay is not None:
            assert outcome is None
        if outcome is not None:
            assert outcome.stay is not None
            assert outcome.stay.version == 1

    @rule(data=st.data(), bed=st.sampled_from((*BED_CODES, "K7-B9-9")))
    def transfer(self, data: st.DataObject, bed: str) -> None:
        stay_id = data.draw(st.sampled_from([*(s.id for s in self.stays()), "ghost"]))
        self.step(Transfer(stay_id, bed))

    @rule(data=st.data())
    def discharge(self, data: st.DataObject) -> None:
        stay_id = data.draw(st.sampled_from([*(s.id for s in self.stays()), "ghost"]))
        outcome = self.step(Discharge(stay_id))
        if outcome is not None:
            assert stay_id not in {s.id for s in self.stays()}

    @precondition(lambda self: any(True for _ in self.stays()))
    @rule(data=st.data(), lag=st.sampled_from([0, 0, 0, 1, -1]), changes=STAY_CHANGES)
    def update_stay(self, data: st.DataObject, lag: int, changes: dict[str, Any]) -> None:
        stay = data.draw(st.sampled_from(self.stays()))
        outcome = self.step(UpdateStay(stay.id, stay.version - lag, changes))
        if lag:
            assert outcome is None
        if outcome is not None:
            assert outcome.stay is not None
            assert outcome.stay.version == stay.version + 1

    @rule(
        bed=st.sampled_from(BED_CODES),
        lag=st.sampled_from([0, 0, 0, 1]),
        state=st.sampled_from(sorted(BED_STATES)),
    )
    def update_bed(self, bed: str, lag: int, state: Any) -> None:
        current = find_bed(self.scene, bed)
        outcome = self.step(UpdateBed(bed, current.version - lag, state))
        if lag or state == "occupied" or current.stay is not None:
            assert outcome is None

    @rule(
        patient=st.sampled_from(PATIENTS),
        code=st.sampled_from(ORGANISMS),
        status=st.sampled_from(["suspected", "confirmed", "confirmed", "cleared"]),
        precaution=st.sampled_from(["standard", "contact", "droplet", "airborne"]),
    )
    def raise_flag(self, patient: Patient, code: str, status: Any, precaution: Any) -> None:
        command = RaiseFlag(
            flag_id=self.new_id("f"),
            patient=patient,
            code=code,
            status=status,
            precaution=precaution,
            existing=self.flags_of(patient.id),
            open_stay_id=self.open_stay_of(patient.id),
        )
        outcome = self.step(command)
        if outcome is not None:
            assert outcome.flag is not None
            assert len(outcome.events) == (command.open_stay_id is not None)

    @precondition(lambda self: bool(self.flags))
    @rule(data=st.data(), status=st.sampled_from(["suspected", "confirmed", "cleared"]))
    def update_flag(self, data: st.DataObject, status: Any) -> None:
        flag = data.draw(st.sampled_from(sorted(self.flags.values(), key=lambda f: f.id)))
        open_stay = self.open_stay_of(flag.patient_id)
        outcome = self.step(UpdateFlag(flag=flag, status=status, open_stay_id=open_stay))
        if outcome is not None:
            assert outcome.flag is not None
            assert outcome.flag.version == flag.version + 1

    # invariants ---------------------------------------------------------------------------------

    @invariant()
    def each_stay_is_in_exactly_one_place(self) -> None:
        places: Counter[str] = Counter()
        for code, board in self.scene.boards.items():
            assert board.ward.code == code
            for bed in board.beds:
                assert bed.ward == code
                if bed.stay is not None:
                    places[bed.stay.id] += 1
                    assert (bed.stay.ward, bed.stay.bed) == (code, bed.code)
            for stay in board.unplaced:
                places[stay.id] += 1
                assert (stay.ward, stay.bed) == (code, None)
        assert all(n == 1 for n in places.values()), places

    @invariant()
    def occupied_beds_and_stays_go_together(self) -> None:
        for board in self.scene.boards.values():
            for bed in board.beds:
                assert (bed.state == "occupied") == (bed.stay is not None), bed

    @invariant()
    def a_patient_has_at_most_one_open_stay(self) -> None:
        patients = Counter(s.patient.id for s in self.stays())
        assert all(n == 1 for n in patients.values()), patients

    @invariant()
    def a_stay_shows_its_patients_active_flags(self) -> None:
        for stay in self.stays():
            active = {f.id: f for f in self.flags_of(stay.patient.id) if f.active}
            assert {f.id: f for f in stay.flags} == active
            assert len(stay.flags) == len(active)

    @invariant()
    def a_display_shows_no_identifying_data(self) -> None:
        for board in self.scene.boards.values():
            shown = orjson.dumps(snapshot(board, "display")).decode()
            for stay in board.stays():
                p = stay.patient
                for secret in (p.family_name, p.mrn, p.dob, p.nhs_number, p.id, stay.id):
                    if secret:
                        assert secret not in shown
            assert '"news2"' not in shown
            for flag in self.flags.values():
                assert flag.code not in shown
            orjson.dumps(snapshot(board, "clinical"))


Hospital.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestHospital = Hospital.TestCase


def test_the_seeded_patients_are_valid() -> None:
    """The random hospital's patients pass the rules' own checks (else every admit is refused)."""
    free: list[BedState] = ["available"] * len(PATIENTS)
    scene = make_scene(make_board("J12", tuple(free)))
    for n, patient in enumerate(PATIENTS, start=1):
        outcome, scene = run(scene, Admit(f"s{n}", patient, f"J12-B1-{n}"))
        assert outcome.stay is not None
        assert outcome.stay.patient == patient


def test_a_long_fixed_sequence_keeps_the_invariants() -> None:
    """A deterministic walk through every command, so a broken generator cannot hide a failure."""
    machine = Hospital()
    p0, p1, p6 = PATIENTS[0], PATIENTS[1], PATIENTS[6]
    machine.admit(p0, "J12-B1-1")
    machine.admit(p1, "J12-B1-4")
    machine.admit(p0, "J12-B1-2")  # already admitted: refused
    machine.step(Transfer("s1", "K7-B1-1"))
    machine.step(Transfer("u1", "J12-B1-1"))  # the bed s1 left is dirty: refused
    machine.step(Transfer("u1", "J12-B1-2"))
    machine.raise_flag(p0, "MRSA", "suspected", "contact")
    machine.raise_flag(p0, "mrsa", "confirmed", "contact")  # a second active MRSA: refused
    machine.raise_flag(p6, "CPE", "confirmed", "contact")
    machine.step(UpdateStay("s1", 2, {"news2": 5, "discharge": {"pathway": 1}}))
    machine.step(UpdateBed("J12-B1-1", 3, "available"))
    (f_mrsa,) = (f for f in machine.flags.values() if f.code == "MRSA")
    machine.step(UpdateFlag(f_mrsa, "confirmed", open_stay_id="s1"))
    machine.step(Discharge("s1"))
    machine.admit(p0, "J12-B1-1")
    machine.step(UpdateFlag(machine.flags[f_mrsa.id], "cleared", open_stay_id=machine.open_stay_of(p0.id)))
    machine.step(Discharge("u2"))
    for check in (
        machine.each_stay_is_in_exactly_one_place,
        machine.occupied_beds_and_stays_go_together,
        machine.a_patient_has_at_most_one_open_stay,
        machine.a_stay_shows_its_patients_active_flags,
        machine.a_display_shows_no_identifying_data,
    ):
        check()
    assert (machine.accepted, machine.refused) == (13, 3)
    assert machine.scene.boards["J12"].seq == 9
    assert machine.scene.boards["K7"].seq == 6
    readmitted = machine.scene.boards["J12"].bed("J12-B1-1")
    assert readmitted is not None
    assert readmitted.stay is not None
    assert readmitted.stay.flags == ()
