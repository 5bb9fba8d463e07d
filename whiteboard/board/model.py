"""The ward board as immutable values: sites, wards, beds, patients, stays and infection flags.

Everything here is a frozen dataclass so a board can be shared between the rules, the views and
the tests without anyone changing it behind another's back. Identifiers are opaque strings made
by the shell (the core never invents one, so the same command always decides the same way).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

BedKind = Literal["bay", "side_room", "negative_pressure"]
BedState = Literal["available", "occupied", "dirty", "closed", "reserved"]
Sex = Literal["male", "female", "other", "unknown"]
DayStatus = Literal["red", "green"]
FlagStatus = Literal["suspected", "confirmed", "cleared"]
Precaution = Literal["standard", "contact", "droplet", "airborne"]

BED_KINDS: frozenset[str] = frozenset(get_args(BedKind))
BED_STATES: frozenset[str] = frozenset(get_args(BedState))
SEXES: frozenset[str] = frozenset(get_args(Sex))
DAY_STATUSES: frozenset[str] = frozenset(get_args(DayStatus))
FLAG_STATUSES: frozenset[str] = frozenset(get_args(FlagStatus))
PRECAUTIONS: frozenset[str] = frozenset(get_args(Precaution))

#: Clinical alerts a stay may carry. A closed vocabulary, so nothing free-text can slip onto a
#: public screen through an alert.
ALERTS: tuple[str, ...] = (
    "falls_risk",
    "dnacpr",
    "allergy",
    "nil_by_mouth",
    "dementia",
    "learning_disability",
    "pressure_ulcer_risk",
    "diabetes",
    "hearing_impaired",
    "visually_impaired",
    "oxygen",
    "bariatric",
)
#: The alerts a wall display shows unless a ward chooses otherwise (DESIGN 4.2).
DEFAULT_PUBLIC_ALERTS: frozenset[str] = frozenset(
    {"falls_risk", "dementia", "nil_by_mouth", "pressure_ulcer_risk"}
)

#: Organisms (and syndromes) IPC teams flag. Trusts add their own; the code shape is checked.
KNOWN_ORGANISMS: tuple[str, ...] = (
    "MRSA",
    "CDIFF",
    "CPE",
    "VRE",
    "ESBL",
    "NOROVIRUS",
    "COVID19",
    "INFLUENZA",
    "RSV",
    "TB",
    "MDRTB",
    "GAS",
    "MEASLES",
    "CHICKENPOX",
    "SCABIES",
)
ORGANISM_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,19}$")

NEWS2_MAX = 20
PATHWAYS = (0, 1, 2, 3)


@dataclass(frozen=True, slots=True)
class Site:
    code: str
    name: str


@dataclass(frozen=True, slots=True)
class Ward:
    code: str
    name: str
    site: str
    specialty: str = ""
    public_alerts: frozenset[str] = DEFAULT_PUBLIC_ALERTS


@dataclass(frozen=True, slots=True)
class Patient:
    id: str
    nhs_number: str | None
    mrn: str
    given_name: str
    family_name: str
    dob: str | None
    sex: Sex

    @property
    def initials(self) -> str:
        """Upper-case initials without punctuation: Peter Wong -> PW, Mary-Jane O'Neil -> MO."""
        letters = [_first_letter(self.given_name), _first_letter(self.family_name)]
        return "".join(ch for ch in letters if ch)


def _first_letter(name: str) -> str:
    for ch in name:
        if ch.isalpha():
            return ch.upper()
    return ""


@dataclass(frozen=True, slots=True)
class Flag:
    """An infection flag. It belongs to the patient, so it outlives stays and follows transfers."""

    id: str
    patient_id: str
    code: str
    status: FlagStatus
    precaution: Precaution
    raised_by: str
    raised_at: str
    version: int = 1
    cleared_by: str | None = None
    cleared_at: str | None = None

    @property
    def active(self) -> bool:
        return self.status != "cleared"


@dataclass(frozen=True, slots=True)
class Discharge:
    """Discharge readiness: what is done and what still holds the patient back."""

    medically_optimised: bool = False
    pathway: int | None = None
    tto_ready: bool = False
    transport_booked: bool = False
    home_first: bool = False
    blockers: str = ""


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a stay was before the last feed move, so a cancellation (A11/A12/A13) can undo it."""

    bed: str | None
    ward: str | None
    bed_state: BedState | None


@dataclass(frozen=True, slots=True)
class Stay:
    id: str
    version: int
    patient: Patient
    ward: str
    bed: str | None
    admitted_at: str
    consultant: str | None = None
    named_nurse: str | None = None
    edd: str | None = None
    day_status: DayStatus | None = None
    news2: int | None = None
    alerts: tuple[str, ...] = ()
    discharge: Discharge = field(default_factory=Discharge)
    flags: tuple[Flag, ...] = ()
    #: Bookkeeping for feed cancellations; never shown.
    previous: Placement | None = None

    def bumped(self, **changes: object) -> Stay:
        """A copy with `changes` applied and the version moved on by one."""
        return replace(self, version=self.version + 1, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Bed:
    code: str
    ward: str
    bay: str
    kind: BedKind
    state: BedState
    version: int = 1
    stay: Stay | None = None

    def bumped(self, **changes: object) -> Bed:
        return replace(self, version=self.version + 1, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Board:
    """One ward as its screens see it: beds in layout order and stays that have no bed."""

    ward: Ward
    seq: int
    beds: tuple[Bed, ...]
    unplaced: tuple[Stay, ...] = ()

    def bed(self, code: str) -> Bed | None:
        for bed in self.beds:
            if bed.code == code:
                return bed
        return None

    def stays(self) -> Iterator[Stay]:
        for bed in self.beds:
            if bed.stay is not None:
                yield bed.stay
        yield from self.unplaced

    def stay(self, stay_id: str) -> Stay | None:
        for stay in self.stays():
            if stay.id == stay_id:
                return stay
        return None

    def with_bed(self, new: Bed) -> Board:
        return replace(self, beds=self.beds_with(new))

    def beds_with(self, new: Bed) -> tuple[Bed, ...]:
        """The beds with `new` in place of the bed of its code (on every write: a slice, not a
        pass over each bed)."""
        beds = self.beds
        for i, bed in enumerate(beds):
            if bed.code == new.code:
                return (*beds[:i], new, *beds[i + 1 :])
        return beds
