"""Origins and forwarded headers: which page may open a socket, and what the client really is.

`own_origin` and `is_https` read the ASGI scope itself rather than Starlette's `conn.url`: the
security headers ask `is_https` of every HTTP response, and building the URL object for it
(parsing the Host header, joining and splitting a URL) was ~2 % of a server's CPU in the burst
benchmark, to learn a scheme the scope already holds.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection
from starlette.types import Scope

from whiteboard.settings import Settings

_SECURE_SCHEMES = frozenset({"https", "wss"})


def client_address(conn: HTTPConnection, settings: Settings) -> str:
    """The caller's address; X-Forwarded-For is believed only from a trusted proxy."""
    peer = conn.client.host if conn.client else ""
    if peer in settings.trusted_proxies:
        forwarded = conn.headers.get("x-forwarded-for", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        # Walk back from the nearest hop past our own proxies: the first stranger is the client.
        for hop in reversed(hops):
            if hop not in settings.trusted_proxies:
                return hop
    return peer


def own_origin(scope: Scope, settings: Settings) -> str:
    """`scheme://host` as the client addressed us: from a trusted proxy, as its first
    X-Forwarded-Proto and X-Forwarded-Host say."""
    host = _header(scope, b"host") or ""
    scheme = _scheme(scope)
    if _peer(scope) in settings.trusted_proxies:
        scheme = _first_forwarded(scope, b"x-forwarded-proto", scheme)
        host = _first_forwarded(scope, b"x-forwarded-host", host)
    return f"{scheme}://{host}"


def is_https(scope: Scope, settings: Settings) -> bool:
    return own_origin(scope, settings).startswith("https://")


def origin_allowed(conn: HTTPConnection, origin: str, settings: Settings) -> bool:
    """Exact match only: no suffixes, no wildcards, and never the opaque origin `null`."""
    if origin == "null":
        return False
    allowed = settings.allowed_origins or (own_origin(conn.scope, settings),)
    return origin.rstrip("/") in allowed


def _scheme(scope: Scope) -> str:
    """`https` for a TLS connection (HTTP or WebSocket), else `http`: the scheme of an origin."""
    return "https" if scope.get("scheme", "http") in _SECURE_SCHEMES else "http"


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def _header(scope: Scope, name: bytes) -> str | None:
    """The first header called `name` (ASGI gives names in lower case), as `conn.headers.get`."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _first_forwarded(scope: Scope, name: bytes, default: str) -> str:
    """The first entry of a comma-separated forwarded header (the hop nearest the client), or
    `default` when it is missing or empty."""
    value = _header(scope, name)
    return (default if value is None else value).split(",")[0].strip() or default
