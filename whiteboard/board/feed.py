"""How the patient administration system's ADT feed moves the board (DESIGN 4.4).

The feed is the authority on where a patient is. Unlike a person at a tablet, it may put a
patient in a dirty, reserved or closed bed, and into a bed the board shows occupied: the
earlier occupant then moves to the ward's `unplaced` list, in the same event, so nobody is
ever shown in a bed twice and nobody silently vanishes. Cancellations (A11/A12/A13) undo
using the `Placement` a stay remembers. A message older than the last one applied for the
patient is recorded as an event that changes nothing: the board never moves backwards.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from whiteboard.board.commands import Scene
from whiteboard.board.events import EndedStay, Event, Outcome
from whiteboard.board.model import BedState, Patient, Placement, Stay
from whiteboard.board.rules import _Draft, check_patient, validate_stay_changes
from whiteboard.errors import Conflict, Invalid, NotFound

FEED_EVENTS = {
    "A01": "admit",
    "A02": "transfer",
    "A03": "discharge",
    "A08": "update",
    "A11": "cancel_admit",
    "A12": "cancel_transfer",
    "A13": "cancel_discharge",
}


@dataclass(frozen=True, slots=True)
class FeedCommand:
    """One ADT message, with what the shell looked up for it."""

    event: str  # A01 … A13
    message_id: str  # sender and MSH-10, for the audit trail
    patient: Patient  # as the message describes them (existing record brought up to date)
    new_stay_id: str = ""  # for an A01 that opens a stay
    open_stay_id: str | None = None
    #: A13: the patient's latest discharged stay, as it was when it ended.
    discharged: Stay | None = None
    ward: str | None = None  # PV1-3 ward
    bed: str | None = None  # PV1-3 bed
    consultant: str | None = None
    edd: str | None = None
    discharge_time: str | None = None
    #: The message's event time is older than the last one applied for this patient.
    out_of_order: bool = False
    #: Where a late message is recorded when PV1-3 names no ward and the patient is not in:
    #: the ward of their latest stay.
    last_ward: str | None = None


def decide_feed(scene: Scene, cmd: FeedCommand) -> Outcome:
    if cmd.event not in FEED_EVENTS:
        raise Invalid(f"MSH-9: event {cmd.event} is not supported")
    check_patient(cmd.patient)
    draft = _Draft(scene)
    if cmd.bed is not None:
        _check_location(draft, cmd)
    if cmd.out_of_order:
        return _record_only(draft, cmd)
    handler = {
        "A01": _admit,
        "A02": _transfer,
        "A03": _discharge,
        "A08": _update,
        "A11": _cancel_admit,
        "A12": _cancel_transfer,
        "A13": _cancel_discharge,
    }[cmd.event]
    return handler(draft, cmd)


def _check_location(draft: _Draft, cmd: FeedCommand) -> None:
    assert cmd.bed is not None
    bed = draft.bed(cmd.bed)  # NotFound for a bed the layout does not have
    if cmd.ward is not None and bed.ward != cmd.ward:
        raise NotFound(f"PV1-3: bed {cmd.bed} is on ward {bed.ward}, not {cmd.ward}")


def _detail(cmd: FeedCommand, **extra: object) -> dict[str, object]:
    return {"hl7": cmd.message_id, "event": cmd.event, **extra}


def _record_only(draft: _Draft, cmd: FeedCommand) -> Outcome:
    """Acknowledge and record a late message without moving the board backwards."""
    ward = cmd.ward
    if ward is None and cmd.open_stay_id is not None:
        ward = draft.stay(cmd.open_stay_id).ward
    ward = ward or cmd.last_ward
    if ward is None:
        return draft.outcome()  # never on any ward: its control ID is all there is to keep
    draft.emit(Event(ward=ward, type="out_of_order", detail=_detail(cmd, ignored=True)))
    return draft.outcome()


def _stay_fields(cmd: FeedCommand) -> dict[str, object]:
    given = {k: v for k, v in (("consultant", cmd.consultant), ("edd", cmd.edd)) if v is not None}
    return validate_stay_changes(given)


def _place(draft: _Draft, stay: Stay, bed_code: str, kind: str, cmd: FeedCommand) -> Stay:
    """Put `stay` in a bed, whatever its state; an occupant already there becomes unplaced.

    One event carries the bed and, when someone was displaced, the ward's new unplaced list.
    Returns the stay as placed.
    """
    target = draft.bed(bed_code)
    board = draft.board(target.ward)
    placed = replace(stay, ward=target.ward, bed=target.code)
    unplaced = tuple(s for s in board.unplaced if s.id != stay.id)
    displaced = target.stay if target.stay is not None and target.stay.id != stay.id else None
    if displaced is not None:
        # In admission order, the same order the store reads them back in.
        unplaced = tuple(sorted((*unplaced, displaced.bumped(bed=None)), key=lambda s: (s.admitted_at, s.id)))
    changed_unplaced = unplaced != board.unplaced
    after = target.bumped(state="occupied", stay=placed)
    draft.emit(
        Event(
            ward=target.ward,
            type=kind,
            bed=after,
            unplaced=unplaced if changed_unplaced else None,
            before=target,
            detail=_detail(cmd, displaced=None if displaced is None else displaced.id),
        )
    )
    return placed


def _leave(draft: _Draft, stay: Stay, kind: str, cmd: FeedCommand, bed_state: BedState = "dirty") -> None:
    draft.remove_stay(stay, kind, bed_state, **_detail(cmd))


def _admit(draft: _Draft, cmd: FeedCommand) -> Outcome:
    if cmd.bed is None:
        raise Invalid("PV1-3: an admission needs a ward and a bed")
    fields = _stay_fields(cmd)
    target = draft.bed(cmd.bed)
    if cmd.open_stay_id is not None:
        # Already in: the feed is the authority, so this admission moves them (an A01 resent
        # after a missed A02, say) and brings their details up to date.
        stay = draft.stay(cmd.open_stay_id)
        updated = stay.bumped(patient=cmd.patient, **fields)
        if stay.bed == target.code:
            draft.replace_stay(updated, "admit", **_detail(cmd))
            return draft.outcome(stay=updated)
        moved = replace(updated, previous=Placement(bed=stay.bed, ward=stay.ward, bed_state=target.state))
        _leave(draft, stay, "admit", cmd)
        placed = _place(draft, moved, target.code, "admit", cmd)
        return draft.outcome(stay=placed)
    stay = Stay(
        id=cmd.new_stay_id,
        version=1,
        patient=cmd.patient,
        ward=target.ward,
        bed=target.code,
        admitted_at=draft.scene.at,
        previous=Placement(bed=None, ward=None, bed_state=target.state),
        **fields,  # type: ignore[arg-type]
    )
    placed = _place(draft, stay, target.code, "admit", cmd)
    return draft.outcome(stay=placed, patients=(cmd.patient,))


def _open_stay(draft: _Draft, cmd: FeedCommand) -> Stay:
    if cmd.open_stay_id is None:
        raise NotFound(f"{cmd.event}: the patient has no open stay on the board")
    return draft.stay(cmd.open_stay_id)


def _transfer(draft: _Draft, cmd: FeedCommand) -> Outcome:
    stay = _open_stay(draft, cmd)
    if cmd.bed is None:
        raise Invalid("PV1-3: a transfer needs a ward and a bed")
    target = draft.bed(cmd.bed)
    updated = stay.bumped(patient=cmd.patient, **_stay_fields(cmd))
    if stay.bed == target.code:
        draft.replace_stay(updated, "transfer", **_detail(cmd))
        return draft.outcome(stay=updated)
    moved = replace(updated, previous=Placement(bed=stay.bed, ward=stay.ward, bed_state=target.state))
    _leave(draft, stay, "transfer", cmd)
    return draft.outcome(stay=_place(draft, moved, target.code, "transfer", cmd))


def _discharge(draft: _Draft, cmd: FeedCommand) -> Outcome:
    stay = _open_stay(draft, cmd)
    draft.remove_stay(stay, "discharge", "dirty", **_detail(cmd, discharged_at=cmd.discharge_time))
    ended = EndedStay(stay=replace(stay, patient=cmd.patient), reason="discharged", at=draft.scene.at)
    return draft.outcome(stay=stay, ended=(ended,))


def _update(draft: _Draft, cmd: FeedCommand) -> Outcome:
    if cmd.open_stay_id is None:
        # Not in: keep their details current for their next admission; no board changes.
        return draft.outcome(patients=(cmd.patient,))
    stay = _open_stay(draft, cmd)
    updated = stay.bumped(patient=cmd.patient, **_stay_fields(cmd))
    draft.replace_stay(updated, "update", **_detail(cmd))
    return draft.outcome(stay=updated)


def _cancel_admit(draft: _Draft, cmd: FeedCommand) -> Outcome:
    stay = _open_stay(draft, cmd)
    restored: BedState = "available"
    if stay.previous is not None and stay.previous.bed is None and stay.previous.bed_state is not None:
        restored = stay.previous.bed_state  # the bed goes back to how it was before the A01
    if restored == "occupied":
        restored = "available"
    draft.remove_stay(stay, "cancel_admit", restored, **_detail(cmd))
    return draft.outcome(stay=stay, ended=(EndedStay(stay=stay, reason="cancelled", at=draft.scene.at),))


def _cancel_transfer(draft: _Draft, cmd: FeedCommand) -> Outcome:
    stay = _open_stay(draft, cmd)
    previous = stay.previous
    if previous is None or previous.bed is None:
        raise Conflict("A12: the stay has no transfer to cancel")
    back_to = cmd.bed or previous.bed
    restored: BedState = previous.bed_state or "available"
    if restored == "occupied":
        restored = "available"
    if back_to == stay.bed:
        raise Conflict(f"A12: the patient is already in {back_to}")
    _leave(draft, stay, "cancel_transfer", cmd, bed_state=restored)
    moved = stay.bumped(previous=None)
    return draft.outcome(stay=_place(draft, moved, back_to, "cancel_transfer", cmd))


def _cancel_discharge(draft: _Draft, cmd: FeedCommand) -> Outcome:
    if cmd.open_stay_id is not None:
        raise Conflict("A13: the patient already has an open stay")
    if cmd.discharged is None:
        raise NotFound("A13: the patient has no discharge to cancel")
    back_to = cmd.bed or cmd.discharged.bed
    if back_to is None:
        raise Invalid("PV1-3: the discharged stay left no bed; say which bed to reopen it in")
    reopened = cmd.discharged.bumped(patient=cmd.patient)
    placed = _place(draft, reopened, back_to, "cancel_discharge", cmd)
    return draft.outcome(stay=placed, reopened=(placed.id,))
