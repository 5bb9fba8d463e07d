"""Original-mode HL7 acknowledgements (MSH, MSA, and ERR for AE/AR), as ER7 text: I/O-free.

Every answer is original mode whatever MSH-15/16 ask: MSA-1 is ``AA``, ``AE`` or ``AR``,
MSA-2 echoes the original MSH-10 (empty when it could not be read), MSA-3 and ERR-8 give the
reason. The ACK uses the original's encoding characters when it was parsed, else ``|^~\\&``.
Each segment ends with a carriage return.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any, Final, Literal

import hl7

from whiteboard.hl7.parse import ERROR_TEXTS, AdtMessage, Hl7Refused

__all__ = ["accept_ack", "ack_code_of", "build_ack", "refusal_ack"]

#: Sending application of our ACKs when the original's MSH-5 is empty.
APPLICATION: Final = "WHITEBOARD"
DEFAULT_VERSION: Final = "2.5"

_VERSION = re.compile(r"\d\.\d(?:\.\d)?", re.ASCII)
_EVENT = re.compile(r"[A-Z0-9]{3}", re.ASCII)
_FIELD = re.compile(r"([A-Z][A-Z0-9]{2})-(\d{1,3})", re.ASCII)


def _header(message: Any) -> Any:
    """The original's MSH segment, or None."""
    if message is None:
        return None
    for segment in message:
        if len(segment) and str(segment[0]) == "MSH":
            return segment
    return None


def _raw(segment: Any, field_num: int) -> str:
    """A field of the original exactly as sent (still escaped), "" when absent."""
    if segment is None or field_num >= len(segment):
        return ""
    return "".join(c for c in str(segment(field_num)) if c.isprintable())


def _leaf(segment: Any, field_num: int, comp: int = 1) -> str:
    """One unescaped component of the original, "" when absent."""
    if segment is None:
        return ""
    try:
        return str(segment.extract_field(field_num=field_num, component_num=comp)).strip()
    except Exception:  # absent, or shaped unlike what we asked for
        return ""


def _event(message: Any, msh: Any) -> str:
    event = _leaf(msh, 9, 2)
    if not event and message is not None:
        for segment in message:
            if len(segment) and str(segment[0]) == "EVN":
                event = _leaf(segment, 1)
                break
    event = event.upper()
    return event if _EVENT.fullmatch(event) else ""


def _escaper(message: Any) -> Any:
    if message is not None and getattr(message, "separators", None) and getattr(message, "esc", None):
        return message
    return hl7.Message()


def _escape(escaper: Any, text: str) -> str:
    """Text made safe for a field: python-hl7's escaping of separators, after dropping control
    characters and anything python-hl7's ``\\Xhh\\`` cannot carry (it writes one byte per char)."""
    text = "".join(c if c.isprintable() else " " for c in text)
    text = "".join(c if ord(c) <= 0xFF else "?" for c in text)
    return str(escaper.escape(text)) if text else ""


def build_ack(
    code: Literal["AA", "AE", "AR"],
    *,
    message: Any,
    control_id: str,
    reason: str = "",
    error_code: str | None = None,
    error_field: str | None = None,
) -> str:
    """An original-mode ACK for `message` (an `hl7.Message`, or None when it could not be parsed).

    `error_code` is the HL7 table 0357 code for ERR-3 (default 207, application internal
    error) and `error_field` the field at fault (``"PID-3"``) for ERR-2; both only matter for
    AE and AR, the only codes that carry an ERR segment.
    """
    msh = _header(message)
    escaper = _escaper(message if msh is not None else None)
    separators: str = escaper.separators  # "\r" + field, repetition, component, sub-component
    field_sep, rep, comp, sub = separators[1], separators[2], separators[3], separators[4]
    esc: str = escaper.esc
    event = _event(message, msh)
    version = _leaf(msh, 12)
    fields = [
        _raw(msh, 5) or APPLICATION,  # MSH-3: we are who they sent it to
        _raw(msh, 6),  # MSH-4
        _raw(msh, 3),  # MSH-5: back to the sender
        _raw(msh, 4),  # MSH-6
        datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000"),  # MSH-7
        "",  # MSH-8
        comp.join(("ACK", event, "ACK")) if event else "ACK",  # MSH-9
        uuid.uuid4().hex[:20].upper(),  # MSH-10: our own control ID
        "P",  # MSH-11
        version if _VERSION.fullmatch(version) else DEFAULT_VERSION,  # MSH-12
    ]
    segments = [f"MSH{field_sep}{comp}{rep}{esc}{sub}{field_sep}" + field_sep.join(fields)]
    msa = ["MSA", code, _escape(escaper, control_id), _escape(escaper, reason)]
    segments.append(field_sep.join(msa).rstrip(field_sep))
    if code != "AA":
        number = error_code if error_code in ERROR_TEXTS else "207"
        text = ERROR_TEXTS[number]
        where = _FIELD.fullmatch(error_field or "")
        location = comp.join((where.group(1), "1", where.group(2))) if where else ""
        err = [
            "ERR",
            comp.join((location, sub.join((number, text, "HL70357")))) if where else "",  # ERR-1 (2.3/2.4)
            location,  # ERR-2
            comp.join((number, text, "HL70357")),  # ERR-3
            "E",  # ERR-4
            "",  # ERR-5
            "",  # ERR-6
            "",  # ERR-7
            _escape(escaper, reason),  # ERR-8
        ]
        segments.append(field_sep.join(err).rstrip(field_sep))
    return "".join(segment + "\r" for segment in segments)


def refusal_ack(err: Hl7Refused) -> str:
    """The AE/AR answer to a refused message."""
    return build_ack(
        err.ack_code,
        message=err.message,
        control_id=err.control_id,
        reason=err.reason,
        error_code=err.error_code,
        error_field=err.field,
    )


def accept_ack(adt: AdtMessage, reason: str = "") -> str:
    """The AA answer to an applied (or already applied) message."""
    return build_ack("AA", message=adt.message, control_id=adt.control_id, reason=reason)


def ack_code_of(ack_text: str) -> str:
    """MSA-1 of an ACK ("" when there is none): for tests and clients."""
    text = ack_text.strip("\x0b\x1c\r\n ").replace("\r\n", "\r").replace("\n", "\r")
    try:
        message = hl7.parse(text)
        for segment in message:
            if len(segment) and str(segment[0]) == "MSA":
                return str(segment.extract_field(field_num=1)).strip()
    except Exception:  # not an ACK at all
        return ""
    return ""
