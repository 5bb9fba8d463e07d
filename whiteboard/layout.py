"""Loading a hospital's sites, wards and beds from a layout file.

The whole file is checked before anything is written, and written in one transaction: a bad
file names the first bad field and loads nothing. Loading the same file again updates names,
bays and kinds in place and never duplicates a row; beds keep their state and occupant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from whiteboard.board.model import BED_KINDS
from whiteboard.errors import Invalid
from whiteboard.store.tables import beds, sites, wards

CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


@dataclass(frozen=True, slots=True)
class BedSpec:
    code: str
    bay: str
    kind: str
    position: int


@dataclass(frozen=True, slots=True)
class WardSpec:
    code: str
    name: str
    specialty: str
    beds: tuple[BedSpec, ...]
    position: int


@dataclass(frozen=True, slots=True)
class SiteSpec:
    code: str
    name: str
    wards: tuple[WardSpec, ...]
    position: int


def parse_layout(doc: Any) -> tuple[SiteSpec, ...]:
    """Check a decoded layout document; raise Invalid naming the first bad field."""
    if not isinstance(doc, dict) or not isinstance(doc.get("sites"), list):
        raise Invalid('sites: the file must be an object with a "sites" list')
    seen: set[str] = set()
    out = []
    for i, site in enumerate(doc["sites"]):
        where = f"sites[{i}]"
        _object(where, site)
        code = _code(f"{where}.code", site.get("code"))
        ward_list = site.get("wards")
        if not isinstance(ward_list, list):
            raise Invalid(f"{where}.wards: a list of wards")
        specs = tuple(_ward(f"{where}.wards[{j}]", w, j, seen) for j, w in enumerate(ward_list))
        _unique(f"{where}.code", f"site:{code}", seen)
        out.append(SiteSpec(code, _text(f"{where}.name", site.get("name")), specs, i))
    return tuple(out)


def _ward(where: str, ward: Any, position: int, seen: set[str]) -> WardSpec:
    _object(where, ward)
    code = _code(f"{where}.code", ward.get("code"))
    _unique(f"{where}.code", f"ward:{code}", seen)
    bed_list = ward.get("beds")
    if not isinstance(bed_list, list):
        raise Invalid(f"{where}.beds: a list of beds")
    specs = []
    for k, bed in enumerate(bed_list):
        bw = f"{where}.beds[{k}]"
        _object(bw, bed)
        bcode = _code(f"{bw}.code", bed.get("code"))
        _unique(f"{bw}.code", f"bed:{bcode}", seen)
        kind = bed.get("kind", "bay")
        if not isinstance(kind, str) or kind not in BED_KINDS:
            raise Invalid(f"{bw}.kind: must be one of {', '.join(sorted(BED_KINDS))}")
        specs.append(
            BedSpec(bcode, _text(f"{bw}.bay", bed.get("bay", ""), allow_empty=True, limit=64), kind, k)
        )
    specialty = _text(f"{where}.specialty", ward.get("specialty", ""), allow_empty=True)
    return WardSpec(code, _text(f"{where}.name", ward.get("name")), specialty, tuple(specs), position)


def _object(where: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise Invalid(f"{where}: an object expected")


def _code(where: str, value: Any) -> str:
    if not isinstance(value, str) or not CODE.fullmatch(value):
        raise Invalid(f"{where}: a code of letters, digits, '-', '_' or '.' (at most 64), got {value!r}")
    return value


def _text(where: str, value: Any, allow_empty: bool = False, limit: int = 200) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()) or len(value) > limit:
        raise Invalid(f"{where}: text of at most {limit} characters expected, got {value!r}")
    if any(ord(ch) < 32 for ch in value):
        raise Invalid(f"{where}: control characters are not allowed")
    return value.strip()


def _unique(where: str, key: str, seen: set[str]) -> None:
    if key in seen:
        raise Invalid(f"{where}: {key.split(':', 1)[1]} appears twice in the file")
    seen.add(key)


async def load_layout(engine: AsyncEngine, layout: tuple[SiteSpec, ...]) -> dict[str, int]:
    """Write a checked layout in one transaction; return counts of what was added and updated."""
    counts = {"sites": 0, "wards": 0, "beds_added": 0, "beds_updated": 0}
    async with engine.begin() as conn:
        existing_beds = {
            r.code: r.ward_code for r in await conn.execute(select(beds.c.code, beds.c.ward_code))
        }
        existing_wards = {r.code for r in await conn.execute(select(wards.c.code))}
        existing_sites = {r.code for r in await conn.execute(select(sites.c.code))}
        for site in layout:
            values = {"name": site.name, "position": site.position}
            if site.code in existing_sites:
                await conn.execute(update(sites).where(sites.c.code == site.code).values(**values))
            else:
                await conn.execute(sites.insert().values(code=site.code, **values))
            counts["sites"] += 1
            for ward in site.wards:
                wv = {
                    "site_code": site.code,
                    "name": ward.name,
                    "specialty": ward.specialty,
                    "position": ward.position,
                }
                if ward.code in existing_wards:
                    # layout_version moves on: boards cached by running servers (which match a
                    # ward's seq and layout_version) are read again, new beds and names included.
                    await conn.execute(
                        update(wards)
                        .where(wards.c.code == ward.code)
                        .values(**wv, layout_version=wards.c.layout_version + 1)
                    )
                else:
                    await conn.execute(wards.insert().values(code=ward.code, seq=0, **wv))
                counts["wards"] += 1
                for bed in ward.beds:
                    bv = {"bay": bed.bay, "kind": bed.kind, "position": bed.position}
                    if bed.code in existing_beds:
                        if existing_beds[bed.code] != ward.code:
                            raise Invalid(
                                f"bed {bed.code}: already on ward {existing_beds[bed.code]}; "
                                "moving a bed between wards is not supported by a layout load"
                            )
                        await conn.execute(update(beds).where(beds.c.code == bed.code).values(**bv))
                        counts["beds_updated"] += 1
                    else:
                        await conn.execute(
                            beds.insert().values(
                                code=bed.code, ward_code=ward.code, state="available", version=1, **bv
                            )
                        )
                        counts["beds_added"] += 1
    return counts
