"""HL7 v2 ADT messages in, `AdtMessage` out, or `Hl7Refused` saying why: I/O-free.

`parse_adt` turns any bytes or text into one of exactly two things. It never raises
anything but `Hl7Refused`, whose `ack_code` is the answer the sender gets:

* ``AR`` (rejected): not HL7, not ADT, an unsupported event or version, no MSH-10;
* ``AE`` (cannot be applied): no PID or PV1, a bad or missing patient identifier, a
  missing location for an admit or transfer, a malformed date.

Segment, field, component and escape handling are python-hl7's (`hl7.parse` and the
unescaping `extract_field` does). Around it this module only fixes what python-hl7 leaves
to its caller: the character set (MSH-18), line endings and MLLP framing, the encoding
characters it would otherwise trust blindly, escape sequences it would expand without
limit, and HL7 timestamps (naive ones are Europe/London time).
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import hl7

from whiteboard.board import nhs

__all__ = [
    "SUPPORTED_EVENTS",
    "SUPPORTED_VERSIONS",
    "AdtMessage",
    "Hl7Refused",
    "Location",
    "parse_adt",
    "read_header",
]

logger = logging.getLogger(__name__)

SUPPORTED_EVENTS: Final = frozenset({"A01", "A02", "A03", "A08", "A11", "A12", "A13"})
SUPPORTED_VERSIONS: Final = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1"})
#: Events that place a patient in a bed, so PV1-3 must name a ward and a bed.
_NEEDS_BED: Final = frozenset({"A01", "A02"})
#: The segments read after MSH; only the first of each is handed to python-hl7, so a message
#: padded with other segments costs no more to parse than one without.
_READ_SEGMENTS: Final = ("EVN", "PID", "PV1", "PV2")
#: The fields read of the longest segments. python-hl7 builds a container for every field
#: (a real PV1 has fifty, and an A03's PV1-45 comes after forty empty ones), so it is handed
#: only these; escapes never contain the field separator, so cutting a segment at it is the
#: same first step python-hl7 takes. MSH and EVN are handed over whole: the ACK reads them.
_READ_FIELDS: Final[dict[str, tuple[int, ...]]] = {"PID": (3, 5, 7, 8), "PV1": (3, 6, 7, 45), "PV2": (9,)}
#: Where each of those fields sits in the cut segment python-hl7 parses (field 45 of PV1 is its 4th).
_FIELD_PLACES: Final = {
    name: {n: place for place, n in enumerate(numbers, start=1)} for name, numbers in _READ_FIELDS.items()
}

LONDON: Final = ZoneInfo("Europe/London")

#: MSH-18 names (HL7 table 0211, plus common spellings) -> Python codecs. Anything else falls
#: back to UTF-8, then Latin-1; arbitrary names never reach `codecs.lookup`.
_CHARSETS: Final[dict[str, str]] = {
    "ASCII": "ascii",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "UTF-8": "utf-8",
    "ISO-8859-1": "latin-1",
    **{f"8859/{n}": f"iso8859-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 15)},
}

_SEX: Final[dict[str, str]] = {"F": "female", "M": "male", "O": "other", "A": "other"}

#: HL7 table 0357 texts, shared with the ACK builder.
ERROR_TEXTS: Final[dict[str, str]] = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}

_TIMESTAMP = re.compile(
    r"(\d{4})(\d{2})(\d{2})"  # YYYYMMDD
    r"(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,4}))?)?)?)?"  # [HH[MM[SS[.S[S[S[S]]]]]]]
    r"(?:([+-])(\d{2})(\d{2}))?",  # [+/-ZZZZ]
    re.ASCII,
)
#: Escape sequences python-hl7 may safely expand; any other is removed before parsing
#: (python-hl7 would log each one, warn through a deprecated call, or multiply `.spNNN`).
_SAFE_ESCAPE = re.compile(r"[FRSTE]|X(?:[0-9A-Fa-f]{2})+|\.(?:br|sp|fi|nf|in|ti|sk|ce)\d?", re.ASCII)
#: `\H\` and `\N\` (highlighting on/off) carry no text; python-hl7 would insert "_".
_DROPPED_ESCAPES: Final = frozenset({"H", "N"})


@dataclass(frozen=True, slots=True)
class Location:
    """A PL field (PV1-3, PV1-6): ``ward^bay^bed``."""

    ward: str
    bay: str | None
    bed: str | None


@dataclass(frozen=True, slots=True)
class AdtMessage:
    """What the board needs from one ADT message; every string is unescaped and trimmed."""

    control_id: str  # MSH-10
    sending_app: str  # MSH-3 (as sent, components included)
    sending_facility: str  # MSH-4
    version: str  # MSH-12.1
    event: str  # MSH-9.2, else EVN-1: A01 ... A13
    event_time: datetime  # EVN-2, else MSH-7; aware, UTC
    nhs_number: str | None  # PID-3 repetition with CX-4 "NHS": ten digits, check digit valid
    mrn: str | None  # PID-3 repetition with CX-5 "MR"
    given_name: str | None  # PID-5.2
    family_name: str | None  # PID-5.1
    dob: str | None  # PID-7 as YYYY-MM-DD
    sex: str  # PID-8: male | female | other | unknown
    location: Location | None  # PV1-3
    prior_location: Location | None  # PV1-6
    attending: str | None  # PV1-7 as "prefix given family"
    edd: str | None  # PV2-9 as YYYY-MM-DD
    discharge_time: datetime | None  # PV1-45, aware, UTC
    #: The parsed python-hl7 message, for building the ACK (`whiteboard.hl7.ack.accept_ack`).
    message: Any = field(default=None, compare=False, repr=False)


class Hl7Refused(Exception):
    """A message that is answered AR (rejected) or AE (cannot be applied); nothing changes.

    `error_code` is the HL7 table 0357 code for ERR-3, `field` the field at fault
    (``"PID-3"``) when there is one, `control_id` the MSH-10 ("" when unknown) and `message`
    the python-hl7 message when parsing got that far (for the ACK header).
    """

    def __init__(
        self,
        ack_code: Literal["AR", "AE"],
        reason: str,
        *,
        error_code: str = "207",
        control_id: str = "",
        message: Any = None,
        field: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.ack_code: Literal["AR", "AE"] = ack_code
        self.reason = reason
        self.error_code = error_code
        self.control_id = control_id
        self.message: Any = message
        self.field = field

    def __repr__(self) -> str:
        return f"Hl7Refused({self.ack_code!r}, {self.reason!r}, error_code={self.error_code!r})"


# --------------------------------------------------------------------------------------------
# Text: decoding, framing, line endings


def _charset_codec(first_segment: str) -> str | None:
    """The codec MSH-18 names, read with python-hl7 from the MSH segment alone."""
    try:
        header = _parse_segments([first_segment])
    except Hl7Refused:
        return None
    name = _value(header[0], 18)
    return _CHARSETS.get(" ".join(name.upper().split()))


def _decode(raw: bytes) -> str:
    if raw.isascii():  # every supported character set agrees on ASCII
        return raw.decode("ascii")
    first = re.split(rb"[\r\n]", raw.lstrip(), maxsplit=1)[0].decode("latin-1")
    declared = _charset_codec(first.strip())
    for codec in (declared, "utf-8"):
        if codec is None:
            continue
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def _segments_of(raw: bytes | str) -> list[str]:
    """The message's segments: MLLP framing, BOM, blank lines and surrounding space removed."""
    if isinstance(raw, str):
        text = raw.strip(" \t\r\n\x0b\x1c\x00")
    else:
        text = _decode(bytes(raw).strip(b" \t\r\n\x0b\x1c\x00"))
    text = text.removeprefix("\ufeff")
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    return [line.strip() for line in text.split("\r") if line.strip()]


