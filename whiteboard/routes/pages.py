"""The HTML pages staff and wall screens look at (DESIGN 4.1), and the trust-wide IPC read.

    /                      wards, grouped by site                       signed-in staff
    /wards/CODE            tablet board, clinical view                  signed-in staff
    /wards/CODE/display    wall screen, display view                    a display paired to CODE,
                                                                        or signed-in staff
    /ipc                   trust-wide infection board                   clinical readers
    /capacity              beds across sites, occupancy this week       clinical readers
    GET /api/v1/ipc        the IPC board's data (JSON)                  clinical readers

Pages render a small context and leave the live state to their script: each screen opens its
ward's socket (or every ward's, for the trust boards) and draws what arrives. A wall page is
rendered from the display view only: nothing identifying is in its HTML either.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from whiteboard.board.model import ALERTS, KNOWN_ORGANISMS
from whiteboard.board.roles import allowed
from whiteboard.routes import trustwide
from whiteboard.routes.api import authorise, json_response
from whiteboard.routes.auth import Caller, require
from whiteboard.routes.chart import Series, line_chart, sparkline
from whiteboard.routes.profiles import choose, load_profiles
from whiteboard.routes.web import WARD_TZ, render, staff, ward_now, who
from whiteboard.types import now_z

#: What a page may offer, by the role matrix; the page hides what the role cannot do.
ACTIONS = (
    "move_patients",
    "edit_stay",
    "edit_bed",
    "raise_suspected_flag",
    "raise_confirmed_flag",
    "update_flag",
)

ALERT_LABELS = {
    "falls_risk": "Falls risk",
    "dnacpr": "DNACPR",
    "allergy": "Allergy",
    "nil_by_mouth": "Nil by mouth",
    "dementia": "Dementia",
    "learning_disability": "Learning disability",
    "pressure_ulcer_risk": "Pressure ulcer risk",
    "diabetes": "Diabetes",
    "hearing_impaired": "Hearing impaired",
    "visually_impaired": "Visually impaired",
    "oxygen": "Oxygen",
    "bariatric": "Bariatric",
}


def can(caller: Caller) -> list[str]:
    return [a for a in ACTIONS if allowed(caller.principal.role, a)]


def reader(request: Request) -> Any:
    return request.app.state.reader


async def not_found(request: Request, caller: Caller | None, what: str) -> Response:
    return render(request, "404.html", {"title": "Not found", "what": what}, status=404, caller=caller)


async def forbidden(request: Request, caller: Caller) -> Response:
    return render(
        request,
        "error.html",
        {"title": "Not allowed", "message": f"The {caller.principal.role} role cannot open this page."},
        status=403,
        caller=caller,
    )


# --- wards ---------------------------------------------------------------------------------------


async def index(request: Request) -> Response:
    caller = await who(request)
    if caller is not None and caller.principal.kind == "display" and caller.principal.ward:
        # A kiosk may start at `/?profile=NAME` after a reboot: it lands on its own wall.
        target = f"/wards/{quote(caller.principal.ward, safe='')}/display"
        profile = request.query_params.get("profile")
        if profile in load_profiles():
            target += f"?profile={quote(profile or '')}"
        return RedirectResponse(target, status_code=303)
    checked = await staff(request)
    if isinstance(checked, Response):
        return checked
    if not allowed(checked.principal.role, "read_clinical"):
        return await forbidden(request, checked)
    counts = {w["code"]: w for w in await request.app.state.service.repo.list_wards()}
    sites: dict[str, dict[str, Any]] = {}
    for ward in await trustwide.ward_list(reader(request)):
        site = sites.setdefault(ward.site, {"code": ward.site, "name": ward.site_name, "wards": []})
        site["wards"].append({"info": ward, **counts.get(ward.code, {"beds_total": 0, "beds_free": 0})})
    return render(request, "wards.html", {"title": "Wards", "sites": list(sites.values())}, caller=checked)


async def tablet(request: Request) -> Response:
    checked = await staff(request)
    if isinstance(checked, Response):
        return checked
    if not allowed(checked.principal.role, "read_clinical"):
        return await forbidden(request, checked)
    ward = await trustwide.ward_info(reader(request), request.path_params["ward"])
    if ward is None:
        return await not_found(request, checked, f"ward {request.path_params['ward']}")
    context = {
        "title": f"{ward.name} board",
        "ward": ward,
        "can": can(checked),
        "alerts": [(a, ALERT_LABELS.get(a, a)) for a in ALERTS],
        "organisms": KNOWN_ORGANISMS,
    }
    return render(request, "board.html", context, caller=checked)


async def wall(request: Request) -> Response:
    code = request.path_params["ward"]
    profile_name = request.query_params.get("profile")
    caller = await who(request)
    if caller is None:
        return RedirectResponse("/displays/pair", status_code=303)
    p = caller.principal
    if p.kind == "display":
        if p.ward != code:
            target = f"/wards/{quote(p.ward or '', safe='')}/display"
            if profile_name in load_profiles():
                target += f"?profile={quote(profile_name or '')}"
            return RedirectResponse(target, status_code=303)
    elif not allowed(p.role, "read_display"):
        return RedirectResponse("/displays/pair", status_code=303)
    ward = await trustwide.ward_info(reader(request), code)
    if ward is None:
        return await not_found(request, caller if p.kind != "display" else None, f"ward {code}")
    context = {
        "title": f"{ward.name} — wall",
        "ward": ward,
        "profile": choose(profile_name),
        "viewer": "display" if p.kind == "display" else "staff",
        # What a display may show in public: the legend lists these symbols.
        "public_alerts": [
            (a, ALERT_LABELS[a]) for a in ("falls_risk", "dementia", "nil_by_mouth", "pressure_ulcer_risk")
        ],
    }
    # A staff member looking at a wall gets no CSRF token on it: the wall never writes.
    return render(request, "wall.html", context)


# --- trust-wide boards ---------------------------------------------------------------------------


async def ipc_page(request: Request) -> Response:
    checked = await staff(request)
    if isinstance(checked, Response):
        return checked
    if not allowed(checked.principal.role, "read_clinical"):
        return await forbidden(request, checked)
    wards = await trustwide.ward_list(reader(request))
    context = {
        "title": "Infection prevention and control",
        "wards": wards,
        "can": can(checked),
        "organisms": KNOWN_ORGANISMS,
    }
    return render(request, "ipc.html", context, caller=checked)


async def ipc_data(request: Request) -> Response:
    caller = await require(request)
    authorise(caller, "read_clinical")
    now = ward_now()
    data = await trustwide.ipc_board(reader(request), now.date(), WARD_TZ)
    return json_response({"generated_at": now_z(), **data})


async def capacity_page(request: Request) -> Response:
    checked = await staff(request)
    if isinstance(checked, Response):
        return checked
    if not allowed(checked.principal.role, "read_clinical"):
        return await forbidden(request, checked)
    now = ward_now()
    sites = await trustwide.capacity(reader(request), now.date(), now)
    chart = line_chart([Series(s.name, s.history) for s in sites], WARD_TZ)
    sparks = {w.info.code: sparkline(w.history, w.total) for s in sites for w in s.wards}
    context = {
        "title": "Capacity",
        "sites": sites,
        "chart": chart,
        "sparks": sparks,
        "today": now.date(),
        "wards": [w.info for s in sites for w in s.wards],
        "generated": now.strftime("%H:%M"),
    }
    return render(request, "capacity.html", context, caller=checked)


routes = [
    Route("/", index, methods=["GET"]),
    Route("/wards/{ward}", tablet, methods=["GET"]),
    Route("/wards/{ward}/display", wall, methods=["GET"]),
    Route("/ipc", ipc_page, methods=["GET"]),
    Route("/capacity", capacity_page, methods=["GET"]),
    Route("/api/v1/ipc", ipc_data, methods=["GET"]),
]
