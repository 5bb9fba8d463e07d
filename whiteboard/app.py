"""The ASGI application: routes, middleware and the lifespan that owns every long-lived part."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Match, Mount, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from whiteboard.errors import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    Throttled,
    Unauthenticated,
    WhiteboardError,
)
from whiteboard.fanout.base import Broker
from whiteboard.fanout.hub import Hub
from whiteboard.fanout.memory import MemoryBroker
from whiteboard.hl7.feed import Feed
from whiteboard.hl7.mllp import start_mllp_server
from whiteboard.routes import api, audit, health, login, openapi, pages, pairing, ws
from whiteboard.routes.auth import Cookies, KnownTokens
from whiteboard.routes.origin import is_https
from whiteboard.routes.requests import MAX_BODY
from whiteboard.routes.throttle import TokenBucket
from whiteboard.routes.web import static_app
from whiteboard.service import BoardService
from whiteboard.settings import Settings
from whiteboard.store import migrate
from whiteboard.store.engine import open_engines
from whiteboard.store.repository import Repository

log = logging.getLogger("whiteboard")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)

#: Added to every HTTP response, encoded once rather than per response.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)
#: ... and to those that came over HTTPS (directly or via a trusted proxy), HSTS first.
HTTPS_HEADERS = ((b"strict-transport-security", b"max-age=31536000; includeSubDomains"), *SECURITY_HEADERS)


def make_broker(settings: Settings) -> Broker:
    if settings.redis_url:
        from whiteboard.fanout.redis import RedisBroker

        return RedisBroker(settings.redis_url, prefix=settings.redis_prefix)
    return MemoryBroker()


def create_app(
    settings: Settings, *, broker: Broker | None = None, mllp_host: str = "127.0.0.1"
) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        writer, reader = open_engines(settings.database_url)
        await migrate.upgrade(writer)
        the_broker = broker or make_broker(settings)
        repo = Repository(writer, reader, verify_cache=settings.verify_board_cache)
        hub = Hub(
            repo,
            the_broker,
            heartbeat_seconds=settings.heartbeat_seconds,
            catch_up_seconds=settings.catch_up_seconds,
            queue_limit=settings.queue_limit,
            session_limits=settings.session_limits,
        )
        app.state.settings = settings
        app.state.writer, app.state.reader = writer, reader
        app.state.broker = the_broker
        app.state.hub = hub
        app.state.service = BoardService(repo, the_broker)
        app.state.cookies = Cookies(settings.secret_key)
        app.state.known_tokens = KnownTokens()
        app.state.session_limits = settings.session_limits
        app.state.write_limit = TokenBucket(settings.write_rate, burst=settings.write_rate * 5)
        app.state.feed = Feed(app.state.service)
        await hub.start()
        await the_broker.start()
        # Which loop runs us matters to throughput (uvloop is the default; see server.py).
        log.info("event loop: %s", type(asyncio.get_running_loop()).__module__.split(".")[0])
        mllp = None
        if settings.mllp_port is not None:
            mllp = await start_mllp_server(app.state.feed.receive, mllp_host, settings.mllp_port)
            log.info("HL7 MLLP listener on %s:%s", mllp_host, settings.mllp_port)
        try:
            yield
        finally:
            if mllp is not None:
                mllp.close()
                await mllp.wait_closed()
            await hub.stop()
            await the_broker.stop()
            await repo.release_connections()
            repo.close()
            await writer.dispose()
            if reader is not writer:
                await reader.dispose()

    app = Whiteboard(
        live=ws.route,
        routes=[
            *api.routes,  # (first: see api.routes)
            *health.routes,
            *openapi.routes,
            *audit.routes,
            ws.route,
            *pages.routes,
            *pairing.routes,
            *login.routes,
            Mount("/static", app=static_app(), name="static"),
        ],
        lifespan=lifespan,
        exception_handlers={WhiteboardError: on_error, HTTPException: on_http_error, Exception: on_crash},
        middleware=[Middleware(SecurityHeaders, settings=settings), Middleware(BodyLimit)],
    )
    return app


class Whiteboard(Starlette):
    """The app, with the live socket ahead of the middleware stack.

    A live socket keeps its whole ASGI call stack for as long as it is open: hours, and
    thousands of sockets a process. None of that stack applies to it (the error page, the
    security headers and the body limit are HTTP's; the exception handlers answer with HTTP
    responses; the endpoint refuses and closes sockets itself), yet its layers cost each socket
    ~2 KiB of coroutines and closures. So a socket for /ws/wards/{ward}, matched by its own
    route as the router would, goes straight to its endpoint; everything else as usual.
    """

    def __init__(self, *, live: WebSocketRoute, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.live = live

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            match, child_scope = self.live.matches(scope)
            if match is Match.FULL:
                scope["app"] = self
                scope.update(child_scope)
                await self.live.app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def error_response(request: Request, exc: WhiteboardError) -> Response:
    headers = {"Cache-Control": "no-store"}
    if isinstance(exc, Throttled):
        headers["Retry-After"] = str(exc.retry_after)
    return Response(orjson.dumps(exc.to_json()), exc.http_status, headers, media_type="application/json")


async def on_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WhiteboardError)
    if isinstance(exc, Unauthenticated | Forbidden):
        # Refused authorisations are part of the audit trail (the message names no patient).
        log.warning("refused %s %s: %s %s", request.method, request.url.path, exc.http_status, exc.message)
    return error_response(request, exc)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    body = {"error": {"code": codes.get(exc.status_code, "http_error"), "message": str(exc.detail)}}
    headers = dict(exc.headers or {})  # 405 carries Allow (RFC 9110)
    if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
        return Response(orjson.dumps(body), exc.status_code, headers, media_type="application/json")
    return HTMLResponse(
        f"<!doctype html><title>{exc.status_code}</title><h1>{exc.status_code}</h1>", exc.status_code, headers
    )


async def on_crash(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    body = {"error": {"code": "internal", "message": "internal error; it has been logged"}}
    return Response(orjson.dumps(body), 500, media_type="application/json")


class BodyLimit:
    """413 from Content-Length before anything else runs (even authentication); 400 for a NUL
    in the path or query."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                response = Response(
                    orjson.dumps(refusal.to_json()), refusal.http_status, media_type="application/json"
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def refusal(scope: Scope) -> WhiteboardError | None:
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            # No code, id or query of ours holds a NUL, and PostgreSQL text cannot.
            return BadRequest("the request line holds a NUL character")
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY:
                return PayloadTooLarge(f"request bodies are limited to {MAX_BODY} bytes")
        return None


class SecurityHeaders:
    """Every HTTP response: CSP without inline script, no framing, no sniffing, a referrer
    policy; and HSTS when the request came over HTTPS (directly or via a trusted proxy)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        extra = HTTPS_HEADERS if is_https(scope, self.settings) else SECURITY_HEADERS

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)