# --------------------------------------------------------------------------------------------
# python-hl7, made safe for any input


def _encoding_characters(msh: str) -> tuple[str, str]:
    """The field separator and the encoding characters of an MSH segment, or `Hl7Refused`."""
    if len(msh) < 8 or not msh.startswith("MSH"):
        raise Hl7Refused("AR", "Not HL7: the message must start with an MSH segment", error_code="100")
    separator = msh[3]
    end = msh.find(separator, 4)
    encoding = msh[4:] if end < 0 else msh[4:end]
    chars = separator + encoding[:4]
    if (
        len(encoding) not in (4, 5)
        or len(set(chars)) != 5
        or any(c.isalnum() or c.isspace() or not c.isprintable() for c in chars)
    ):
        raise Hl7Refused(
            "AR",
            "MSH-1/MSH-2: the field separator and encoding characters are malformed",
            error_code="102",
            field="MSH-2",
        )
    return separator, encoding


@functools.lru_cache(maxsize=16)
def _escape_pattern(separators: str, escape: str) -> re.Pattern[str]:
    """An escape sequence: escape, anything but separators and escape, escape."""
    return re.compile(f"{re.escape(escape)}([^{re.escape(separators + escape)}]*){re.escape(escape)}")


def _keep_safe(match: re.Match[str]) -> str:
    body = match.group(1)
    return "" if body in _DROPPED_ESCAPES or not _SAFE_ESCAPE.fullmatch(body) else match.group(0)


