"""GET /api/v1/audit: who changed what, when, across wards — from the event log itself.

Admins read everything; IPC reads the flag events only (DESIGN 4.5: "audit of flags").
Filters: ward, actor (exact, or a prefix ending in `*`, like `hl7:*`), type, from/to
(timestamps), patient (a patient id: events whose bed or unplaced list shows their stay).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Select, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from whiteboard.board.roles import allowed
from whiteboard.errors import BadRequest, Forbidden
from whiteboard.routes.api import json_response
from whiteboard.routes.auth import require
from whiteboard.routes.requests import only_query, query_int
from whiteboard.store.tables import events

FLAG_EVENTS = ("flag_raise", "flag_update")
_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?Z?)?$")
_WORD = re.compile(r"^[\w:.|@\-*]{1,200}$")


def _filters(request: Request, query: Select[Any], flags_only: bool) -> Select[Any]:
    q = request.query_params
    for name in ("ward", "actor", "type", "from", "to", "patient"):
        value = q.get(name)
        if value is not None and not (_STAMP if name in ("from", "to") else _WORD).match(value):
            raise BadRequest(f"{name}: not a valid filter value")
    if q.get("ward"):
        query = query.where(events.c.ward_code == q["ward"])
    actor = q.get("actor")
    if actor:
        query = query.where(
            events.c.actor.startswith(actor[:-1], autoescape=True)
            if actor.endswith("*")
            else events.c.actor == actor
        )
    if q.get("type"):
        query = query.where(events.c.type == q["type"])
    if q.get("from"):
        query = query.where(events.c.at >= q["from"])
    if q.get("to"):
        query = query.where(events.c.at <= q["to"])
    if flags_only:
        query = query.where(events.c.type.in_(FLAG_EVENTS))
    return query


async def audit(request: Request) -> Response:
    caller = await require(request)
    role = caller.principal.role
    if allowed(role, "administer"):
        flags_only = False
    elif allowed(role, "audit_flags"):
        flags_only = True
    else:
        raise Forbidden(f"role {role} may not read the audit trail")
    only_query(request, "ward", "actor", "type", "patient", "from", "to", "limit")
    limit = query_int(request, "limit", 500, 1, 1000)
    query = _filters(request, select(events), flags_only).order_by(events.c.at, events.c.id).limit(limit)
    patient = request.query_params.get("patient")
    async with request.app.state.reader.connect() as conn:
        rows = (await conn.execute(query)).all()
    out = []
    for row in rows:
        payload = row.payload or {}
        if patient and not _mentions(payload, patient):
            continue
        entry: dict[str, Any] = {
            "ward": row.ward_code,
            "seq": row.seq,
            "at": row.at,
            "actor": row.actor,
            "type": row.type,
        }
        entry.update({k: payload[k] for k in ("bed", "unplaced", "before", "detail") if k in payload})
        out.append(entry)
    return json_response({"events": out})


def _mentions(payload: dict[str, Any], patient_id: str) -> bool:
    stays = [payload.get("bed", {}) or {}, payload.get("before", {}) or {}]
    shown = [b.get("stay") for b in stays] + list(payload.get("unplaced") or [])
    return any(s and s.get("patient", {}).get("id") == patient_id for s in shown)


routes = [Route("/api/v1/audit", audit, methods=["GET"])]
