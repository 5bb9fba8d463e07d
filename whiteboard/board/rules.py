"""The ward rules: a command and the boards it touches become events, or a domain error.

`decide(scene, command)` never performs I/O and never mutates its input. Each change goes through
`_Draft.emit`, which applies the event to the working copy at once, so a later step of the same
command sees the board exactly as a screen replaying the events would.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import date
from typing import Any

from whiteboard.board import nhs
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
from whiteboard.board.events import EndedStay, Event, Outcome, apply
from whiteboard.board.model import (
    ALERTS,
    DAY_STATUSES,
    NEWS2_MAX,
    ORGANISM_CODE,
    PATHWAYS,
    PRECAUTIONS,
    SEXES,
    Bed,
    Board,
    Flag,
    FlagStatus,
    Patient,
    Placement,
    Stay,
)
from whiteboard.errors import Conflict, Invalid, NotFound, StaleVersion

#: Beds a person may admit into by hand. The feed is the authority and may take any bed.
ADMITTABLE_BY_HAND = frozenset({"available", "reserved"})
#: States a person may set on a bed; `occupied` comes only from an admission.
SETTABLE_BED_STATES = frozenset({"available", "dirty", "closed", "reserved"})
#: Allowed flag moves: suspected -> confirmed -> cleared, or suspected -> cleared.
FLAG_MOVES: Mapping[str, frozenset[str]] = {
    "suspected": frozenset({"confirmed", "cleared"}),
    "confirmed": frozenset({"cleared"}),
    "cleared": frozenset(),
}
STAY_FIELDS = frozenset({"consultant", "named_nurse", "edd", "day_status", "news2", "alerts", "discharge"})
DISCHARGE_FIELDS = frozenset(
    {"medically_optimised", "pathway", "tto_ready", "transport_booked", "home_first", "blockers"}
)
MAX_TEXT = 200
MAX_MRN = 64
MAX_BLOCKERS = 1000


class _Draft:
    """A working copy of the loaded boards that records every event it applies."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.boards: dict[str, Board] = dict(scene.boards)
        self.events: list[Event] = []

    def board(self, ward: str) -> Board:
        try:
            return self.boards[ward]
        except KeyError:
            raise NotFound(f"ward {ward} is not known") from None

    def bed(self, code: str) -> Bed:
        for board in self.boards.values():
            bed = board.bed(code)
            if bed is not None:
                return bed
        raise NotFound(f"bed {code} is not known")

    def stay(self, stay_id: str) -> Stay:
        for board in self.boards.values():
            stay = board.stay(stay_id)
            if stay is not None:
                return stay
        raise NotFound(f"stay {stay_id} is not open on any ward")

    def emit(self, event: Event) -> None:
        self.boards[event.ward] = apply(self.board(event.ward), event)
        self.events.append(event)

    def put_bed(self, before: Bed, after: Bed, kind: str, **detail: Any) -> Bed:
        self.emit(Event(ward=after.ward, type=kind, bed=after, before=before, detail=detail))
        return after

    def put_unplaced(self, ward: str, unplaced: tuple[Stay, ...], kind: str, **detail: Any) -> None:
        self.emit(Event(ward=ward, type=kind, unplaced=unplaced, detail=detail))

    def replace_stay(self, stay: Stay, kind: str, **detail: Any) -> None:
        """Show the new copy of a stay wherever it sits now (its bed, or the unplaced list)."""
        board = self.board(stay.ward)
        if stay.bed is not None:
            bed = board.bed(stay.bed)
            assert bed is not None and bed.stay is not None and bed.stay.id == stay.id
            self.put_bed(bed, replace(bed, stay=stay), kind, **detail)
        else:
            unplaced = tuple(stay if s.id == stay.id else s for s in board.unplaced)
            self.put_unplaced(stay.ward, unplaced, kind, **detail)

    def remove_stay(self, stay: Stay, kind: str, vacated_state: str, **detail: Any) -> None:
        """Take a stay off its ward: its bed empties into `vacated_state`, or it leaves `unplaced`."""
        board = self.board(stay.ward)
        if stay.bed is not None:
            bed = board.bed(stay.bed)
            assert bed is not None
            self.put_bed(bed, bed.bumped(state=vacated_state, stay=None), kind, **detail)
        else:
            unplaced = tuple(s for s in board.unplaced if s.id != stay.id)
            self.put_unplaced(stay.ward, unplaced, kind, **detail)

    def outcome(self, **kw: Any) -> Outcome:
        return Outcome(events=tuple(self.events), boards=dict(self.boards), **kw)


