"""Events: what happened to one ward, and how a board moves on because of it.

An event carries the after-state of what it touched — the whole bed, the whole unplaced list —
so a screen can replace its copy without knowing any rule, and `apply` is trivially the same
on the server, in a replay, and in a browser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from whiteboard.board.model import Bed, Board, Flag, Patient, Stay


@dataclass(frozen=True, slots=True)
class Event:
    ward: str
    type: str
    bed: Bed | None = None
    unplaced: tuple[Stay, ...] | None = None
    #: The bed as it was, for the audit trail.
    before: Bed | None = None
    #: Extra audit facts (feed message id, discharge time, the flag that changed...).
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EndedStay:
    stay: Stay
    reason: str  # "discharged" | "cancelled"
    at: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """Everything one command decided: the events in order, plus the records no board shows."""

    events: tuple[Event, ...] = ()
    ended: tuple[EndedStay, ...] = ()
    reopened: tuple[str, ...] = ()
    flags: tuple[Flag, ...] = ()
    patients: tuple[Patient, ...] = ()
    #: What the request is answered with.
    stay: Stay | None = None
    bed: Bed | None = None
    flag: Flag | None = None
    #: The boards the command was decided on, as its events leave them (`apply_all` of each),
    #: so whoever keeps boards need not apply the events a second time. Not part of what was
    #: decided: left out of equality.
    boards: Mapping[str, Board] = field(default_factory=dict, compare=False, repr=False)


def apply(board: Board, event: Event) -> Board:
    """The board after `event`: its bed replaced, its unplaced list replaced, seq moved on by one."""
    if event.ward != board.ward.code:
        raise ValueError(f"event for ward {event.ward} applied to board of {board.ward.code}")
    beds = board.beds if event.bed is None else board.beds_with(event.bed)
    unplaced = board.unplaced if event.unplaced is None else event.unplaced
    return replace(board, beds=beds, unplaced=unplaced, seq=board.seq + 1)


def apply_all(board: Board, events: tuple[Event, ...] | list[Event]) -> Board:
    for event in events:
        if event.ward == board.ward.code:
            board = apply(board, event)
    return board
