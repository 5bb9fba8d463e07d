"""Reading requests safely: bounded bodies, JSON, typed fields, If-Match.

Bodies are validated with pydantic models in strict mode; a ValidationError becomes one 422
that names the first bad field, the same way the core names fields.
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request

from whiteboard.errors import BadRequest, Invalid, PayloadTooLarge, PreconditionRequired

MAX_BODY = 1 << 20  # 1 MiB

M = TypeVar("M", bound=BaseModel)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PatientBody(Body):
    nhs_number: str | None = None
    mrn: str
    given_name: str
    family_name: str
    dob: str | None = None
    sex: Literal["male", "female", "other", "unknown"] = "unknown"


class AdmitBody(Body):
    bed: str
    patient: PatientBody
    consultant: str | None = None
    named_nurse: str | None = None
    edd: str | None = None


class TransferBody(Body):
    bed: str


class DischargeBody(Body):
    pass


class DischargePatch(Body):
    medically_optimised: bool | None = None
    pathway: int | None = None
    tto_ready: bool | None = None
    transport_booked: bool | None = None
    home_first: bool | None = None
    blockers: str | None = None


class StayPatch(Body):
    consultant: str | None = None
    named_nurse: str | None = None
    edd: str | None = None
    day_status: Literal["red", "green"] | None = None
    news2: int | None = None
    alerts: list[str] | None = None
    discharge: DischargePatch | None = None


class BedPatch(Body):
    state: Literal["available", "occupied", "dirty", "closed", "reserved"]


class FlagBody(Body):
    code: str
    status: Literal["suspected", "confirmed"]
    precaution: Literal["standard", "contact", "droplet", "airborne"]


class FlagPatch(Body):
    status: Literal["suspected", "confirmed", "cleared"]


def too_large(request: Request) -> bool:
    length = request.headers.get("content-length")
    return length is not None and length.isdigit() and int(length) > MAX_BODY


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The body, refused (413) as soon as it passes `limit`, whatever Content-Length claimed."""
    if too_large(request):
        raise PayloadTooLarge(f"request bodies are limited to {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request bodies are limited to {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request) -> Any:
    raw = await read_body(request)
    if not raw.strip():
        raise BadRequest("a JSON body is required")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


def _refuse_nul(data: Any, where: str = "body") -> None:
    """No field of ours may hold U+0000 (PostgreSQL text cannot store it): 422 naming it."""
    if isinstance(data, str):
        if "\x00" in data:
            raise Invalid(f"{where}: NUL characters are not allowed")
    elif isinstance(data, dict):
        for key, value in data.items():
            _refuse_nul(key, where)
            _refuse_nul(value, f"{key}" if where == "body" else f"{where}.{key}")
    elif isinstance(data, list):
        for i, value in enumerate(data):
            _refuse_nul(value, f"{where}[{i}]")


def parse(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise Invalid("the body must be a JSON object")
    _refuse_nul(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Invalid(f"{where}: {first['msg']}") from None


# A quoted version ("3", or weak W/"3"); a bare 3 is tolerated. Unbalanced quotes are not tags.
_ETAG = re.compile(r'^\s*(?:(?:W/)?"(\d{1,12})"|(\d{1,12}))\s*$')


def if_match(request: Request) -> int:
    """The version an If-Match names: 428 when absent, 400 when unreadable."""
    value = request.headers.get("if-match")
    if value is None:
        raise PreconditionRequired('send If-Match: "VERSION" with the version you last saw')
    match = _ETAG.match(value)
    if match is None:
        raise BadRequest('If-Match must be a quoted version number, like "3"')
    return int(match.group(1) or match.group(2))


def optional_if_match(request: Request) -> int | None:
    return None if request.headers.get("if-match") is None else if_match(request)


def only_query(request: Request, *names: str) -> None:
    """Refuse query parameters the endpoint does not take: a misspelt filter (`?wrd=W01` on the
    audit trail) would otherwise answer as if there were no filter at all."""
    unknown = sorted(set(request.query_params) - set(names))
    if unknown:
        takes = ", ".join(names)
        raise BadRequest(f"unknown query parameter {unknown[0]!r}; this endpoint takes {takes}")


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    return int(raw)
