"""Each domain error maps to one HTTP status and code (DESIGN 4.2), one WebSocket close code and
one HL7 ACK code, all in `whiteboard.errors`."""

from __future__ import annotations

import inspect

import orjson
import pytest

from whiteboard import errors
from whiteboard.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PayloadTooLarge,
    PreconditionRequired,
    StaleVersion,
    Throttled,
    Unauthenticated,
    WhiteboardError,
)

# DESIGN 4.2's statuses; the close and ACK codes as errors.py documents them.
TABLE: list[tuple[type[WhiteboardError], int, str, int, str]] = [
    (BadRequest, 400, "bad_request", 1008, "AR"),
    (Unauthenticated, 401, "unauthenticated", 1008, "AR"),
    (Forbidden, 403, "forbidden", 1008, "AR"),
    (NotFound, 404, "not_found", 1008, "AE"),
    (Conflict, 409, "conflict", 1008, "AE"),
    (StaleVersion, 412, "stale_version", 1008, "AE"),
    (PayloadTooLarge, 413, "payload_too_large", 1009, "AR"),
    (Invalid, 422, "invalid", 1008, "AE"),
    (PreconditionRequired, 428, "precondition_required", 1008, "AE"),
    (Throttled, 429, "throttled", 1013, "AR"),
]


def make(cls: type[WhiteboardError], message: str = "why") -> WhiteboardError:
    return Throttled(message, retry_after=30) if cls is Throttled else cls(message)


@pytest.mark.parametrize(("cls", "status", "code", "ws_close", "hl7_ack"), TABLE, ids=lambda v: str(v))
def test_error_maps_to_its_status_code_close_and_ack(
    cls: type[WhiteboardError], status: int, code: str, ws_close: int, hl7_ack: str
) -> None:
    error = make(cls, "bed J12-B1-1 is closed")
    assert isinstance(error, WhiteboardError)
    assert isinstance(error, Exception)
    assert (error.http_status, error.code, error.ws_close, error.hl7_ack) == (status, code, ws_close, hl7_ack)
    assert error.message == "bed J12-B1-1 is closed"
    assert str(error) == "bed J12-B1-1 is closed"
    assert error.to_json() == {"error": {"code": code, "message": "bed J12-B1-1 is closed"}}
    assert orjson.loads(orjson.dumps(error.to_json())) == error.to_json()


def test_the_table_covers_every_error_class() -> None:
    defined = {
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, WhiteboardError) and obj is not WhiteboardError
    }
    assert defined == {row[0] for row in TABLE}


def test_statuses_and_codes_are_distinct() -> None:
    assert len({row[1] for row in TABLE}) == len(TABLE)
    assert len({row[2] for row in TABLE}) == len(TABLE)


@pytest.mark.parametrize("cls", [row[0] for row in TABLE], ids=lambda c: c.__name__)
def test_every_error_has_a_valid_close_and_ack(cls: type[WhiteboardError]) -> None:
    error = make(cls)
    assert isinstance(error.ws_close, int)
    assert 1000 <= error.ws_close <= 4999
    assert error.ws_close not in (1000, 1005, 1006, 1015)  # not errors, or never sent on the wire
    assert error.hl7_ack in ("AE", "AR")


@pytest.mark.parametrize("cls", [row[0] for row in TABLE], ids=lambda c: c.__name__)
def test_the_docstring_lists_every_error_with_its_mapping(cls: type[WhiteboardError]) -> None:
    doc = errors.__doc__ or ""
    (line,) = [ln for ln in doc.splitlines() if f"── {cls.__name__} " in ln]
    assert str(cls.http_status) in line
    assert f"WS {cls.ws_close}" in line
    assert f"HL7 {cls.hl7_ack}" in line


def test_the_core_errors_are_the_ones_the_core_raises() -> None:
    """NotFound, Conflict, StaleVersion and Invalid: a feed message failing these is AE, not AR."""
    for cls in (NotFound, Conflict, StaleVersion, Invalid):
        assert cls.hl7_ack == "AE"
        assert 400 <= cls.http_status < 500


def test_the_base_error_is_a_server_error() -> None:
    error = WhiteboardError("boom")
    assert (error.http_status, error.code, error.ws_close) == (500, "internal", 1011)
    assert error.to_json() == {"error": {"code": "internal", "message": "boom"}}


@pytest.mark.parametrize(("given", "kept"), [(30, 30), (1, 1), (0, 1), (-5, 1)])
def test_throttled_carries_a_positive_retry_after(given: int, kept: int) -> None:
    assert Throttled("slow down", retry_after=given).retry_after == kept
