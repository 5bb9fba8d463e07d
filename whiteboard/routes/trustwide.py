"""Trust-wide reads for the IPC and capacity boards: read-only SQL over the store's tables.

Every query goes through the reader engine and changes nothing. They answer questions no single
ward's board can: which flagged patients are where, which side rooms are free, who needs
isolation but sits in an open bay, how full each site is and how full it has been this week
(rebuilt from the event log, whose bed events carry the bed's state before and after).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from whiteboard.board.model import BED_STATES
from whiteboard.store.tables import beds, events, flags, patients, sites, stays, wards
from whiteboard.types import Json, iso_z

ISOLATING = frozenset({"contact", "droplet", "airborne"})
SIDE_ROOM_KINDS = ("side_room", "negative_pressure")
PRECAUTION_ORDER = {"airborne": 0, "droplet": 1, "contact": 2, "standard": 3}


@dataclass(frozen=True, slots=True)
class WardInfo:
    code: str
    name: str
    specialty: str
    site: str
    site_name: str


async def ward_list(engine: AsyncEngine) -> list[WardInfo]:
    query = (
        select(wards.c.code, wards.c.name, wards.c.specialty, sites.c.code, sites.c.name)
        .select_from(wards.join(sites, sites.c.code == wards.c.site_code))
        .order_by(sites.c.position, sites.c.code, wards.c.position, wards.c.code)
    )
    async with engine.connect() as conn:
        return [WardInfo(*row) for row in (await conn.execute(query)).all()]


async def ward_info(engine: AsyncEngine, code: str) -> WardInfo | None:
    for ward in await ward_list(engine):
        if ward.code == code:
            return ward
    return None


def _local_date(iso: str | None, tz: Any) -> date | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(tz).date()
    except ValueError:
        return None


# --- IPC -----------------------------------------------------------------------------------------


async def ipc_board(engine: AsyncEngine, today: date, tz: Any) -> Json:
    """Active flags with patient and placement, free side rooms, and placement conflicts."""
    query = (
        select(
            flags.c.id,
            flags.c.version,
            flags.c.code,
            flags.c.status,
            flags.c.precaution,
            flags.c.raised_by,
            flags.c.raised_at,
            patients.c.id.label("patient_id"),
            patients.c.nhs_number,
            patients.c.mrn,
            patients.c.given_name,
            patients.c.family_name,
            stays.c.id.label("stay_id"),
            stays.c.ward_code,
            stays.c.bed_code,
            beds.c.kind.label("bed_kind"),
            wards.c.name.label("ward_name"),
        )
        .select_from(
            flags.join(patients, patients.c.id == flags.c.patient_id)
            .outerjoin(stays, and_(stays.c.patient_id == patients.c.id, stays.c.is_open))
            .outerjoin(beds, beds.c.code == stays.c.bed_code)
            .outerjoin(wards, wards.c.code == stays.c.ward_code)
        )
        .where(flags.c.status != "cleared")
        .order_by(stays.c.ward_code, stays.c.bed_code, flags.c.raised_at)
    )
    rooms = (
        select(beds.c.ward_code, beds.c.code, beds.c.kind, beds.c.state)
        .where(beds.c.kind.in_(SIDE_ROOM_KINDS))
        .order_by(beds.c.ward_code, beds.c.position, beds.c.code)
    )
    async with engine.connect() as conn:
        flag_rows = (await conn.execute(query)).all()
        room_rows = (await conn.execute(rooms)).all()
    ward_names = {w.code: w for w in await ward_list(engine)}

    out_flags: list[Json] = []
    conflicts: dict[str, Json] = {}
    for r in flag_rows:
        raised = _local_date(r.raised_at, tz)
        stay = (
            None
            if r.stay_id is None
            else {
                "id": r.stay_id,
                "ward": r.ward_code,
                "ward_name": r.ward_name,
                "bed": r.bed_code,
                "bed_kind": r.bed_kind,
            }
        )
        patient = {
            "id": r.patient_id,
            "nhs_number": r.nhs_number,
            "mrn": r.mrn,
            "given_name": r.given_name,
            "family_name": r.family_name,
        }
        out_flags.append(
            {
                "id": r.id,
                "version": r.version,
                "code": r.code,
                "status": r.status,
                "precaution": r.precaution,
                "raised_by": r.raised_by,
                "raised_at": r.raised_at,
                "days": None if raised is None else (today - raised).days,
                "patient": patient,
                "stay": stay,
            }
        )
        if r.precaution in ISOLATING and r.bed_kind == "bay" and stay is not None:
            entry = conflicts.setdefault(r.patient_id, {"patient": patient, "stay": stay, "flags": []})
            entry["flags"].append(
                {"id": r.id, "code": r.code, "status": r.status, "precaution": r.precaution}
            )

    side_rooms: dict[str, Json] = {}
    for room in room_rows:
        info = ward_names.get(room.ward_code)
        entry = side_rooms.setdefault(
            room.ward_code,
            {
                "ward": room.ward_code,
                "ward_name": info.name if info else room.ward_code,
                "site": info.site_name if info else "",
                "total": 0,
                "free": [],
            },
        )
        entry["total"] += 1
        if room.state == "available":
            entry["free"].append({"code": room.code, "kind": room.kind})
    ordered_conflicts = sorted(
        conflicts.values(),
        key=lambda c: (min(PRECAUTION_ORDER.get(f["precaution"], 9) for f in c["flags"]), c["stay"]["ward"]),
    )
    return {"flags": out_flags, "side_rooms": list(side_rooms.values()), "conflicts": ordered_conflicts}


# --- capacity --------------------------------------------------------------------------------------


@dataclass
class WardCapacity:
    info: WardInfo
    states: Counter[str] = field(default_factory=Counter)
    total: int = 0
    edd_today: int = 0
    edd_tomorrow: int = 0
    optimised_in_bed: int = 0
    pathways: Counter[int] = field(default_factory=Counter)
    history: list[tuple[datetime, int]] = field(default_factory=list)

    @property
    def occupied(self) -> int:
        return self.states["occupied"]

    @property
    def free(self) -> int:
        return self.states["available"]

    @property
    def occupancy(self) -> float:
        return self.occupied / self.total if self.total else 0.0


@dataclass
class SiteCapacity:
    code: str
    name: str
    wards: list[WardCapacity] = field(default_factory=list)

    def sum(self, name: str) -> int:
        return sum(int(getattr(w, name)) for w in self.wards)

    def state(self, state: str) -> int:
        return sum(w.states[state] for w in self.wards)

    def pathway(self, n: int) -> int:
        return sum(w.pathways[n] for w in self.wards)

    @property
    def history(self) -> list[tuple[datetime, int, int]]:
        """(time, occupied, total) summed over the site's wards."""
        if not self.wards or not self.wards[0].history:
            return []
        points = []
        for i, (moment, _n) in enumerate(self.wards[0].history):
            points.append((moment, sum(w.history[i][1] for w in self.wards), self.sum("total")))
        return points


