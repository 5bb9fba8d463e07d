"""The in-process broker: the embedded default for one server process."""

from __future__ import annotations

from typing import Any

from whiteboard.fanout.base import Broker


class MemoryBroker(Broker):
    name = "memory"

    def __init__(self) -> None:
        super().__init__()
        self._followed: set[str] = set()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._followed.clear()

    async def publish(self, ward: str, data: bytes) -> None:
        if ward in self._followed:
            self._deliver(ward, data)

    async def publish_control(self, message: dict[str, Any]) -> None:
        self._control(message)

    async def follow(self, ward: str) -> None:
        self._followed.add(ward)

    async def unfollow(self, ward: str) -> None:
        self._followed.discard(ward)

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "up": True}
