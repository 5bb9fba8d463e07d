"""Staff sign-in and sign-out: /login and /logout (DESIGN 4.1).

Sign-in checks the password with argon2 and sets the `wb_session` cookie (HttpOnly,
SameSite=Lax, Secure over HTTPS). At most 10 failures per username and per client address in
15 minutes; after that every attempt, right or wrong, is answered 429 with Retry-After until
the oldest failure ages out. Sign-out is a POST carrying the session's CSRF token.
"""

from __future__ import annotations

import hmac
import logging

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from whiteboard.routes.api import json_response
from whiteboard.routes.auth import SESSION_ABSOLUTE_SECONDS, SESSION_COOKIE
from whiteboard.routes.origin import client_address
from whiteboard.routes.throttle import login_window
from whiteboard.routes.web import (
    clear_cookie,
    form_token,
    form_token_ok,
    refresh_session,
    render,
    safe_next,
    same_origin_post,
    set_cookie,
    who,
)
from whiteboard.store import accounts

MAX_FIELD = 1000

log = logging.getLogger("whiteboard.auth")


def _login_page(
    request: Request,
    *,
    next_path: str,
    username: str = "",
    error: str | None = None,
    status: int = 200,
    signed_in_as: str | None = None,
) -> Response:
    context = {
        "title": "Sign in",
        "form_token": form_token(request, "login"),
        "next": next_path,
        "username": username,
        "error": error,
        "signed_in_as": signed_in_as,
    }
    return render(request, "login.html", context, status=status)


async def login_form(request: Request) -> Response:
    caller = await who(request)
    signed_in = caller.principal.name if caller is not None and caller.principal.kind == "user" else None
    return _login_page(request, next_path=safe_next(request.query_params.get("next")), signed_in_as=signed_in)


async def login_submit(request: Request) -> Response:
    async with request.form(max_files=0, max_fields=10) as form:
        username = str(form.get("username") or "")[:MAX_FIELD].strip()
        password = str(form.get("password") or "")[:MAX_FIELD]
        token = str(form.get("form_token") or "")
        next_path = safe_next(str(form.get("next") or "") or None)
    if not same_origin_post(request) or not form_token_ok(request, "login", token):
        return _login_page(
            request,
            next_path=next_path,
            username=username,
            error="This sign-in form had expired or did not come from this site. Please try again.",
            status=403,
        )
    window = login_window(request)
    keys = [f"user:{username.lower()}", f"addr:{client_address(request, request.app.state.settings)}"]
    wait = await window.blocked(keys)
    if wait is not None:
        response = _login_page(
            request,
            next_path=next_path,
            username=username,
            error=f"Too many failed sign-in attempts. Try again in {max(1, round(wait / 60))} minute(s).",
            status=429,
        )
        response.headers["Retry-After"] = str(wait)
        return response
    checked = (
        await accounts.check_password(request.app.state.reader, username, password) if username else None
    )
    if checked is None:
        await window.fail(*keys)
        log.warning(
            "failed sign-in for %r from %s",
            username[:100],
            client_address(request, request.app.state.settings),
        )
        return _login_page(
            request,
            next_path=next_path,
            username=username,
            error="The username or password is not right, or the account is disabled.",
            status=401,
        )
    principal, _epoch = checked
    await window.reset(keys[0])
    session_id = await accounts.start_session(request.app.state.writer, principal.name)
    value, _csrf = request.app.state.cookies.session_value(session_id)
    log.info(
        "sign-in: %s (%s) from %s",
        principal.name,
        principal.role,
        client_address(request, request.app.state.settings),
    )
    response = RedirectResponse(next_path, status_code=303)
    set_cookie(request, response, SESSION_COOKIE, value, max_age=SESSION_ABSOLUTE_SECONDS)
    response.headers["Cache-Control"] = "no-store"
    return response


async def logout_form(request: Request) -> Response:
    caller = await who(request)
    if caller is None or caller.via != "session":
        return RedirectResponse("/login", status_code=303)
    return render(request, "logout.html", {"title": "Sign out"}, caller=caller)


async def logout_submit(request: Request) -> Response:
    caller = await who(request)
    async with request.form(max_files=0, max_fields=5) as form:
        sent = str(form.get("csrf") or "") or request.headers.get("x-csrf-token", "")
    forged = not same_origin_post(request) or not hmac.compare_digest(
        sent, "" if caller is None else caller.csrf or ""
    )
    if caller is not None and caller.via == "session" and forged:
        return render(
            request,
            "logout.html",
            {"title": "Sign out", "error": "That sign-out did not come from this site. Use the button."},
            caller=caller,
            status=403,
        )
    if caller is not None and caller.via == "session" and caller.principal.session:
        # Ends the session on the server: its sockets close (1008) within a second or two.
        await accounts.end_session(request.app.state.writer, caller.principal.session)
        log.info("sign-out: %s", caller.principal.name)
    response = RedirectResponse("/login", status_code=303)
    clear_cookie(request, response, SESSION_COOKIE)
    response.headers["Cache-Control"] = "no-store"
    return response


async def keep_alive(request: Request) -> Response:
    """POST /session/keepalive: a page in use (taps, typing) keeps its session from idling out."""
    caller = await who(request)
    if caller is None or caller.via != "session":
        return json_response({"error": {"code": "unauthenticated", "message": "sign in again"}}, 401)
    if not same_origin_post(request) or not hmac.compare_digest(
        request.headers.get("x-csrf-token", ""), caller.csrf or ""
    ):
        refused = {"error": {"code": "forbidden", "message": "missing or wrong X-CSRF-Token"}}
        return json_response(refused, 403)
    response = json_response({"user": caller.principal.name})
    refresh_session(request, response)
    return response


routes = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login_submit, methods=["POST"]),
    Route("/logout", logout_form, methods=["GET"]),
    Route("/logout", logout_submit, methods=["POST"]),
    Route("/session/keepalive", keep_alive, methods=["POST"]),
]
