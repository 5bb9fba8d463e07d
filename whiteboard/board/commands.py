"""What people and the feed ask the board to do. Plain values: the shell parses requests into
these, the rules decide what each one means for the board.

Identifiers for new records (stay, patient, flag) arrive inside the command, made by the shell,
so the rules stay deterministic and replayable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from whiteboard.board.model import BedState, Board, Flag, FlagStatus, Patient, Precaution


@dataclass(frozen=True, slots=True)
class Scene:
    """What the shell loaded for one command: the boards it may touch, who asks, and when."""

    boards: Mapping[str, Board]
    actor: str
    at: str


@dataclass(frozen=True, slots=True)
class Admit:
    stay_id: str
    patient: Patient
    bed: str
    #: The patient's active infection flags: they arrive with the patient.
    flags: tuple[Flag, ...] = ()
    consultant: str | None = None
    named_nurse: str | None = None
    edd: str | None = None
    #: The patient's open stay, if they have one (a manual admit refuses; the feed moves them).
    open_stay_id: str | None = None


@dataclass(frozen=True, slots=True)
class Transfer:
    stay_id: str
    bed: str


@dataclass(frozen=True, slots=True)
class Discharge:
    stay_id: str


@dataclass(frozen=True, slots=True)
class UpdateStay:
    stay_id: str
    if_version: int
    #: Only the fields given: consultant, named_nurse, edd, day_status, news2, alerts, discharge
    #: (itself a partial mapping, merged key by key).
    changes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UpdateBed:
    bed: str
    if_version: int
    state: BedState


@dataclass(frozen=True, slots=True)
class RaiseFlag:
    flag_id: str
    patient: Patient
    code: str
    status: FlagStatus
    precaution: Precaution
    #: The patient's flags as they stand (a second active flag for one organism is refused).
    existing: tuple[Flag, ...] = ()
    #: Their open stay, when admitted: the flag then changes their bed.
    open_stay_id: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateFlag:
    flag: Flag
    status: FlagStatus
    open_stay_id: str | None = None


Command = Admit | Transfer | Discharge | UpdateStay | UpdateBed | RaiseFlag | UpdateFlag
