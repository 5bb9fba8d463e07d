"""Origins and forwarded headers: which page may open a socket, and what the client really is."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from whiteboard.settings import Settings


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


def own_origin(conn: HTTPConnection, settings: Settings) -> str:
    peer = conn.client.host if conn.client else ""
    scheme = "https" if conn.url.scheme in ("https", "wss") else "http"
    host = conn.headers.get("host", "")
    if peer in settings.trusted_proxies:
        scheme = conn.headers.get("x-forwarded-proto", scheme).split(",")[0].strip() or scheme
        host = conn.headers.get("x-forwarded-host", host).split(",")[0].strip() or host
    return f"{scheme}://{host}"


def is_https(conn: HTTPConnection, settings: Settings) -> bool:
    return own_origin(conn, settings).startswith("https://")


def origin_allowed(conn: HTTPConnection, origin: str, settings: Settings) -> bool:
    """Exact match only: no suffixes, no wildcards, and never the opaque origin `null`."""
    if origin == "null":
        return False
    allowed = settings.allowed_origins or (own_origin(conn, settings),)
    return origin.rstrip("/") in allowed
