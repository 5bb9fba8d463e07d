"""Running the app under uvicorn, with the socket limits the contract asks for."""

from __future__ import annotations

import uvicorn

from whiteboard.app import create_app
from whiteboard.settings import Settings

#: A client frame over 64 KiB closes the socket with 1009 (DESIGN 4.3).
WS_MAX_SIZE = 64 * 1024


def uvicorn_config(settings: Settings, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        ws="websockets-sansio",
        ws_max_size=WS_MAX_SIZE,
        ws_ping_interval=10.0,
        ws_ping_timeout=20.0,
        ws_per_message_deflate=False,  # 3x CPU and 3.5x memory per socket for little gain on a LAN
        lifespan="on",
        log_level=settings.log_level.lower(),
        proxy_headers=False,  # forwarded headers are read by our own trusted-proxy rules
        timeout_graceful_shutdown=5,
    )


def run(settings: Settings, host: str, port: int) -> None:
    uvicorn.Server(uvicorn_config(settings, host, port)).run()