def decide(scene: Scene, command: Command) -> Outcome:
    """What `command` does to the boards in `scene`, or a WhiteboardError saying why not."""
    draft = _Draft(scene)
    match command:
        case Admit():
            return _admit(draft, command)
        case Transfer():
            return _transfer(draft, command)
        case Discharge():
            return _discharge(draft, command)
        case UpdateStay():
            return _update_stay(draft, command)
        case UpdateBed():
            return _update_bed(draft, command)
        case RaiseFlag():
            return _raise_flag(draft, command)
        case UpdateFlag():
            return _update_flag(draft, command)
    raise TypeError(f"not a command: {command!r}")  # pragma: no cover - the match is exhaustive


# --- admissions and moves ------------------------------------------------------------------


def _admit(draft: _Draft, cmd: Admit) -> Outcome:
    check_patient(cmd.patient)
    fields = validate_stay_changes(
        {"consultant": cmd.consultant, "named_nurse": cmd.named_nurse, "edd": cmd.edd}
    )
    bed = draft.bed(cmd.bed)
    if cmd.open_stay_id is not None:
        raise Conflict("the patient is already admitted (an open stay); transfer them instead")
    if bed.state not in ADMITTABLE_BY_HAND:
        raise Conflict(f"bed {bed.code} is {bed.state}; only an available or reserved bed takes an admission")
    stay = Stay(
        id=cmd.stay_id,
        version=1,
        patient=cmd.patient,
        ward=bed.ward,
        bed=bed.code,
        admitted_at=draft.scene.at,
        flags=tuple(f for f in cmd.flags if f.active),
        previous=Placement(bed=None, ward=None, bed_state=bed.state),
        **fields,
    )
    after = draft.put_bed(bed, bed.bumped(state="occupied", stay=stay), "admit")
    return draft.outcome(stay=stay, bed=after, patients=(cmd.patient,))


def _transfer(draft: _Draft, cmd: Transfer) -> Outcome:
    stay = draft.stay(cmd.stay_id)
    target = draft.bed(cmd.bed)
    if stay.bed == target.code:
        raise Conflict(f"the patient is already in {target.code}")
    if target.state not in ADMITTABLE_BY_HAND:
        raise Conflict(f"bed {target.code} is {target.state}; a transfer needs an available or reserved bed")
    moved = stay.bumped(
        ward=target.ward,
        bed=target.code,
        previous=Placement(bed=stay.bed, ward=stay.ward, bed_state=target.state),
    )
    # Leave first, then arrive: for a moment the patient is in neither bed, never in two.
    draft.remove_stay(stay, "transfer", "dirty", to=target.code)
    draft.put_bed(target, target.bumped(state="occupied", stay=moved), "transfer", origin=stay.bed)
    return draft.outcome(stay=moved)


def _discharge(draft: _Draft, cmd: Discharge) -> Outcome:
    stay = draft.stay(cmd.stay_id)
    draft.remove_stay(stay, "discharge", "dirty", stay_id=stay.id)
    ended = EndedStay(stay=stay, reason="discharged", at=draft.scene.at)
    return draft.outcome(stay=stay, ended=(ended,))


# --- edits ---------------------------------------------------------------------------------


