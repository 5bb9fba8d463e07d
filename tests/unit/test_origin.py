"""Our own origin, and whether a request came over HTTPS, read straight from the ASGI scope.

`own_origin` and `is_https` used to go through Starlette's `conn.url`; they now read the scope's
scheme and headers. These tests hold them to the answers the URL-based code gave (kept here as
`by_url`), over HTTP and WebSocket scopes, direct and through proxies trusted or not, and the
security headers every HTTP response carries.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from starlette.requests import HTTPConnection
from starlette.types import Message, Receive, Scope, Send

from whiteboard.app import CSP, SecurityHeaders
from whiteboard.routes.origin import is_https, origin_allowed, own_origin
from whiteboard.settings import Settings

PROXY = "10.0.0.2"
SETTINGS = Settings(secret_key="x" * 32, trusted_proxies=(PROXY,))


def by_url(scope: Scope, settings: Settings) -> str:
    """The origin as the code before this change worked it out, through `conn.url`."""
    conn = HTTPConnection(scope)
    peer = conn.client.host if conn.client else ""
    scheme = "https" if conn.url.scheme in ("https", "wss") else "http"
    host = conn.headers.get("host", "")
    if peer in settings.trusted_proxies:
        scheme = conn.headers.get("x-forwarded-proto", scheme).split(",")[0].strip() or scheme
        host = conn.headers.get("x-forwarded-host", host).split(",")[0].strip() or host
    return f"{scheme}://{host}"


def scope_of(scheme: str, peer: str | None, headers: dict[str, str]) -> Scope:
    """A scope as uvicorn builds one: the listening address always there, names lower case."""
    return {
        "type": "websocket" if scheme.startswith("ws") else "http",
        "scheme": scheme,
        "server": ("127.0.0.1", 8000),
        "client": None if peer is None else (peer, 51234),
        "path": "/ws/wards/W01" if scheme.startswith("ws") else "/",
        "query_string": b"",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
    }


SCHEMES = ["http", "https", "ws", "wss"]
PEERS = [PROXY, "192.0.2.7", None]  # a trusted proxy, a stranger, no client address
HOSTS: list[dict[str, str]] = [
    {"host": "ward.example.nhs.uk"},
    {"host": "ward.example.nhs.uk:8443"},
    {"host": "[::1]:8000"},
    {"host": "a.example, b.example"},  # split only when a trusted proxy's word is taken
    {"host": ""},
    {},
]
FORWARDED: list[dict[str, str]] = [
    {},
    {"x-forwarded-proto": "https"},
    {"x-forwarded-proto": "http"},
    {"x-forwarded-proto": "https, http"},
    {"x-forwarded-proto": " , https"},  # an empty first entry: the connection's own scheme
    {"x-forwarded-proto": "HTTPS"},  # not "https": the old code did not lower it, nor do we
    {"x-forwarded-proto": "wss"},
    {"x-forwarded-host": "board.example"},
    {"x-forwarded-host": "board.example, inner.local", "x-forwarded-proto": "https"},
    {"x-forwarded-host": ""},
]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_same_origin_and_https_answer_as_through_the_url(scheme: str) -> None:
    for peer, host, forwarded in itertools.product(PEERS, HOSTS, FORWARDED):
        scope = scope_of(scheme, peer, {**host, **forwarded})
        expected = by_url(scope, SETTINGS)
        case = f"{scheme} from {peer} with {host | forwarded}"
        assert own_origin(scope, SETTINGS) == expected, case
        assert is_https(scope, SETTINGS) is expected.startswith("https://"), case


@pytest.mark.parametrize(
    ("scheme", "peer", "headers", "origin"),
    [
        ("http", "192.0.2.7", {"host": "h:8000"}, "http://h:8000"),
        ("https", "192.0.2.7", {"host": "h"}, "https://h"),
        ("ws", "192.0.2.7", {"host": "h:8000"}, "http://h:8000"),
        ("wss", "192.0.2.7", {"host": "h"}, "https://h"),
        # A stranger's forwarded headers are not believed...
        (
            "http",
            "192.0.2.7",
            {"host": "h", "x-forwarded-proto": "https", "x-forwarded-host": "x"},
            "http://h",
        ),
        ("wss", "192.0.2.7", {"host": "h", "x-forwarded-proto": "http"}, "https://h"),
        # ... a trusted proxy's are, its first entry (the hop nearest the client).
        ("http", PROXY, {"host": "h", "x-forwarded-proto": "https", "x-forwarded-host": "x"}, "https://x"),
        ("ws", PROXY, {"host": "h", "x-forwarded-proto": "https, http"}, "https://h"),
        ("https", PROXY, {"host": "h", "x-forwarded-proto": "http"}, "http://h"),
        ("wss", PROXY, {"host": "h"}, "https://h"),
    ],
)
def test_own_origin_by_scheme_and_proxy(scheme: str, peer: str, headers: dict[str, str], origin: str) -> None:
    scope = scope_of(scheme, peer, headers)
    assert own_origin(scope, SETTINGS) == origin
    assert is_https(scope, SETTINGS) is origin.startswith("https://")


def test_the_first_of_repeated_headers_counts_as_starlette_reads_it() -> None:
    scope = scope_of("http", PROXY, {})
    scope["headers"] = [
        (b"host", b"first"),
        (b"host", b"second"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-proto", b"http"),
    ]
    assert own_origin(scope, SETTINGS) == by_url(scope, SETTINGS) == "https://first"


def test_a_socket_origin_is_checked_against_the_origin_it_was_addressed_by() -> None:
    direct = HTTPConnection(scope_of("wss", "192.0.2.7", {"host": "ward.example"}))
    assert origin_allowed(direct, "https://ward.example", SETTINGS)
    assert not origin_allowed(direct, "http://ward.example", SETTINGS)
    assert not origin_allowed(direct, "null", SETTINGS)
    proxied = HTTPConnection(
        scope_of(
            "ws",
            PROXY,
            {"host": "app:8000", "x-forwarded-proto": "https", "x-forwarded-host": "ward.example"},
        )
    )
    assert origin_allowed(proxied, "https://ward.example/", SETTINGS)
    assert not origin_allowed(proxied, "http://app:8000", SETTINGS)


async def headers_of(scope: Scope) -> list[tuple[bytes, bytes]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await SecurityHeaders(app, SETTINGS)(scope, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    headers: Any = sent[0]["headers"]
    return headers  # the list itself, as later layers would see it


SECURITY = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


@pytest.mark.parametrize(
    ("scheme", "peer", "headers", "hsts"),
    [
        ("http", "192.0.2.7", {"host": "h"}, False),
        ("https", "192.0.2.7", {"host": "h"}, True),
        ("http", "192.0.2.7", {"host": "h", "x-forwarded-proto": "https"}, False),  # not a proxy of ours
        ("http", PROXY, {"host": "h", "x-forwarded-proto": "https"}, True),
        ("https", PROXY, {"host": "h", "x-forwarded-proto": "http"}, False),
    ],
)
async def test_every_response_gets_the_security_headers_and_hsts_only_over_https(
    scheme: str, peer: str, headers: dict[str, str], hsts: bool
) -> None:
    sent = await headers_of(scope_of(scheme, peer, headers) | {"method": "GET"})
    assert sent == [(b"content-type", b"text/plain"), *([HSTS] if hsts else []), *SECURITY]


async def test_responses_do_not_share_one_header_list() -> None:
    """The headers are built once, but each response gets its own list: one response's
    headers changed by a later layer must not leak into the next."""
    first = await headers_of(scope_of("http", None, {"host": "h"}) | {"method": "GET"})
    first.append((b"x-extra", b"1"))
    second = await headers_of(scope_of("http", None, {"host": "h"}) | {"method": "GET"})
    assert (b"x-extra", b"1") not in second