def _defuse_escapes(segment: str, separators: str, escape: str) -> str:
    """Remove the escape sequences python-hl7 cannot expand safely (see `_SAFE_ESCAPE`).

    Sequences never contain separators, so pairing escape characters across the whole segment
    pairs them exactly as python-hl7 does leaf by leaf.
    """
    if escape not in segment:
        return segment
    return _escape_pattern(separators, escape).sub(_keep_safe, segment)


def _parse_segments(segments: list[str]) -> Any:
    """An `hl7.Message` for segments whose first is an MSH with sound encoding characters."""
    separator, encoding = _encoding_characters(segments[0])
    separators = separator + encoding[:2] + encoding[3]
    escape = encoding[2]
    msh = segments[0] if len(segments[0]) > 4 + len(encoding) else segments[0] + separator
    start = 4 + len(encoding)  # escapes after MSH-2 only: MSH-2 holds the escape character itself
    cleaned = [msh[:start] + _defuse_escapes(msh[start:], separators, escape)]
    cleaned += [_defuse_escapes(s, separators, escape) for s in segments[1:]]
    try:
        return hl7.parse("\r".join(cleaned))
    except Exception as exc:  # python-hl7 raises assorted types on odd input
        raise Hl7Refused("AR", "Not HL7: the message could not be parsed", error_code="100") from exc


@dataclass(frozen=True, slots=True)
class _Fields:
    """A segment python-hl7 parsed from only the fields we read: field n is its field `at[n]`."""

    segment: Any
    at: dict[int, int]


def _only_fields(segment: str, separator: str) -> str:
    """`segment` with only the fields `_READ_FIELDS` names for it (all of it for other segments)."""
    numbers = _READ_FIELDS.get(segment[:3])
    if numbers is None or not separator:
        return segment
    fields = segment.split(separator)
    return separator.join([fields[0], *(fields[n] if n < len(fields) else "" for n in numbers)])


def _read_fields(message: Any, segment_id: str) -> _Fields | None:
    segment = _find(message, segment_id)
    if segment is None:
        return None
    return _Fields(segment, _FIELD_PLACES[segment_id])


def _segment_id(segment: Any) -> str:
    return str(segment[0]) if len(segment) else ""


def _find(message: Any, segment_id: str) -> Any:
    for segment in message:
        if _segment_id(segment) == segment_id:
            return segment
    return None


def _clean(text: str) -> str:
    """Control characters (from `\\.br\\`, `\\X00\\`, stray bytes) become spaces; runs collapse."""
    if text == '""':  # the HL7 null value
        return ""
    if not text.isprintable():
        text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    return " ".join(text.split())


