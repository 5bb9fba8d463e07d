"""Every error the whiteboard raises on purpose, and what each one means on every channel.

    WhiteboardError
    ├── BadRequest            400  unparseable JSON, query or header      WS 1008  HL7 AR
    ├── Unauthenticated       401  no or bad credentials                  WS 1008  HL7 AR
    ├── Forbidden             403  the role or device may not do this     WS 1008  HL7 AR
    ├── NotFound              404  unknown ward, bed, stay, patient, flag WS 1008  HL7 AE
    ├── Conflict              409  conflicts with the board's state       WS 1008  HL7 AE
    ├── StaleVersion          412  If-Match names an old version          WS 1008  HL7 AE
    ├── PayloadTooLarge       413  body over the limit                    WS 1009  HL7 AR
    ├── Invalid               422  well-formed but invalid field          WS 1008  HL7 AE
    ├── PreconditionRequired  428  PATCH without If-Match                 WS 1008  HL7 AE
    └── Throttled             429  too many attempts (Retry-After)        WS 1013  HL7 AR

The pure core raises NotFound, Conflict, StaleVersion and Invalid; the shells raise the rest.
Each shell maps an error to its channel with the class attributes here, in this one place.
"""

from __future__ import annotations


class WhiteboardError(Exception):
    http_status = 500
    code = "internal"
    ws_close = 1011
    hl7_ack = "AE"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(WhiteboardError):
    http_status, code, ws_close, hl7_ack = 400, "bad_request", 1008, "AR"


class Unauthenticated(WhiteboardError):
    http_status, code, ws_close, hl7_ack = 401, "unauthenticated", 1008, "AR"


class Forbidden(WhiteboardError):
    http_status, code, ws_close, hl7_ack = 403, "forbidden", 1008, "AR"


class NotFound(WhiteboardError):
    http_status, code, ws_close, hl7_ack = 404, "not_found", 1008, "AE"


class Conflict(WhiteboardError):
    http_status, code, ws_close, hl7_ack = 409, "conflict", 1008, "AE"


class StaleVersion(WhiteboardError):
    http_status, code, ws_close, hl7_ack = 412, "stale_version", 1008, "AE"


class PayloadTooLarge(WhiteboardError):
    http_status, code, ws_close, hl7_ack = 413, "payload_too_large", 1009, "AR"


class Invalid(WhiteboardError):
    http_status, code, ws_close, hl7_ack = 422, "invalid", 1008, "AE"


class PreconditionRequired(WhiteboardError):
    http_status, code, ws_close, hl7_ack = 428, "precondition_required", 1008, "AE"


class Throttled(WhiteboardError):
    http_status, code, ws_close, hl7_ack = 429, "throttled", 1013, "AR"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)