def _update_stay(draft: _Draft, cmd: UpdateStay) -> Outcome:
    stay = draft.stay(cmd.stay_id)
    if stay.version != cmd.if_version:
        raise StaleVersion(f"stay {stay.id} is at version {stay.version}, not {cmd.if_version}")
    fields = validate_stay_changes(cmd.changes)
    if "discharge" in fields:
        fields["discharge"] = replace(stay.discharge, **fields["discharge"])
    updated = stay.bumped(**fields)
    draft.replace_stay(updated, "stay_update", fields=sorted(cmd.changes))
    return draft.outcome(stay=updated)


def _update_bed(draft: _Draft, cmd: UpdateBed) -> Outcome:
    bed = draft.bed(cmd.bed)
    if bed.version != cmd.if_version:
        raise StaleVersion(f"bed {bed.code} is at version {bed.version}, not {cmd.if_version}")
    if cmd.state not in SETTABLE_BED_STATES:
        raise Invalid(f"state: a bed becomes occupied only by an admission, not by {cmd.state!r}")
    if bed.stay is not None:
        raise Conflict(f"bed {bed.code} is occupied; move or discharge the patient first")
    if cmd.state == bed.state:
        return draft.outcome(bed=bed)
    after = draft.put_bed(bed, bed.bumped(state=cmd.state), "bed_update")
    return draft.outcome(bed=after)


# --- infection flags -----------------------------------------------------------------------


def _raise_flag(draft: _Draft, cmd: RaiseFlag) -> Outcome:
    code = cmd.code.strip().upper() if isinstance(cmd.code, str) else ""
    if not ORGANISM_CODE.match(code):
        raise Invalid("code: an organism code is 2-20 capital letters, digits or underscores, like MRSA")
    if cmd.status not in ("suspected", "confirmed"):
        raise Invalid("status: a flag is raised as suspected or confirmed")
    if cmd.precaution not in PRECAUTIONS:
        raise Invalid(f"precaution: one of {', '.join(sorted(PRECAUTIONS))}")
    for existing in cmd.existing:
        if existing.active and existing.code == code:
            raise Conflict(f"the patient already has an active {code} flag ({existing.status}); update it")
    flag = Flag(
        id=cmd.flag_id,
        patient_id=cmd.patient.id,
        code=code,
        status=cmd.status,
        precaution=cmd.precaution,
        raised_by=draft.scene.actor,
        raised_at=draft.scene.at,
    )
    if cmd.open_stay_id is not None:
        stay = draft.stay(cmd.open_stay_id)
        # In the order raised, the same order the store reads them back in.
        flags = tuple(sorted((*stay.flags, flag), key=lambda f: (f.raised_at, f.id)))
        draft.replace_stay(replace(stay, flags=flags), "flag_raise", flag=flag.id)
    return draft.outcome(flag=flag, flags=(flag,))


def _update_flag(draft: _Draft, cmd: UpdateFlag) -> Outcome:
    old = cmd.flag
    if cmd.status not in FLAG_MOVES[old.status]:
        raise Conflict(f"flag {old.id} is {old.status}; it cannot become {cmd.status}")
    flag = _moved_flag(old, cmd.status, draft.scene.actor, draft.scene.at)
    if cmd.open_stay_id is not None:
        stay = draft.stay(cmd.open_stay_id)
        flags = tuple(f for f in (flag if f.id == flag.id else f for f in stay.flags) if f.active)
        draft.replace_stay(replace(stay, flags=flags), "flag_update", flag=flag.id, status=cmd.status)
    return draft.outcome(flag=flag, flags=(flag,))


def _moved_flag(old: Flag, status: FlagStatus, actor: str, at: str) -> Flag:
    if status == "cleared":
        return replace(old, status=status, version=old.version + 1, cleared_by=actor, cleared_at=at)
    return replace(old, status=status, version=old.version + 1)


# --- validation of values ------------------------------------------------------------------


