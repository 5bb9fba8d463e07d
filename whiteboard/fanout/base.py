"""The broker: how news of a committed change reaches every server process.

A deliberately narrow interface (after `broadcaster`): publish a ward's news, follow the wards
this process has sockets for, and broadcast control news (a display revoked, a user disabled)
to every process. The in-process broker is the embedded default, not a test fake; Redis is the
trust-wide one. Neither is the truth: a process that misses news repairs itself from the event
log, so `publish` must never fail or delay the write that precedes it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import orjson

from whiteboard.types import EventRecord

#: Called with (ward, raw message) for every message on a followed ward.
Deliver = Callable[[str, bytes], None]
#: Called with a decoded control message ({"kind": ..., ...}) on every process.
Control = Callable[[dict[str, Any]], None]
#: Called after the broker (re)connects: news may have been missed meanwhile.
Reconnected = Callable[[], None]


def encode_event(record: EventRecord) -> bytes:
    return orjson.dumps(
        {
            "w": record.ward,
            "s": record.seq,
            "a": record.at,
            "u": record.actor,
            "t": record.type,
            "p": record.payload,
        }
    )


def decode_event(data: bytes) -> EventRecord:
    m = orjson.loads(data)
    return EventRecord(ward=m["w"], seq=int(m["s"]), at=m["a"], actor=m["u"], type=m["t"], payload=m["p"])


class Broker(abc.ABC):
    name = "broker"

    def __init__(self) -> None:
        self._deliver: Deliver = lambda _ward, _data: None
        self._control: Control = lambda _msg: None
        self._reconnected: Reconnected = lambda: None

    def bind(self, deliver: Deliver, control: Control, reconnected: Reconnected) -> None:
        self._deliver, self._control, self._reconnected = deliver, control, reconnected

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def publish(self, ward: str, data: bytes) -> None:
        """Send news of a ward; returns promptly and never raises for an outage."""

    @abc.abstractmethod
    async def publish_control(self, message: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    async def follow(self, ward: str) -> None:
        """Start receiving this ward's news (idempotent)."""

    @abc.abstractmethod
    async def unfollow(self, ward: str) -> None: ...

    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """For /readyz and /metrics: {"name", "up", ...}."""
