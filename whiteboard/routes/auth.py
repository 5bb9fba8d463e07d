"""Who is calling: bearer tokens, staff session cookies and paired-display cookies.

Cookies are signed with itsdangerous and hold no secret of their own: a session names a user
and their session epoch (disabling the user moves the epoch on, ending every session), a
display cookie names a display (revoking it ends the cookie). CSRF for cookie-authenticated
writes is the session's own random token, sent back as X-CSRF-Token.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import HTTPConnection

from whiteboard.errors import Forbidden, Unauthenticated
from whiteboard.store import accounts
from whiteboard.store.accounts import Principal

SESSION_COOKIE = "wb_session"
DISPLAY_COOKIE = "wb_display"
SESSION_IDLE_SECONDS = 15 * 60
SESSION_ABSOLUTE_SECONDS = 12 * 3600
DISPLAY_COOKIE_SECONDS = 400 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    via: str  # "bearer" | "session" | "display"
    csrf: str | None = None


class Cookies:
    def __init__(self, secret_key: str) -> None:
        self.sessions = URLSafeTimedSerializer(secret_key, salt="whiteboard.session")
        self.displays = URLSafeTimedSerializer(secret_key, salt="whiteboard.display")

    def session_value(self, username: str, epoch: int, issued: float | None = None) -> tuple[str, str]:
        csrf = secrets.token_urlsafe(24)
        value = self.sessions.dumps({"u": username, "e": epoch, "i": int(issued or time.time()), "c": csrf})
        return value, csrf

    def read_session(self, value: str) -> dict[str, Any] | None:
        try:
            data = self.sessions.loads(value, max_age=SESSION_IDLE_SECONDS)
        except BadSignature:
            return None
        if not isinstance(data, dict) or time.time() - int(data.get("i", 0)) > SESSION_ABSOLUTE_SECONDS:
            return None
        return data

    def display_value(self, display_id: str) -> str:
        return self.displays.dumps({"d": display_id})

    def read_display(self, value: str) -> str | None:
        try:
            data = self.displays.loads(value, max_age=DISPLAY_COOKIE_SECONDS)
        except BadSignature:
            return None
        return data.get("d") if isinstance(data, dict) else None


async def identify(conn: HTTPConnection, cookies: Cookies, engine: Any) -> Caller | None:
    """The caller behind a request or socket, or None. A bad bearer token is refused outright."""
    header = conn.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("Authorization must be 'Bearer TOKEN'")
        principal = await accounts.token_principal(engine, token.strip())
        if principal is None:
            raise Unauthenticated("unknown or revoked token")
        return Caller(principal, "bearer")
    raw = conn.cookies.get(SESSION_COOKIE)
    if raw:
        data = cookies.read_session(raw)
        if data is not None:
            principal = await accounts.user_session(engine, str(data.get("u")), int(data.get("e", -1)))
            if principal is not None:
                return Caller(principal, "session", csrf=str(data.get("c")))
    raw = conn.cookies.get(DISPLAY_COOKIE)
    if raw:
        display_id = cookies.read_display(raw)
        if display_id:
            principal = await accounts.display_principal(engine, display_id)
            if principal is not None:
                return Caller(principal, "display")
    return None


async def require(conn: HTTPConnection) -> Caller:
    state = conn.app.state
    caller = await identify(conn, state.cookies, state.reader)
    if caller is None:
        raise Unauthenticated("sign in, or send Authorization: Bearer TOKEN")
    return caller


def check_csrf(conn: HTTPConnection, caller: Caller) -> None:
    """Cookie-authenticated writes must echo the session's CSRF token."""
    if caller.via == "bearer":
        return
    sent = conn.headers.get("x-csrf-token", "")
    if caller.csrf is None or not hmac.compare_digest(sent, caller.csrf):
        raise Forbidden("missing or wrong X-CSRF-Token")