def check_patient(patient: Patient) -> None:
    """Refuse a patient record the board cannot safely show (Invalid names the field)."""
    if patient.nhs_number is not None and not nhs.is_valid(patient.nhs_number):
        raise Invalid(f"patient.nhs_number: {patient.nhs_number} is not a valid NHS number")
    if patient.sex not in SEXES:
        raise Invalid("patient.sex: one of male, female, other, unknown")
    if not patient.mrn.strip():
        raise Invalid("patient.mrn: a local hospital number is required")
    if not patient.family_name.strip() and not patient.given_name.strip():
        raise Invalid("patient: a given or family name is required")
    if patient.dob is not None:
        day = check_date("patient.dob", patient.dob)
        if day > date(2200, 1, 1) or day < date(1880, 1, 1):
            raise Invalid("patient.dob: not a plausible date of birth")
    _check_text("patient.mrn", patient.mrn, MAX_MRN)
    _check_text("patient.given_name", patient.given_name, MAX_TEXT)
    _check_text("patient.family_name", patient.family_name, MAX_TEXT)


def validate_stay_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Check each given stay field; return them ready to replace on the Stay (discharge as a dict)."""
    out: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in STAY_FIELDS:
            raise Invalid(f"{key}: not a field of a stay")
        out[key] = _STAY_CHECKS[key](key, value)
    return out


def _text_or_none(key: str, value: Any) -> str | None:
    if value is None:
        return None
    _check_text(key, value, MAX_TEXT)
    return str(value).strip() or None


def _edd(key: str, value: Any) -> str | None:
    if value is None:
        return None
    return check_date(key, value).isoformat()


def _day_status(key: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or value not in DAY_STATUSES):
        raise Invalid(f"{key}: must be red, green or null")
    return value


def _news2(key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= NEWS2_MAX:
        raise Invalid(f"{key}: a NEWS2 score is a whole number from 0 to {NEWS2_MAX}")
    return value


def _alerts(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(a, str) for a in value):
        raise Invalid(f"{key}: a list of alert names")
    unknown = sorted(set(value) - set(ALERTS))
    if unknown:
        raise Invalid(f"{key}: unknown alert {unknown[0]!r}; known: {', '.join(ALERTS)}")
    return tuple(a for a in ALERTS if a in value)  # canonical order, no duplicates


def _discharge_changes(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise Invalid(f"{key}: an object of discharge readiness fields")
    out: dict[str, Any] = {}
    for name, item in value.items():
        where = f"{key}.{name}"
        if name not in DISCHARGE_FIELDS:
            raise Invalid(f"{where}: not a discharge readiness field")
        if name == "pathway":
            if item is not None and (type(item) is not int or item not in PATHWAYS):
                raise Invalid(f"{where}: a discharge pathway is 0, 1, 2, 3 or null")
        elif name == "blockers":
            item = "" if item is None else item
            _check_text(where, item, MAX_BLOCKERS)
        elif not isinstance(item, bool):
            raise Invalid(f"{where}: true or false")
        out[name] = item
    return out


_STAY_CHECKS: Mapping[str, Any] = {
    "consultant": _text_or_none,
    "named_nurse": _text_or_none,
    "edd": _edd,
    "day_status": _day_status,
    "news2": _news2,
    "alerts": _alerts,
    "discharge": _discharge_changes,
}

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def check_date(key: str, value: Any) -> date:
    if not isinstance(value, str) or not _DATE.match(value):
        raise Invalid(f"{key}: a date as YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{key}: {value} is not a real date") from None


def _check_text(key: str, value: Any, limit: int) -> None:
    if not isinstance(value, str):
        raise Invalid(f"{key}: text expected")
    if len(value) > limit:
        raise Invalid(f"{key}: at most {limit} characters")
    if any(ord(ch) < 32 and ch not in "\n\t" for ch in value):
        raise Invalid(f"{key}: control characters are not allowed")


__all__ = ["check_patient", "decide", "validate_stay_changes"]
