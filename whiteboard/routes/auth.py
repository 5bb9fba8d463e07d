"""Who is calling: bearer tokens, staff session cookies and paired-display cookies.

Cookies are signed with itsdangerous and hold no secret of their own: a session names a user
and their session epoch (disabling the user moves the epoch on, ending every session), a
display cookie names a display (revoking it ends the cookie). CSRF for cookie-authenticated
writes is the session's own random token, sent back as X-CSRF-Token.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import HTTPConnection

from whiteboard.errors import Forbidden, Unauthenticated
from whiteboard.store import accounts
from whiteboard.store.accounts import Principal
from whiteboard.types import iso_z, utc_now

SESSION_COOKIE = "wb_session"
DISPLAY_COOKIE = "wb_display"
#: Outer bound of a session cookie's life; the settings' limits (default 12 h) are enforced on
#: the server-side session itself.
SESSION_ABSOLUTE_SECONDS = 24 * 3600
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

    def session_value(self, session_id: str) -> tuple[str, str]:
        """The cookie for a server-side session, and the session's CSRF token."""
        csrf = secrets.token_urlsafe(24)
        return self.sessions.dumps({"s": session_id, "c": csrf}), csrf

    def read_session(self, value: str) -> dict[str, Any] | None:
        # The signature's age is only an outer bound: the session row decides (idle, absolute,
        # signed out, user disabled).
        try:
            data = self.sessions.loads(value, max_age=SESSION_ABSOLUTE_SECONDS)
        except BadSignature:
            return None
        return data if isinstance(data, dict) and isinstance(data.get("s"), str) else None

    def display_value(self, display_id: str) -> str:
        return self.displays.dumps({"d": display_id})

    def read_display(self, value: str) -> str | None:
        try:
            data = self.displays.loads(value, max_age=DISPLAY_COOKIE_SECONDS)
        except BadSignature:
            return None
        return data.get("d") if isinstance(data, dict) else None


class KnownTokens:
    """Bearer tokens this process has found live, by digest: who each one is.

    A token's name and role never change (a name is never given to another token) — only
    whether it is revoked, and that is never answered from here: an edit made with a known
    token checks it in the write's own statement (`Repository.run`, `token=`), everything else
    looks the token up. Bounded; forgetting a token only costs that lookup again."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._principals: dict[str, Principal] = {}

    def get(self, digest: str) -> Principal | None:
        return self._principals.get(digest)

    def remember(self, digest: str, principal: Principal) -> None:
        if len(self._principals) >= self.limit and digest not in self._principals:
            self._principals.clear()
        self._principals[digest] = principal


def bearer_token(conn: HTTPConnection) -> str | None:
    """The bearer token sent, or None when none is; a malformed Authorization is refused."""
    header = conn.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization must be 'Bearer TOKEN'")
    return token.strip()


def known_bearer(conn: HTTPConnection) -> tuple[Caller, str] | None:
    """The caller behind a bearer token this process has found live before, and the token's
    digest — its liveness still to be checked, by the write (see `KnownTokens`)."""
    token = bearer_token(conn)
    if token is None:
        return None
    digest = accounts.digest(token)
    principal = conn.app.state.known_tokens.get(digest)
    return None if principal is None else (Caller(principal, "bearer"), digest)


async def token_still_live(conn: HTTPConnection, digest: str) -> None:
    """Unauthenticated unless the token with this digest is live now."""
    if not await accounts.token_live(conn.app.state.reader, digest):
        raise Unauthenticated("unknown or revoked token")


async def identify(conn: HTTPConnection, cookies: Cookies, engine: Any) -> Caller | None:
    """The caller behind a request or socket, or None. A bad bearer token is refused outright."""
    token = bearer_token(conn)
    if token is not None:
        principal = await accounts.token_principal(engine, token)
        if principal is None:
            raise Unauthenticated("unknown or revoked token")
        conn.app.state.known_tokens.remember(accounts.digest(token), principal)
        return Caller(principal, "bearer")
    raw = conn.cookies.get(SESSION_COOKIE)
    if raw:
        data = cookies.read_session(raw)
        if data is not None:
            state = conn.app.state
            found = await accounts.session_principal(engine, data["s"], state.session_limits)
            if found is not None:
                principal, last_seen = found
                if conn.scope["type"] == "http":
                    await _touch(state, principal, last_seen)
                return Caller(principal, "session", csrf=str(data.get("c")))
    raw = conn.cookies.get(DISPLAY_COOKIE)
    if raw:
        display_id = cookies.read_display(raw)
        if display_id:
            principal = await accounts.display_principal(engine, display_id)
            if principal is not None:
                return Caller(principal, "display")
    return None


async def _touch(state: Any, principal: Principal, last_seen: str) -> None:
    """A request is activity: slide the idle timeout (at most one write per `touch_every`)."""
    limits: accounts.SessionLimits = state.session_limits
    if principal.session and last_seen < iso_z(utc_now() - limits.touch_every):
        await accounts.touch_session(state.writer, principal.session)


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
