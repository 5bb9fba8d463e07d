"""Prometheus metrics for this process, served at /metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        r = self.registry
        self.sockets = Gauge("whiteboard_sockets", "Open WebSocket connections", registry=r)
        self.frames_sent = Counter("whiteboard_frames_sent", "Change frames queued to sockets", registry=r)
        self.slow_clients = Counter(
            "whiteboard_slow_clients", "Sockets closed 1013 for falling behind", registry=r
        )
        self.duplicates_dropped = Counter(
            "whiteboard_duplicates_dropped", "News dropped as already sent", registry=r
        )
        self.caught_up = Counter(
            "whiteboard_caught_up_events", "Events read from the log to fill gaps", registry=r
        )
        self.commands = Counter(
            "whiteboard_commands", "Commands handled, by kind and result", ["kind", "result"], registry=r
        )
        self.commit_seconds = Histogram(
            "whiteboard_commit_seconds", "Time to decide and commit one command", registry=r
        )
        self.write_paths = Counter(
            "whiteboard_write_paths",
            "Commands tried in one statement on this process's copy of their ward: written so "
            "(one_statement), or handed to the locked transaction (fell_back)",
            ["path"],
            registry=r,
        )
        self.publish_failures = Counter(
            "whiteboard_publish_failures", "Broker publishes that failed", registry=r
        )
        self.hl7_messages = Counter(
            "whiteboard_hl7_messages", "HL7 messages by ACK code", ["ack"], registry=r
        )
        self._children: dict[tuple[Counter, tuple[str, ...]], Any] = {}

    def count(self, counter: Counter, *labels: str) -> None:
        """One more on `counter` for these label values. The labelled child is kept: the
        client's own `labels()` checks the names and takes a lock on every call, twice on
        every write. (Label values come from code, not from requests: a small set.)"""
        key = (counter, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        child.inc()


METRICS = Metrics()
