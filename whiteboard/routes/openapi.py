"""The OpenAPI 3.1 document of /api/v1, served at /api/v1/openapi.json.

Request bodies come from the very pydantic models the handlers validate with, so the
document cannot drift from what is accepted; response shapes are written out here from
DESIGN 4.2 and checked by the schemathesis run in the test suite.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from whiteboard.board.model import ALERTS
from whiteboard.routes.api import json_response
from whiteboard.routes.requests import (
    AdmitBody,
    BedPatch,
    DischargeBody,
    FlagBody,
    FlagPatch,
    StayPatch,
    TransferBody,
)

Schema = dict[str, Any]


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(props: dict[str, Schema], required: list[str] | None = None) -> Schema:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
        "additionalProperties": False,
    }


STR, INT, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
DATE = {"type": "string", "format": "date"}
STAMP = {"type": "string", "pattern": r"Z$"}

PATIENT = _object(
    {
        "id": STR,
        "nhs_number": _nullable({"type": "string", "pattern": r"^\d{10}$"}),
        "mrn": STR,
        "given_name": STR,
        "family_name": STR,
        "initials": STR,
        "dob": _nullable(DATE),
        "sex": {"enum": ["male", "female", "other", "unknown"]},
    }
)
FLAG_BRIEF = _object(
    {
        "id": STR,
        "code": STR,
        "status": {"enum": ["suspected", "confirmed", "cleared"]},
        "precaution": {"enum": ["standard", "contact", "droplet", "airborne"]},
    }
)
DISCHARGE = _object(
    {
        "medically_optimised": BOOL,
        "pathway": _nullable({"type": "integer", "minimum": 0, "maximum": 3}),
        "tto_ready": BOOL,
        "transport_booked": BOOL,
        "home_first": BOOL,
        "blockers": STR,
    }
)
STAY = _object(
    {
        "id": STR,
        "version": INT,
        "bed": _nullable(STR),
        "ward": STR,
        "patient": PATIENT,
        "admitted_at": STAMP,
        "consultant": _nullable(STR),
        "named_nurse": _nullable(STR),
        "edd": _nullable(DATE),
        "day_status": _nullable({"enum": ["red", "green"]}),
        "news2": _nullable({"type": "integer", "minimum": 0, "maximum": 20}),
        "alerts": {"type": "array", "items": {"enum": list(ALERTS)}},
        "discharge": DISCHARGE,
        "flags": {"type": "array", "items": FLAG_BRIEF},
    }
)
DISPLAY_STAY = _object(
    {
        "patient": _object({"initials": STR}),
        "consultant": _nullable(STR),
        "named_nurse": _nullable(STR),
        "edd": _nullable(DATE),
        "day_status": _nullable({"enum": ["red", "green"]}),
        "discharge": _object(
            {
                "medically_optimised": BOOL,
                "pathway": _nullable(INT),
                "tto_ready": BOOL,
                "transport_booked": BOOL,
            }
        ),
        "flags": {"type": "array", "items": _object({"status": STR, "precaution": STR})},
        "alerts": {"type": "array", "items": STR},
    }
)


def _bed(stay: Schema) -> Schema:
    return _object(
        {
            "code": STR,
            "bay": STR,
            "kind": {"enum": ["bay", "side_room", "negative_pressure"]},
            "state": {"enum": ["available", "occupied", "dirty", "closed", "reserved"]},
            "version": INT,
            "stay": _nullable(stay),
        }
    )


BED = _bed(STAY)
SNAPSHOT = _object(
    {
        "ward": _object({"code": STR, "name": STR, "site": STR, "specialty": STR}),
        "seq": INT,
        "beds": {"type": "array", "items": {"anyOf": [BED, _bed(DISPLAY_STAY)]}},
        "unplaced": {"type": "array", "items": STAY},
    }
)
WARDS = {
    "type": "array",
    "items": _object({"code": STR, "name": STR, "site": STR, "beds_total": INT, "beds_free": INT}),
}
EVENTS = _object(
    {
        "events": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"seq": INT, "at": STAMP, "actor": STR, "type": STR},
                "required": ["seq", "at", "actor", "type"],
            },
        }
    }
)
AUDIT = _object(
    {
        "events": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"ward": STR, "seq": INT, "at": STAMP, "actor": STR, "type": STR},
                "required": ["ward", "seq", "at", "actor", "type"],
            },
        }
    }
)
FLAG = _object(
    {
        **FLAG_BRIEF["properties"],
        "patient_id": STR,
        "version": INT,
        "raised_by": STR,
        "raised_at": STAMP,
        "cleared_by": _nullable(STR),
        "cleared_at": _nullable(STAMP),
    }
)
ERROR = _object({"error": _object({"code": STR, "message": STR})})

_STATUS_TEXT = {
    "400": "Unparseable JSON, query or header",
    "401": "No or bad credentials",
    "403": "Not allowed for this role or device",
    "404": "Unknown ward, bed, stay, patient or flag",
    "409": "Conflicts with the board's state",
    "412": "If-Match names an old version",
    "413": "Body over 1 MiB",
    "422": "Well-formed but invalid",
    "428": "If-Match missing",
}


def _errors(*codes: str) -> dict[str, Any]:
    return {
        code: {"description": _STATUS_TEXT[code], "content": {"application/json": {"schema": ERROR}}}
        for code in ("400", "401", "403", "413", *codes)
    }


def _json(schema: Schema, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}


def _param(name: str, where: str = "path", schema: Schema | None = None, required: bool = True) -> Schema:
    return {"name": name, "in": where, "required": required, "schema": schema or STR}


# If-Match is needed on a stay or bed PATCH, but its absence is answered 428 (DESIGN 4.2), not
# the 400/422 OpenAPI tools expect of a missing "required" header: so it is documented here.
IF_MATCH = {
    **_param("If-Match", "header", {"type": "string", "pattern": r'^"\d+"$'}, required=False),
    "description": "The version last seen, quoted. Needed on stay and bed PATCHes: 428 when absent.",
}
IF_MATCH_OPTIONAL = IF_MATCH


@cache
def document() -> dict[str, Any]:
    write_errors = _errors("404", "409", "422")
    patch_errors = _errors("404", "409", "412", "422", "428")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Ward whiteboard API",
            "version": "1",
            "description": "Live ward state: beds, stays, infection flags, discharge readiness.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Stay": STAY, "Bed": BED, "Flag": FLAG, "Error": ERROR},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/wards": {"get": {"summary": "Wards", "responses": {"200": _json(WARDS), **_errors()}}},
            "/api/v1/wards/{ward}": {
                "get": {
                    "summary": "Ward snapshot",
                    "parameters": [
                        _param("ward"),
                        _param("view", "query", {"enum": ["clinical", "display"]}, required=False),
                    ],
                    "responses": {"200": _json(SNAPSHOT), **_errors("404")},
                }
            },
            "/api/v1/wards/{ward}/events": {
                "get": {
                    "summary": "Event log since a seq",
                    "parameters": [
                        _param("ward"),
                        _param("since", "query", {"type": "integer", "minimum": 0}, required=False),
                        _param(
                            "limit",
                            "query",
                            {"type": "integer", "minimum": 1, "maximum": 1000},
                            required=False,
                        ),
                    ],
                    "responses": {"200": _json(EVENTS), **_errors("404")},
                }
            },
            "/api/v1/stays": {
                "post": {
                    "summary": "Admit by hand",
                    "requestBody": _body(AdmitBody),
                    "responses": {"201": _json(STAY, "Admitted"), **write_errors},
                }
            },
            "/api/v1/stays/{stay}/transfer": {
                "post": {
                    "summary": "Transfer to another bed",
                    "parameters": [_param("stay")],
                    "requestBody": _body(TransferBody),
                    "responses": {"200": _json(STAY), **write_errors},
                }
            },
            "/api/v1/stays/{stay}/discharge": {
                "post": {
                    "summary": "Discharge",
                    "parameters": [_param("stay")],
                    "requestBody": _body(DischargeBody),
                    "responses": {"200": _json(STAY), **write_errors},
                }
            },
            "/api/v1/stays/{stay}": {
                "patch": {
                    "summary": "Change a stay",
                    "parameters": [_param("stay"), IF_MATCH],
                    "requestBody": _body(StayPatch),
                    "responses": {"200": _json(STAY), **patch_errors},
                }
            },
            "/api/v1/beds/{bed}": {
                "patch": {
                    "summary": "Change a bed's state",
                    "parameters": [_param("bed"), IF_MATCH],
                    "requestBody": _body(BedPatch),
                    "responses": {"200": _json(BED), **patch_errors},
                }
            },
            "/api/v1/patients/{patient}/flags": {
                "post": {
                    "summary": "Raise an infection flag",
                    "parameters": [_param("patient")],
                    "requestBody": _body(FlagBody),
                    "responses": {"201": _json(FLAG, "Raised"), **write_errors},
                }
            },
            "/api/v1/flags/{flag}": {
                "patch": {
                    "summary": "Confirm or clear a flag",
                    "parameters": [_param("flag"), IF_MATCH_OPTIONAL],
                    "requestBody": _body(FlagPatch),
                    "responses": {"200": _json(FLAG), **_errors("404", "409", "412", "422")},
                }
            },
            "/api/v1/audit": {
                "get": {
                    "summary": "The audit trail (admin: everything; ipc: flag events)",
                    "parameters": [
                        _param(name, "query", required=False) for name in ("ward", "actor", "type", "patient")
                    ]
                    + [
                        _param(name, "query", {"type": "string", "format": "date-time"}, required=False)
                        for name in ("from", "to")
                    ]
                    + [
                        _param(
                            "limit",
                            "query",
                            {"type": "integer", "minimum": 1, "maximum": 1000},
                            required=False,
                        )
                    ],
                    "responses": {"200": _json(AUDIT), **_errors()},
                }
            },
            "/api/v1/hl7": {
                "post": {
                    "summary": "One HL7 v2 ADT message; the answer is its ACK",
                    "requestBody": {"required": False, "content": {"*/*": {"schema": {}}}},
                    "responses": {
                        "200": {"description": "The ACK", "content": {"application/hl7-v2": {"schema": STR}}},
                        **_errors(),
                    },
                }
            },
        },
    }


async def openapi(_request: Request) -> Response:
    return json_response(document())


routes = [Route("/api/v1/openapi.json", openapi, methods=["GET"])]
