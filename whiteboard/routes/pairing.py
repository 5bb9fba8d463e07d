"""Pairing a wall display: GET and POST /displays/pair (DESIGN 4.1).

`whiteboard display add` prints `/displays/pair#CODE`. The code travels in the URL fragment, so
it never reaches the server's access log: the page's script reads `location.hash`, drops it
from the address bar, fills the form and posts it (a person can also type the code). A right
code answers 303 to the ward's wall with a long-lived, revocable `wb_display` cookie. A wrong,
used or expired code, or a missing or forged hidden field, is 400 with no cookie and counts
as a failure: after 10 from one client address in 10 minutes, 429 with Retry-After.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from whiteboard.routes.auth import DISPLAY_COOKIE, DISPLAY_COOKIE_SECONDS
from whiteboard.routes.origin import client_address
from whiteboard.routes.profiles import profile_names
from whiteboard.routes.throttle import pairing_window
from whiteboard.routes.web import form_token, form_token_ok, render, same_origin_post, set_cookie, who
from whiteboard.store import accounts

MAX_CODE = 64


def _profile(value: str | None) -> str | None:
    return value if value in profile_names() else None


async def _pair_page(
    request: Request, *, profile: str | None, error: str | None = None, status: int = 200
) -> Response:
    caller = await who(request)
    paired_ward = caller.principal.ward if caller is not None and caller.principal.kind == "display" else None
    context = {
        "title": "Pair this screen",
        "form_token": form_token(request, "pair"),
        "profile": profile,
        "error": error,
        "paired_ward": paired_ward,
        "wall_url": _wall_url(paired_ward, profile) if paired_ward else None,
    }
    return render(request, "pair.html", context, status=status)


def _wall_url(ward: str, profile: str | None) -> str:
    url = f"/wards/{quote(ward, safe='')}/display"
    return f"{url}?profile={quote(profile)}" if profile else url


async def pair_form(request: Request) -> Response:
    return await _pair_page(request, profile=_profile(request.query_params.get("profile")))


async def pair_submit(request: Request) -> Response:
    window = pairing_window(request)
    key = f"addr:{client_address(request, request.app.state.settings)}"
    wait = await window.retry_after(key)
    if wait is not None:
        response = await _pair_page(
            request,
            profile=None,
            error="Too many pairing attempts from this screen. "
            f"Try again in {max(1, round(wait / 60))} minute(s).",
            status=429,
        )
        response.headers["Retry-After"] = str(wait)
        return response
    async with request.form(max_files=0, max_fields=10) as form:
        code = str(form.get("code") or "")[:MAX_CODE]
        token = form.get("form_token")
        profile = _profile(str(form.get("profile") or "") or None)
    if (
        not isinstance(token, str)
        or not form_token_ok(request, "pair", token)
        or not same_origin_post(request)
    ):
        await window.fail(key)
        return await _pair_page(
            request,
            profile=profile,
            error="This pairing form had expired or did not come from this site. Please try again.",
            status=400,
        )
    principal = await accounts.pair_display(request.app.state.writer, code) if code.strip() else None
    if principal is None or principal.ward is None:
        await window.fail(key)
        return await _pair_page(
            request,
            profile=profile,
            error="That code did not work: it is wrong, already used or more than 10 minutes old. "
            "Ask for a new one (whiteboard display add).",
            status=400,
        )
    response = RedirectResponse(_wall_url(principal.ward, profile), status_code=303)
    set_cookie(
        request,
        response,
        DISPLAY_COOKIE,
        request.app.state.cookies.display_value(principal.name),
        max_age=DISPLAY_COOKIE_SECONDS,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


routes = [
    Route("/displays/pair", pair_form, methods=["GET"]),
    Route("/displays/pair", pair_submit, methods=["POST"]),
]