def _value(segment: Any, field_num: int, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
    """One unescaped leaf value; "" when the segment, field, repetition or component is absent."""
    if segment is None:
        return ""
    if isinstance(segment, _Fields):
        segment, field_num = segment.segment, segment.at[field_num]
    try:
        value = segment.extract_field(
            field_num=field_num, repeat_num=rep, component_num=comp, subcomponent_num=sub
        )
    except IndexError:
        return ""
    return _clean(str(value))


def _repetitions(segment: Any, field_num: int) -> int:
    if isinstance(segment, _Fields):
        segment, field_num = segment.segment, segment.at[field_num]
    if segment is None or field_num >= len(segment):
        return 0
    return len(segment(field_num))


# --------------------------------------------------------------------------------------------
# Values


def _shown(value: str, limit: int = 24) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _timestamp(text: str) -> tuple[datetime, bool] | None:
    """A DTM as (datetime, has_offset), naive when it had no offset; None when malformed."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")),
        )
        if sign is None:
            return moment, False
        if int(off_h) > 14 or int(off_m) > 59:
            return None
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        return moment.replace(tzinfo=timezone(-offset if sign == "-" else offset)), True
    except (ValueError, OverflowError):
        return None


def _utc(text: str, where: str, refuse: _Refuser) -> datetime:
    parsed = _timestamp(text)
    if parsed is not None:
        moment, has_offset = parsed
        try:
            # No offset: Europe/London wall time. fold=0 reads a repeated autumn hour as BST and
            # a skipped spring hour as GMT.
            return (moment if has_offset else moment.replace(tzinfo=LONDON)).astimezone(UTC)
        except (ValueError, OverflowError):
            pass
    raise refuse("AE", f"{where}: {_shown(text)!r} is not a valid HL7 date/time", "102", where)


def _calendar_date(text: str, where: str, refuse: _Refuser) -> str | None:
    """A DT/DTM field's date as YYYY-MM-DD (no time zone conversion: it is a calendar date)."""
    if not text:
        return None
    parsed = _timestamp(text)
    if parsed is None:
        raise refuse("AE", f"{where}: {_shown(text)!r} is not a valid HL7 date", "102", where)
    return date(parsed[0].year, parsed[0].month, parsed[0].day).isoformat()


def _location(segment: Any, field_num: int) -> Location | None:
    ward = _value(segment, field_num, 1, 1)
    if not ward:
        return None
    bay = _value(segment, field_num, 1, 2)
    bed = _value(segment, field_num, 1, 3)
    return Location(ward=ward, bay=bay or None, bed=bed or None)


def _person(segment: Any, field_num: int) -> str | None:
    """An XCN as "prefix given family" (components 6, 3, 2), empty parts skipped."""
    parts = [_value(segment, field_num, 1, comp) for comp in (6, 3, 2)]
    return " ".join(p for p in parts if p) or None


class _Refuser:
    """Makes `Hl7Refused` carrying what is known of the message so far."""

    def __init__(self) -> None:
        self.control_id = ""
        self.message: Any = None

    def __call__(
        self, ack_code: Literal["AR", "AE"], reason: str, error_code: str, where: str | None = None
    ) -> Hl7Refused:
        return Hl7Refused(
            ack_code,
            reason,
            error_code=error_code,
            control_id=self.control_id,
            message=self.message,
            field=where,
        )


# --------------------------------------------------------------------------------------------
# The parser


def read_header(raw: bytes | str) -> tuple[Any, str]:
    """(the MSH segment as an `hl7.Message` or None, MSH-10 or ""), for ACKs to the unparseable.

    Only the first segment is read, so a truncated message (the first bytes of an over-size
    MLLP block) is enough. Never raises.
    """
    try:
        segments = _segments_of(raw)
        if not segments:
            return None, ""
        header = _parse_segments(segments[:1])
        return header, _value(header[0], 10)
    except Exception:  # the answer to anything at all is "no header"
        return None, ""


def parse_adt(raw: bytes | str) -> AdtMessage:
    """Read one ADT message; raises `Hl7Refused` (and nothing else) when it cannot be used."""
    refuse = _Refuser()
    try:
        return _parse_adt(raw, refuse)
    except Hl7Refused:
        raise
    except Exception as exc:  # a bug here must still produce an ACK, never a dead listener
        logger.exception("HL7 parser failed on message %r", refuse.control_id)
        raise refuse("AE", "Internal error while reading the message", "207") from exc


def _parse_adt(raw: bytes | str, refuse: _Refuser) -> AdtMessage:
    segments = _segments_of(raw)
    if not segments or not segments[0].startswith("MSH"):
        raise refuse("AR", "Not HL7: the message must start with an MSH segment", "100")
    if any(s.startswith("MSH") and s[3:4] == segments[0][3] for s in segments[1:]):
        raise refuse("AR", "More than one MSH segment: send one message per block", "100")
    separator = segments[0][3:4]  # "" for a bare "MSH": refused below, while parsing it
    wanted = [segments[0]]
    for name in _READ_SEGMENTS:
        first = next((s for s in segments if s[:3] == name and s[3:4] in (separator, "")), None)
        if first is not None:
            wanted.append(_only_fields(first, separator))
    message = _parse_segments(wanted)
    refuse.message = message
    msh = message[0]
    refuse.control_id = control_id = _value(msh, 10)

    kind = _value(msh, 9, 1, 1).upper()
    if kind != "ADT":
        raise refuse("AR", f"MSH-9: message type {_shown(kind)!r} is not ADT", "200", "MSH-9")
    evn = _find(message, "EVN")
    event = (_value(msh, 9, 1, 2) or _value(evn, 1)).upper()
    if event not in SUPPORTED_EVENTS:
        shown = repr(_shown(event)) if event else "missing"
        raise refuse("AR", f"MSH-9: trigger event {shown} is not supported", "201", "MSH-9")
    version = _value(msh, 12, 1, 1)
    if version not in SUPPORTED_VERSIONS:
        shown = repr(_shown(version)) if version else "missing"
        raise refuse("AR", f"MSH-12: HL7 version {shown} is not supported (2.3 to 2.5.1)", "203", "MSH-12")
    if not control_id:
        raise refuse("AR", "MSH-10: the message control ID is missing", "101", "MSH-10")

    pid = _read_fields(message, "PID")
    if pid is None:
        raise refuse("AE", f"No PID segment: an {event} needs one", "100", "PID")
    pv1 = _read_fields(message, "PV1")
    if pv1 is None:
        raise refuse("AE", f"No PV1 segment: an {event} needs one", "100", "PV1")

    nhs_number, mrn = _identifiers(pid, refuse)
    location = _location(pv1, 3)
    if event in _NEEDS_BED and (location is None or location.bed is None):
        raise refuse("AE", f"PV1-3: an {event} needs the assigned ward and bed", "101", "PV1-3")

    sent = _value(msh, 7, 1, 1)
    sent_at = _utc(sent, "MSH-7", refuse) if sent else None
    recorded = _value(evn, 2, 1, 1)
    event_time = _utc(recorded, "EVN-2", refuse) if recorded else sent_at
    if event_time is None:
        raise refuse("AE", "EVN-2 and MSH-7: the event time is missing", "101", "MSH-7")
    discharge = _value(pv1, 45, 1, 1)

    return AdtMessage(
        control_id=control_id,
        sending_app=_clean(str(msh(3))) if len(msh) > 3 else "",
        sending_facility=_clean(str(msh(4))) if len(msh) > 4 else "",
        version=version,
        event=event,
        event_time=event_time,
        nhs_number=nhs_number,
        mrn=mrn,
        given_name=_value(pid, 5, 1, 2) or None,
        family_name=_value(pid, 5, 1, 1) or None,
        dob=_calendar_date(_value(pid, 7, 1, 1), "PID-7", refuse),
        sex=_SEX.get(_value(pid, 8).upper(), "unknown"),
        location=location,
        prior_location=_location(pv1, 6),
        attending=_person(pv1, 7),
        edd=_calendar_date(_value(_read_fields(message, "PV2"), 9, 1, 1), "PV2-9", refuse),
        discharge_time=_utc(discharge, "PV1-45", refuse) if discharge else None,
        message=message,
    )


def _identifiers(pid: Any, refuse: _Refuser) -> tuple[str | None, str | None]:
    """(NHS number, MRN) from the PID-3 repetitions; `Hl7Refused` for a bad NHS number or none."""
    nhs_number: str | None = None
    mrn: str | None = None
    for rep in range(1, _repetitions(pid, 3) + 1):
        value = _value(pid, 3, rep, 1)
        if not value:
            continue
        if nhs_number is None and _value(pid, 3, rep, 4, 1).upper() == "NHS":
            nhs_number = value.replace(" ", "").replace("-", "")
            if not nhs.is_valid(nhs_number):
                shown = _shown(value)
                if len(nhs_number) == 10 and nhs_number.isdigit():
                    reason = f"PID-3: NHS number {shown} fails its check digit"
                else:
                    reason = f"PID-3: NHS number {shown!r} is not ten digits"
                raise refuse("AE", reason, "102", "PID-3")
        if mrn is None and _value(pid, 3, rep, 5).upper() == "MR":
            mrn = value
    if nhs_number is None and mrn is None:
        raise refuse(
            "AE",
            "PID-3: no patient identifier (an NHS number with CX-4 NHS, or an MRN with CX-5 MR)",
            "101",
            "PID-3",
        )
    return nhs_number, mrn
