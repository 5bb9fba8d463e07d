"""Shared aliases and small value types that cross module boundaries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One committed event as the log holds it and the broker carries it."""

    ward: str
    seq: int
    at: str
    actor: str
    type: str
    payload: Json  # {"bed"?: clinical BED, "unplaced"?: [STAY], "before"?: BED, "detail"?: {...}}

    def api_json(self) -> Json:
        out: Json = {"seq": self.seq, "at": self.at, "actor": self.actor, "type": self.type}
        for key in ("bed", "unplaced", "before", "detail"):
            if key in self.payload:
                out[key] = self.payload[key]
        return out


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_z(moment: datetime) -> str:
    """UTC ISO 8601 ending in Z, to the millisecond: 2026-11-27T23:52:10.123Z.

    Always four year digits (strftime's %Y does not pad years before 1000), so these strings
    sort in time order — feed ordering compares them as text.
    """
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_z() -> str:
    return iso_z(utc_now())
