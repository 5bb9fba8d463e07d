"""The JSON API, /api/v1 (DESIGN 4.2). Each handler: who, may they, what did they send, do it.

Authorisation always comes before the body is read or validated, so a caller who may not act
learns nothing about their input.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from whiteboard.board.roles import allowed
from whiteboard.board.views import VIEWS, bed_json, flag_detail_json, snapshot, stay_json
from whiteboard.errors import BadRequest, Forbidden, NotFound, Throttled, WhiteboardError
from whiteboard.routes.auth import Caller, check_csrf, known_bearer, require, token_still_live
from whiteboard.routes.requests import (
    AdmitBody,
    BedPatch,
    DischargeBody,
    FlagBody,
    FlagPatch,
    StayPatch,
    TransferBody,
    if_match,
    json_body,
    only_query,
    optional_if_match,
    parse,
    query_int,
    read_body,
)
from whiteboard.service import BoardService, PatientDetails


def json_response(data: Any, status: int = 200, etag: int | None = None) -> Response:
    headers = {"Cache-Control": "no-store"}
    if etag is not None:
        headers["ETag"] = f'"{etag}"'
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def authorise(caller: Caller, action: str) -> None:
    if not allowed(caller.principal.role, action):
        raise Forbidden(f"role {caller.principal.role} may not {action.replace('_', ' ')}")


async def writer(request: Request, action: str) -> Caller:
    caller = await require(request)
    authorise(caller, action)
    check_csrf(request, caller)
    throttle_writes(request, caller)
    return caller


async def edit_writer(request: Request, action: str) -> tuple[Caller, str | None]:
    """`writer` for the bed and stay edits (most of an integration's writes): a bearer token
    this process has found live before is not looked up again, and its digest comes back for
    the write to check, in its own statement, that it is still live (`Repository.run`). Any
    refusal on the way is first checked against the token, so a revoked one hears 401 before
    anything else, as if it had been looked up first."""
    known = known_bearer(request)
    if known is None:
        return await writer(request, action), None
    caller, digest = known
    async with refused_first_if_revoked(request, digest):
        authorise(caller, action)
        throttle_writes(request, caller)
    return caller, digest


@contextlib.asynccontextmanager
async def refused_first_if_revoked(request: Request, token: str | None) -> AsyncIterator[None]:
    """A refusal of an edit made with a token not yet checked: 401 if the token is revoked."""
    try:
        yield
    except WhiteboardError:
        if token is not None:
            await token_still_live(request, token)
        raise


def throttle_writes(request: Request, caller: Caller) -> None:
    wait = request.app.state.write_limit.take(caller.principal.actor)
    if wait is not None:
        raise Throttled(f"too many writes from {caller.principal.actor}; slow down", wait)


def service(request: Request) -> BoardService:
    return request.app.state.service  # type: ignore[no-any-return]


# --- reads ---------------------------------------------------------------------------------------


async def list_wards(request: Request) -> Response:
    caller = await require(request)
    authorise(caller, "read_clinical")
    return json_response(await service(request).repo.list_wards())


def requested_view(request: Request, caller: Caller) -> str:
    default = "display" if caller.principal.role == "display" else "clinical"
    view = request.query_params.get("view", default)
    if view not in VIEWS:
        raise BadRequest("view must be clinical or display")
    return view


def may_read_ward(caller: Caller, ward: str, view: str) -> None:
    p = caller.principal
    if p.role == "display":
        if view != "display" or p.ward != ward:
            raise Forbidden("a display reads only its own ward, in the display view")
        return
    authorise(caller, "read_clinical" if view == "clinical" else "read_display")


async def ward_snapshot(request: Request) -> Response:
    caller = await require(request)
    ward = request.path_params["ward"]
    view = requested_view(request, caller)
    may_read_ward(caller, ward, view)
    only_query(request, "view")
    board = await service(request).repo.board(ward)
    return json_response(snapshot(board, view))  # type: ignore[arg-type]


async def ward_events(request: Request) -> Response:
    caller = await require(request)
    authorise(caller, "read_events")
    ward = request.path_params["ward"]
    only_query(request, "since", "limit")
    since = query_int(request, "since", 0, 0, 10**15)
    limit = query_int(request, "limit", 1000, 1, 1000)
    repo = service(request).repo
    if not await repo.ward_exists(ward):
        raise NotFound(f"ward {ward} is not known")
    records = await repo.events_since(ward, since, limit=limit)
    return json_response({"events": [r.api_json() for r in records]})


# --- patients moving -------------------------------------------------------------------------------


async def admit(request: Request) -> Response:
    caller = await writer(request, "move_patients")
    body = parse(AdmitBody, await json_body(request))
    p = body.patient
    details = PatientDetails(
        nhs_number=(p.nhs_number or "").replace(" ", "") or None,
        mrn=p.mrn,
        given_name=p.given_name,
        family_name=p.family_name,
        dob=p.dob,
        sex=p.sex,
    )
    outcome = await service(request).admit(
        caller.principal, body.bed, details, body.consultant, body.named_nurse, body.edd
    )
    assert outcome.stay is not None
    return json_response(stay_json(outcome.stay), 201, etag=outcome.stay.version)


async def transfer(request: Request) -> Response:
    caller = await writer(request, "move_patients")
    body = parse(TransferBody, await json_body(request))
    outcome = await service(request).transfer(caller.principal, request.path_params["stay"], body.bed)
    assert outcome.stay is not None
    return json_response(stay_json(outcome.stay), etag=outcome.stay.version)


async def discharge(request: Request) -> Response:
    caller = await writer(request, "move_patients")
    parse(DischargeBody, await json_body(request))
    outcome = await service(request).discharge(caller.principal, request.path_params["stay"])
    assert outcome.stay is not None
    return json_response(stay_json(outcome.stay), etag=outcome.stay.version)


# --- edits -----------------------------------------------------------------------------------------


async def patch_stay(request: Request) -> Response:
    caller, token = await edit_writer(request, "edit_stay")
    async with refused_first_if_revoked(request, token):
        version = if_match(request)
        body = parse(StayPatch, await json_body(request))
        changes: dict[str, Any] = {k: getattr(body, k) for k in body.model_fields_set}
        if body.discharge is not None:
            changes["discharge"] = body.discharge.model_dump(exclude_unset=True)
        outcome = await service(request).update_stay(
            caller.principal, request.path_params["stay"], version, changes, token
        )
    assert outcome.stay is not None
    return json_response(stay_json(outcome.stay), etag=outcome.stay.version)


async def patch_bed(request: Request) -> Response:
    caller, token = await edit_writer(request, "edit_bed")
    async with refused_first_if_revoked(request, token):
        version = if_match(request)
        body = parse(BedPatch, await json_body(request))
        outcome = await service(request).update_bed(
            caller.principal, request.path_params["bed"], version, body.state, token
        )
    assert outcome.bed is not None
    return json_response(bed_json(outcome.bed), etag=outcome.bed.version)


# --- infection flags -------------------------------------------------------------------------------


async def raise_flag(request: Request) -> Response:
    caller = await writer(request, "raise_suspected_flag")
    data = await json_body(request)
    # A role allowed only part of this (suspected, not confirmed) hears 403 before validation.
    if isinstance(data, dict) and data.get("status") == "confirmed":
        authorise(caller, "raise_confirmed_flag")
    body = parse(FlagBody, data)
    outcome = await service(request).raise_flag(
        caller.principal, request.path_params["patient"], body.code, body.status, body.precaution
    )
    assert outcome.flag is not None
    return json_response(flag_detail_json(outcome.flag), 201, etag=outcome.flag.version)


async def patch_flag(request: Request) -> Response:
    caller = await writer(request, "update_flag")
    version = optional_if_match(request)
    body = parse(FlagPatch, await json_body(request))
    outcome = await service(request).update_flag(
        caller.principal, request.path_params["flag"], body.status, version
    )
    assert outcome.flag is not None
    return json_response(flag_detail_json(outcome.flag), etag=outcome.flag.version)


async def post_hl7(request: Request) -> Response:
    """One ADT message in any content type; always 200 with the ACK, but for 401, 403 and 413."""
    caller = await require(request)
    authorise(caller, "post_hl7")
    check_csrf(request, caller)
    throttle_writes(request, caller)
    raw = await read_body(request)
    ack = await request.app.state.feed.receive(raw)
    return Response(
        ack.encode(), media_type="application/hl7-v2; charset=utf-8", headers={"Cache-Control": "no-store"}
    )


#: The router tries routes in order, each a regular expression: the busiest first (bed and
#: stay edits were the 12th and 11th, ~20 µs a call of matching what they were not).
routes = [
    Route("/api/v1/beds/{bed}", patch_bed, methods=["PATCH"]),
    Route("/api/v1/stays/{stay}", patch_stay, methods=["PATCH"]),
    Route("/api/v1/hl7", post_hl7, methods=["POST"]),
    Route("/api/v1/wards", list_wards, methods=["GET"]),
    Route("/api/v1/wards/{ward}", ward_snapshot, methods=["GET"]),
    Route("/api/v1/wards/{ward}/events", ward_events, methods=["GET"]),
    Route("/api/v1/stays", admit, methods=["POST"]),
    Route("/api/v1/stays/{stay}/transfer", transfer, methods=["POST"]),
    Route("/api/v1/stays/{stay}/discharge", discharge, methods=["POST"]),
    Route("/api/v1/patients/{patient}/flags", raise_flag, methods=["POST"]),
    Route("/api/v1/flags/{flag}", patch_flag, methods=["PATCH"]),
]
