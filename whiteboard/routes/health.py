"""Liveness, readiness and metrics for load balancers and Prometheus."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from whiteboard.metrics import METRICS
from whiteboard.routes.api import json_response


async def healthz(_request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """503 only when the database is unreachable: a broker outage must never drain every process."""
    state = request.app.state
    database: dict[str, object] = {"up": True}
    try:
        async with state.reader.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        database = {"up": False, "error": type(exc).__name__}
    body = {"database": database, "broker": state.broker.status()}
    return json_response(body, 200 if database["up"] else 503)


async def metrics(_request: Request) -> Response:
    return Response(generate_latest(METRICS.registry), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