async def capacity(engine: AsyncEngine, today: date, now: datetime, days: int = 7) -> list[SiteCapacity]:
    infos = await ward_list(engine)
    per_ward = {w.code: WardCapacity(w) for w in infos}
    async with engine.connect() as conn:
        bed_rows = (await conn.execute(select(beds.c.code, beds.c.ward_code, beds.c.state))).all()
        stay_rows = (
            await conn.execute(
                select(stays.c.ward_code, stays.c.edd, stays.c.discharge).where(
                    stays.c.is_open, stays.c.bed_code.is_not(None)
                )
            )
        ).all()
    for bed in bed_rows:
        ward = per_ward.get(bed.ward_code)
        if ward is not None:
            ward.states[bed.state] += 1
            ward.total += 1
    tomorrow = (today + timedelta(days=1)).isoformat()
    for stay in stay_rows:
        ward = per_ward.get(stay.ward_code)
        if ward is None:
            continue
        if stay.edd == today.isoformat():
            ward.edd_today += 1
        elif stay.edd == tomorrow:
            ward.edd_tomorrow += 1
        discharge = stay.discharge if isinstance(stay.discharge, dict) else {}
        if discharge.get("medically_optimised"):
            ward.optimised_in_bed += 1
        if isinstance(discharge.get("pathway"), int):
            ward.pathways[discharge["pathway"]] += 1
    history = await occupancy_history(engine, {b.code: (b.ward_code, b.state) for b in bed_rows}, now, days)
    for code, series in history.items():
        if code in per_ward:
            per_ward[code].history = series
    out: dict[str, SiteCapacity] = {}
    for info in infos:
        out.setdefault(info.site, SiteCapacity(info.site, info.site_name)).wards.append(per_ward[info.code])
    return list(out.values())


_history_cache: dict[tuple[int, int], tuple[float, dict[str, list[tuple[datetime, int]]]]] = {}
HISTORY_CACHE_SECONDS = 60.0


async def occupancy_history(
    engine: AsyncEngine,
    current: dict[str, tuple[str, str]],
    now: datetime,
    days: int = 7,
    step: timedelta = timedelta(hours=1),
) -> dict[str, list[tuple[datetime, int]]]:
    """Occupied beds per ward at every `step` over the last `days`, rebuilt from the event log.

    A bed's state at the start of the window is the `before` state of its first event in the
    window (every bed event carries one), else its state now; each event then sets the state it
    carries. Cached for a minute per process: the chart moves by the hour.
    """
    key = (id(engine), days)
    cached = _history_cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < HISTORY_CACHE_SECONDS:
        return cached[1]
    start = now - timedelta(days=days)
    bed_code = events.c.payload[("bed", "code")].as_string()
    bed_state = events.c.payload[("bed", "state")].as_string()
    before_state = events.c.payload[("before", "state")].as_string()
    query = (
        select(events.c.at, bed_code, bed_state, before_state)
        .where(events.c.at >= iso_z(start), bed_code.is_not(None))
        .order_by(events.c.at, events.c.id)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    state: dict[str, str] = {code: s for code, (_w, s) in current.items()}
    seen: set[str] = set()
    for _at, code, _after, before in rows:
        if code in state and code not in seen:
            seen.add(code)
            if before in BED_STATES:
                state[code] = before
    ticks: list[datetime] = []
    moment = start
    while moment < now:
        ticks.append(moment)
        moment += step
    ticks.append(now)
    series: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    wards_of = {code: ward for code, (ward, _s) in current.items()}
    i = 0
    for tick in ticks:
        stamp = iso_z(tick)
        while i < len(rows) and rows[i][0] <= stamp:
            _at, code, after, _before = rows[i]
            if code in state and after in BED_STATES:
                state[code] = after
            i += 1
        counts: Counter[str] = Counter(wards_of[c] for c, s in state.items() if s == "occupied")
        for ward in set(wards_of.values()):
            series[ward].append((tick, counts[ward]))
    result = dict(series)
    _history_cache[key] = (time.monotonic(), result)
    return result
