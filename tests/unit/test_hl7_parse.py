"""HL7 v2 ADT parsing: fields, encodings, time zones, every refusal, and robustness to any input."""

from __future__ import annotations

import logging
import time
import unicodedata
from dataclasses import replace
from datetime import UTC, datetime

import hl7
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import fixtures_hl7 as fx
from tests.helpers import timeout
from whiteboard.board import nhs
from whiteboard.hl7 import parse as parse_module
from whiteboard.hl7.ack import ack_code_of, refusal_ack
from whiteboard.hl7.parse import (
    SUPPORTED_EVENTS,
    AdtMessage,
    Hl7Refused,
    Location,
    parse_adt,
    read_header,
)


def refused(raw: bytes | str) -> Hl7Refused:
    with pytest.raises(Hl7Refused) as info:
        parse_adt(raw)
    return info.value


def swap(message: str, old: str, new: str, count: int = 1) -> str:
    assert old in message, f"{old!r} not in the fixture"
    return message.replace(old, new, count)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def is_utc(moment: datetime) -> bool:
    offset = moment.utcoffset()
    return offset is not None and offset.total_seconds() == 0


# --------------------------------------------------------------------------------------------
# Every fixture: events A01 ... A13, versions 2.3 ... 2.5.1, CR / LF / CRLF


@pytest.mark.parametrize("name", list(fx.ALL_ADT))
def test_every_fixture_parses(name: str) -> None:
    raw, event, version = fx.ALL_ADT[name]
    adt = parse_adt(raw)
    assert adt.event == event
    assert adt.version == version
    assert is_utc(adt.event_time)
    assert adt.nhs_number or adt.mrn
    assert isinstance(adt.message, hl7.Message)
    assert parse_adt(raw.encode("utf-8")) == adt


def test_a01_fields() -> None:
    adt = parse_adt(fx.ADT_A01)
    assert adt == AdtMessage(
        control_id="A01-0001",
        sending_app="PAS",
        sending_facility="RX1",
        version="2.5",
        event="A01",
        event_time=utc(2024, 1, 15, 9, 25),
        nhs_number=fx.NHS_1,
        mrn="RX1000001",
        given_name="Siobhan",
        family_name="O'Brien",
        dob="1972-03-04",
        sex="female",
        location=Location(ward="W01", bay="B1", bed="W01-B1-1"),
        prior_location=None,
        attending="Dr Chidi Okafor",
        edd="2024-01-20",
        discharge_time=None,
    )
    assert is_utc(adt.event_time)


def test_a02_transfer_has_prior_location_and_honours_the_offset() -> None:
    adt = parse_adt(fx.ADT_A02_LF)
    assert adt.location == Location("W02", "B3", "W02-B3-2")
    assert adt.prior_location == Location("W01", "B1", "W01-B1-1")
    assert adt.event_time == utc(2024, 7, 16, 13, 30)
    assert (adt.nhs_number, adt.mrn, adt.sex) == (fx.NHS_2, "RX1000002", "male")


def test_a03_discharge_time_in_the_repeated_autumn_hour_is_read_as_bst() -> None:
    adt = parse_adt(fx.ADT_A03_CRLF)
    assert adt.event_time == utc(2024, 10, 27, 0, 30)
    assert adt.discharge_time == utc(2024, 10, 27, 0, 45)
    assert adt.attending is None


def test_a08_unescapes_names_and_ignores_empty_trailing_fields() -> None:
    adt = parse_adt(fx.ADT_A08)
    assert adt.family_name == "Fitzgerald&Harris"
    assert adt.given_name == "Anne^Marie"
    assert adt.sex == "unknown"
    assert adt.edd == "2024-01-22"
    assert adt.version == "2.5.1"


def test_a11_event_from_evn_when_msh9_has_no_trigger() -> None:
    adt = parse_adt(fx.ADT_A11)
    assert adt.event == "A11"
    assert adt.mrn is None
    assert adt.nhs_number == fx.NHS_4


def test_mrn_only_patient() -> None:
    adt = parse_adt(fx.ADT_A01_MRN_ONLY)
    assert adt.nhs_number is None
    assert adt.mrn == "U0000123"
    assert adt.dob is None
    assert adt.sex == "male"


def test_msh9_event_wins_over_evn1() -> None:
    adt = parse_adt(swap(fx.ADT_A13, "EVN|A13|", "EVN|A08|"))
    assert adt.event == "A13"


def test_event_time_falls_back_to_msh7() -> None:
    adt = parse_adt(swap(fx.ADT_A13, "EVN|A13|20241201115500", "EVN|A13|"))
    assert adt.event_time == utc(2024, 12, 1, 12, 0)
    adt = parse_adt(swap(fx.ADT_A13, "EVN|A13|20241201115500\r", ""))
    assert adt.event_time == utc(2024, 12, 1, 12, 0)


def test_event_time_in_ts_with_degree_of_precision_component() -> None:
    adt = parse_adt(swap(fx.ADT_A13, "|20241201115500\r", "|20241201115500^S\r"))
    assert adt.event_time == utc(2024, 12, 1, 11, 55)


# --------------------------------------------------------------------------------------------
# Line endings, framing, blank lines, Z-segments, character sets


def test_cr_lf_and_crlf_endings_parse_the_same() -> None:
    cr = parse_adt(fx.ADT_A01)
    assert parse_adt(fx.ADT_A01.replace("\r", "\n")) == cr
    assert parse_adt(fx.ADT_A01.replace("\r", "\r\n")) == cr
    assert parse_adt(fx.ADT_A01.replace("\r", "\r\r\n")) == cr  # blank lines between segments


def test_mllp_framing_bom_and_surrounding_whitespace_are_stripped() -> None:
    plain = parse_adt(fx.ADT_A01)
    assert parse_adt(b"\x0b" + fx.ADT_A01.encode() + b"\x1c\r") == plain
    assert parse_adt("\ufeff" + fx.ADT_A01) == plain
    assert parse_adt("\n  " + fx.ADT_A01 + "\n\n") == plain


def test_z_segments_anywhere_are_ignored() -> None:
    message = swap(fx.ADT_A01, "PV1|", "ZXY|1|\\H\\noise\\N\\^x\rPV1|")
    assert parse_adt(message) == parse_adt(fx.ADT_A01)


def test_fields_the_board_does_not_read_change_nothing() -> None:
    """PID, PV1 and PV2 reach python-hl7 cut to the fields read: what sits between and after
    them (addresses, visit numbers, odd escapes, many repetitions) must not move or spoil them."""
    plain = parse_adt(fx.ADT_A03_CRLF)
    busy = swap(
        fx.ADT_A03_CRLF, "||19900101|F", "|Ahmad~Ahmet|19900101|F|||1 High St^^Leeds^^LS1||07700~07711~07722"
    )
    busy = swap(busy, "|||||||MED|", "|\\Zjunk\\||W02^B1^W02-B1-1|C1^Lee^Ann^^^Dr|||MED|")
    busy = swap(busy, "20241027014500\r\n", "20241027014500|X^Y^Z|\\F\\|||9\r\n")
    adt = parse_adt(busy)
    assert adt == replace(plain, attending="Dr Ann Lee", prior_location=Location("W02", "B1", "W02-B1-1"))
    assert adt.discharge_time == plain.discharge_time is not None


def test_utf8_bytes_without_msh18() -> None:
    message = swap(fx.ADT_A13, "Ahmed^Fatima", "Zoë^Chloé")
    adt = parse_adt(message.encode("utf-8"))
    assert (adt.family_name, adt.given_name) == ("Zoë", "Chloé")


def test_latin1_bytes_declared_in_msh18() -> None:
    message = swap(fx.ADT_A13, "|P|2.5\r", "|P|2.5||||||8859/1\r")
    message = swap(message, "Ahmed^Fatima", "Zoë^Chloé")
    adt = parse_adt(message.encode("latin-1"))
    assert (adt.family_name, adt.given_name) == ("Zoë", "Chloé")


def test_utf8_declared_in_msh18() -> None:
    message = swap(fx.ADT_A01, "O'Brien^Siobhan", "Ó Briain^Siobhán")
    adt = parse_adt(message.encode("utf-8"))
    assert (adt.family_name, adt.given_name) == ("Ó Briain", "Siobhán")


def test_undeclared_latin1_falls_back_from_utf8() -> None:
    message = swap(fx.ADT_A13, "Ahmed^Fatima", "Zoë^Chloé")
    adt = parse_adt(message.encode("latin-1"))
    assert (adt.family_name, adt.given_name) == ("Zoë", "Chloé")


def test_msh18_is_honoured_even_when_utf8_would_decode() -> None:
    message = swap(fx.ADT_A13, "|P|2.5\r", "|P|2.5||||||8859/1\r")
    message = swap(message, "Ahmed", "Zoë")
    assert parse_adt(message.encode("utf-8")).family_name == "ZoÃ«"


def test_other_encoding_characters_are_honoured() -> None:
    table = str.maketrans({"|": "#", "^": "$", "~": "%", "\\": "@"})
    message = fx.ADT_A01.translate(table)
    assert message.startswith("MSH#$%@&#")
    assert parse_adt(message) == parse_adt(fx.ADT_A01)


# --------------------------------------------------------------------------------------------
# Escape sequences


@pytest.mark.parametrize(
    ("escaped", "expected"),
    [
        ("A\\F\\B", "A|B"),
        ("A\\S\\B", "A^B"),
        ("A\\T\\B", "A&B"),
        ("A\\R\\B", "A~B"),
        ("A\\E\\B", "A\\B"),
        ("\\H\\Smith\\N\\", "Smith"),
        ("Caf\\XE9\\", "Café"),
        ("\\X41\\bc", "Abc"),
        ("Line\\.br\\Two", "Line Two"),
        ("Odd\\Zcustom\\Name", "OddName"),
        ("Empty\\\\Seq", "EmptySeq"),
        ("Charset\\C2842\\Switch", "CharsetSwitch"),
        ("Huge\\.sp999999999\\Space", "HugeSpace"),
        ("Bad\\XZZ\\Hex", "BadHex"),
        ("Trailing\\", "Trailing"),
    ],
)
def test_escape_sequences_in_names(escaped: str, expected: str) -> None:
    started = time.perf_counter()
    adt = parse_adt(swap(fx.ADT_A13, "Ahmed^", f"{escaped}^"))
    assert adt.family_name == expected
    assert time.perf_counter() - started < timeout(1.0)


def test_escaped_control_characters_never_reach_the_board() -> None:
    adt = parse_adt(swap(fx.ADT_A13, "Ahmed^", "Ah\\X00\\med\\X0D0A\\^"))
    assert adt.family_name == "Ah med"


def test_format_characters_in_names_are_kept() -> None:
    adt = parse_adt(swap(fx.ADT_A13, "Ahmed^", "Ah\u200dmed^"))
    assert adt.family_name == "Ah\u200dmed"


def test_hl7_null_is_empty() -> None:
    adt = parse_adt(swap(fx.ADT_A01, "PV2|||||||||20240120", 'PV2|||||||||""'))
    assert adt.edd is None


# --------------------------------------------------------------------------------------------
# Field mappings


@pytest.mark.parametrize(
    ("code", "sex"),
    [
        ("F", "female"),
        ("M", "male"),
        ("O", "other"),
        ("A", "other"),
        ("U", "unknown"),
        ("N", "unknown"),
        ("", "unknown"),
        ("f", "female"),
        ("X", "unknown"),
    ],
)
def test_sex(code: str, sex: str) -> None:
    assert parse_adt(swap(fx.ADT_A13, "|19900101|F\r", f"|19900101|{code}\r")).sex == sex


@pytest.mark.parametrize(
    ("pid7", "dob"),
    [
        ("19900101", "1990-01-01"),
        ("199001010930", "1990-01-01"),
        ("19900101093000+0100", "1990-01-01"),  # a calendar date: no time-zone shift
        ("20000229", "2000-02-29"),
        ("", None),
    ],
)
def test_date_of_birth(pid7: str, dob: str | None) -> None:
    assert parse_adt(swap(fx.ADT_A13, "|19900101|", f"|{pid7}|")).dob == dob


@pytest.mark.parametrize(
    ("pv1_7", "attending"),
    [
        ("C4512^Okafor^Chidi^^^Dr", "Dr Chidi Okafor"),
        ("C4512^Okafor^Chidi", "Chidi Okafor"),
        ("C4512^Okafor", "Okafor"),
        ("^^^^^Prof", "Prof"),
        ("C4512^Okafor&van^Chidi^A^Jr^Dr", "Dr Chidi Okafor"),
        ("C4512", None),
        ("", None),
        ("C1^Okafor^Chidi^^^Dr~C2^Other^Ann^^^Ms", "Dr Chidi Okafor"),
    ],
)
def test_attending_doctor(pv1_7: str, attending: str | None) -> None:
    message = swap(fx.ADT_A01, "|C4512^Okafor^Chidi^^^Dr|", f"|{pv1_7}|")
    assert parse_adt(message).attending == attending


@pytest.mark.parametrize(
    ("pv1_3", "location"),
    [
        ("W01^B1^W01-B1-1", Location("W01", "B1", "W01-B1-1")),
        ("W01^^W01-SR-2", Location("W01", None, "W01-SR-2")),
        ("W01", Location("W01", None, None)),
        ("W01^B1", Location("W01", "B1", None)),
        ("^B1^W01-B1-1", None),
        ("", None),
        ("W01^B1^W01-B1-1^^^RX1", Location("W01", "B1", "W01-B1-1")),
    ],
)
def test_location_on_an_update(pv1_3: str, location: Location | None) -> None:
    message = swap(fx.ADT_A08, "PV1|1|I|W01^B1^W01-B1-1|", f"PV1|1|I|{pv1_3}|")
    assert parse_adt(message).location == location


@pytest.mark.parametrize(
    ("pid3", "nhs_number", "mrn"),
    [
        (f"{fx.NHS_1}^^^NHS^NH", fx.NHS_1, None),
        (f"M1^^^RX1^MR~{fx.NHS_1}^^^NHS^NH", fx.NHS_1, "M1"),
        (f"{fx.NHS_1}^^^nhs^NH~M1^^^RX1^mr", fx.NHS_1, "M1"),
        (f"{fx.NHS_1}^^^NHS&2.16.840.1.113883.2.1.4.1&ISO^NH", fx.NHS_1, None),
        ("999 000 0018^^^NHS^NH", fx.NHS_1, None),
        ("999-000-0018^^^NHS^NH", fx.NHS_1, None),
        ("^^^NHS^NH~M1^^^RX1^MR", None, "M1"),  # an empty NHS repetition is no NHS number
        (f"M1^^^RX1^MR~M2^^^RX2^MR~{fx.NHS_2}^^^NHS", fx.NHS_2, "M1"),
        (f"{fx.NHS_1}^^^PAS^MR", None, fx.NHS_1),  # CX-5 MR makes it an MRN, whatever it looks like
    ],
)
def test_patient_identifiers(pid3: str, nhs_number: str | None, mrn: str | None) -> None:
    message = swap(fx.ADT_A13, f"|{fx.NHS_3}^^^NHS^NH~RX1000003^^^RX1^MR|", f"|{pid3}|")
    adt = parse_adt(message)
    assert (adt.nhs_number, adt.mrn) == (nhs_number, mrn)


def test_first_of_repeated_segments_is_used() -> None:
    message = swap(
        fx.ADT_A13, "PV1|1|I|W01^B2^W01-B2-4\r", "PV1|1|I|W01^B2^W01-B2-4\rPV1|1|I|W02^B1^W02-B1-1\r"
    )
    assert parse_adt(message).location == Location("W01", "B2", "W01-B2-4")


# --------------------------------------------------------------------------------------------
# Timestamps: offsets, precision, Europe/London across the clock changes


@pytest.mark.parametrize(
    ("evn2", "expected"),
    [
        ("20240115", utc(2024, 1, 15)),
        ("20240715", utc(2024, 7, 14, 23)),
        ("2024071512", utc(2024, 7, 15, 11)),
        ("202407151230", utc(2024, 7, 15, 11, 30)),
        ("20240715123045", utc(2024, 7, 15, 11, 30, 45)),
        ("20240715123045.5", utc(2024, 7, 15, 11, 30, 45, 500000)),
        ("20240715123045.1234", utc(2024, 7, 15, 11, 30, 45, 123400)),
        ("20240715123045+0000", utc(2024, 7, 15, 12, 30, 45)),
        ("20240715123045-0500", utc(2024, 7, 15, 17, 30, 45)),
        ("20240115123045+0100", utc(2024, 1, 15, 11, 30, 45)),
        ("202401151230-0030", utc(2024, 1, 15, 13, 0)),
        # spring forward, 31 March 2024: 01:00 GMT becomes 02:00 BST
        ("20240331005959", utc(2024, 3, 31, 0, 59, 59)),
        ("20240331013000", utc(2024, 3, 31, 1, 30)),  # a wall time that never happened: read as GMT
        ("20240331020000", utc(2024, 3, 31, 1, 0)),
        # fall back, 27 October 2024: 02:00 BST becomes 01:00 GMT
        ("20241027003000", utc(2024, 10, 26, 23, 30)),
        ("20241027013000", utc(2024, 10, 27, 0, 30)),  # the repeated hour: read as its first, BST
        ("20241027020000", utc(2024, 10, 27, 2, 0)),
        ("20241027013000+0000", utc(2024, 10, 27, 1, 30)),  # an offset settles it
    ],
)
def test_event_time(evn2: str, expected: datetime) -> None:
    adt = parse_adt(swap(fx.ADT_A13, "EVN|A13|20241201115500", f"EVN|A13|{evn2}"))
    assert adt.event_time == expected
    assert is_utc(adt.event_time)


@pytest.mark.parametrize(
    "evn2",
    [
        "2024",
        "202407",
        "20240230",
        "20241301",
        "20240715250000",
        "20240715126000",
        "20240715123045+2500",
        "20240715123045+01",
        "20240715123045.12345",
        "2024-07-15",
        "20240715T1230",
        "20240715 1230",
        "yesterday",
        "00000101",
        "99991231235959-1400",
    ],
)
def test_malformed_event_time_is_ae(evn2: str) -> None:
    err = refused(swap(fx.ADT_A13, "EVN|A13|20241201115500", f"EVN|A13|{evn2}"))
    assert (err.ack_code, err.error_code, err.field) == ("AE", "102", "EVN-2")
    assert err.reason.startswith("EVN-2: ")
    assert err.control_id == "A13-0001"


# --------------------------------------------------------------------------------------------
# AR: rejected outright


@pytest.mark.parametrize(
    ("raw", "error_code", "reason_part"),
    [
        (b"", "100", "MSH"),
        (b"hello, world", "100", "MSH"),
        (b'{"resourceType": "Patient"}', "100", "MSH"),
        (b"\x00\xff\xfe binary", "100", "MSH"),
        (b"\x0b\x1c\r", "100", "MSH"),
        ("PID|1||9990000018^^^NHS^NH\rMSH|^~\\&|PAS", "100", "MSH"),
        ("BHS|^~\\&|PAS\r" + fx.ADT_A01, "100", "MSH"),
        ("MSH|^~\\&", "200", "MSH-9"),
        ("MSH|^~|PAS|RX1|WB|RX1|20240101||ADT^A01|1|P|2.5", "102", "MSH-2"),
        ("MSH|^^\\&|PAS|RX1|WB|RX1|20240101||ADT^A01|1|P|2.5", "102", "MSH-2"),
        ("MSH|^~\\&AB|PAS|RX1|WB|RX1|20240101||ADT^A01|1|P|2.5", "102", "MSH-2"),
        ("MSHA^~\\&A", "102", "MSH-2"),
        (fx.ADT_A01 + fx.ADT_A13, "100", "More than one MSH"),
    ],
)
def test_not_hl7_is_ar(raw: bytes | str, error_code: str, reason_part: str) -> None:
    err = refused(raw)
    assert err.ack_code == "AR"
    assert err.error_code == error_code
    assert reason_part in err.reason
    ack = refusal_ack(err)
    assert ack_code_of(ack) == "AR"


@pytest.mark.parametrize(
    ("old", "new", "error_code", "field"),
    [
        ("|ADT^A01^ADT_A01|", "|ORU^R01^ORU_R01|", "200", "MSH-9"),
        ("|ADT^A01^ADT_A01|", "|ACK^A01^ACK|", "200", "MSH-9"),
        ("|ADT^A01^ADT_A01|", "||", "200", "MSH-9"),
        ("|ADT^A01^ADT_A01|", "|ADT^A04^ADT_A01|", "201", "MSH-9"),
        ("|ADT^A01^ADT_A01|", "|ADT^A31^ADT_A05|", "201", "MSH-9"),
        ("|ADT^A01^ADT_A01|", "|ADT^A40^ADT_A39|", "201", "MSH-9"),
        ("|P|2.5|", "|P|2.2|", "203", "MSH-12"),
        ("|P|2.5|", "|P|2.6|", "203", "MSH-12"),
        ("|P|2.5|", "|P|2.7|", "203", "MSH-12"),
        ("|P|2.5|", "|P||", "203", "MSH-12"),
        ("|A01-0001|", "||", "101", "MSH-10"),
    ],
)
def test_unsupported_header_is_ar(old: str, new: str, error_code: str, field: str) -> None:
    err = refused(swap(fx.ADT_A01, old, new))
    assert (err.ack_code, err.error_code, err.field) == ("AR", error_code, field)
    assert err.reason.startswith(field)
    assert err.message is not None
    assert err.control_id == ("" if field == "MSH-10" else "A01-0001")


def test_msh9_without_event_and_no_evn_is_ar() -> None:
    err = refused(swap(fx.ADT_A11, "EVN|A11|20240117075900\r", ""))
    assert (err.ack_code, err.error_code) == ("AR", "201")
    assert "missing" in err.reason


def test_supported_versions_and_events() -> None:
    for version in ("2.3", "2.3.1", "2.4", "2.5", "2.5.1"):
        assert parse_adt(swap(fx.ADT_A08, "|P|2.5.1|", f"|P|{version}|")).version == version
    for event in sorted(SUPPORTED_EVENTS):
        assert parse_adt(swap(fx.ADT_A01, "ADT^A01^", f"ADT^{event}^")).event == event


# --------------------------------------------------------------------------------------------
# AE: cannot be applied


@pytest.mark.parametrize(
    ("fixture", "old", "new", "error_code", "field", "reason"),
    [
        (
            fx.ADT_A13,
            "PID|1||9990000034^^^NHS^NH~RX1000003^^^RX1^MR||Ahmed^Fatima||19900101|F\r",
            "",
            "100",
            "PID",
            "No PID segment: an A13 needs one",
        ),
        (fx.ADT_A13, "PV1|1|I|W01^B2^W01-B2-4\r", "", "100", "PV1", "No PV1 segment: an A13 needs one"),
        (fx.ADT_A03_CRLF, "PV1|", "ZV1|", "100", "PV1", "No PV1 segment: an A03 needs one"),
        (
            fx.ADT_A01,
            fx.NHS_1,
            fx.NHS_BAD_CHECK,
            "102",
            "PID-3",
            f"PID-3: NHS number {fx.NHS_BAD_CHECK} fails its check digit",
        ),
        (fx.ADT_A01, fx.NHS_1, "12345", "102", "PID-3", "PID-3: NHS number '12345' is not ten digits"),
        (
            fx.ADT_A01,
            fx.NHS_1,
            "999000001X",
            "102",
            "PID-3",
            "PID-3: NHS number '999000001X' is not ten digits",
        ),
        (fx.ADT_A01, "RX1000001^^^RX1^MR~9990000018^^^NHS^NH~", "", "101", "PID-3", None),
        (fx.ADT_A11, "9990000042^^^NHS^NH", "", "101", "PID-3", None),
        (fx.ADT_A11, "9990000042^^^NHS^NH", "9990000042^^^PAS^PI", "101", "PID-3", None),
        (
            fx.ADT_A01,
            "|W01^B1^W01-B1-1|",
            "||",
            "101",
            "PV1-3",
            "PV1-3: an A01 needs the assigned ward and bed",
        ),
        (fx.ADT_A01, "|W01^B1^W01-B1-1|", "|W01^B1|", "101", "PV1-3", None),
        (fx.ADT_A01, "|W01^B1^W01-B1-1|", "|^B1^W01-B1-1|", "101", "PV1-3", None),
        (
            fx.ADT_A02_LF,
            "|W02^B3^W02-B3-2|",
            "|W02|",
            "101",
            "PV1-3",
            "PV1-3: an A02 needs the assigned ward and bed",
        ),
        (fx.ADT_A01, "|19720304|", "|19721304|", "102", "PID-7", "PID-7: '19721304' is not a valid HL7 date"),
        (fx.ADT_A01, "|19720304|", "|1972|", "102", "PID-7", None),
        (fx.ADT_A01, "|19720304|", "|04/03/1972|", "102", "PID-7", None),
        (fx.ADT_A01, "|20240120\r", "|2024-01-20\r", "102", "PV2-9", None),
        (fx.ADT_A03_CRLF, "|20241027014500\r", "|20241027254500\r", "102", "PV1-45", None),
        (fx.ADT_A13, "|20241201120000|", "|20241201X|", "102", "MSH-7", None),
        (fx.ADT_A01, "|20240115093000|", "|soon|", "102", "MSH-7", None),
    ],
)
def test_content_that_cannot_be_applied_is_ae(
    fixture: str, old: str, new: str, error_code: str, field: str, reason: str | None
) -> None:
    message = swap(fixture, old, new)
    err = refused(message)
    assert (err.ack_code, err.error_code, err.field) == ("AE", error_code, field)
    if reason is not None:
        assert err.reason == reason
    assert err.reason.startswith((field, "No "))
    assert err.control_id == message.split("|")[9]
    assert isinstance(err.message, hl7.Message)
    assert ack_code_of(refusal_ack(err)) == "AE"


def test_no_event_time_at_all_is_ae() -> None:
    message = swap(fx.ADT_A13, "|20241201120000||ADT^A13", "|||ADT^A13")
    err = refused(swap(message, "EVN|A13|20241201115500", "EVN|A13|"))
    assert (err.ack_code, err.error_code, err.field) == ("AE", "101", "MSH-7")
    assert err.reason == "EVN-2 and MSH-7: the event time is missing"


def test_long_bad_values_are_shortened_in_the_reason() -> None:
    err = refused(swap(fx.ADT_A01, fx.NHS_1, "9" * 500))
    assert len(err.reason) < 100
    assert "..." in err.reason


def test_a_bug_in_the_parser_is_still_an_hl7_answer(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: object) -> tuple[str, str]:
        raise RuntimeError("boom")

    monkeypatch.setattr(parse_module, "_identifiers", broken)
    with caplog.at_level(logging.ERROR, logger="whiteboard.hl7.parse"):
        err = refused(fx.ADT_A01)
    assert (err.ack_code, err.error_code, err.control_id) == ("AE", "207", "A01-0001")
    assert "HL7 parser failed" in caplog.text


def test_read_header_reads_a_truncated_message() -> None:
    message, control_id = read_header(fx.ADT_A01.encode()[:150])
    assert control_id == "A01-0001"
    assert isinstance(message, hl7.Message)
    assert read_header(b"\x00garbage") == (None, "")
    assert read_header("") == (None, "")


# --------------------------------------------------------------------------------------------
# Any input: an AdtMessage or Hl7Refused, never another exception, never the internal fallback


def _outcome(raw: bytes | str) -> AdtMessage | Hl7Refused:
    try:
        return parse_adt(raw)
    except Hl7Refused as err:
        return err


def _check(raw: bytes | str) -> None:
    outcome = _outcome(raw)
    if isinstance(outcome, Hl7Refused):
        assert outcome.ack_code in ("AR", "AE")
        assert outcome.error_code != "207", f"the parser fell back to internal error: {outcome.reason}"
        assert outcome.reason
        assert ack_code_of(refusal_ack(outcome)) == outcome.ack_code
        return
    adt = outcome
    assert adt.event in SUPPORTED_EVENTS
    assert adt.control_id
    assert is_utc(adt.event_time)
    assert adt.nhs_number is None or nhs.is_valid(adt.nhs_number)
    assert adt.nhs_number or adt.mrn
    assert adt.location is None or adt.location.ward
    if adt.event in ("A01", "A02"):
        assert adt.location is not None
        assert adt.location.bed
    for text in (adt.given_name, adt.family_name, adt.mrn, adt.attending):
        assert text is None or text == text.strip()
        assert text is None or not any(unicodedata.category(c) == "Cc" for c in text)


_FIXTURES = [raw for raw, _, _ in fx.ALL_ADT.values()]
_HL7_CHARS = "|^~\\&\r\n\x0b\x1c\x00 0123456789.+-ADTMSHPIDVEN_é\u2603"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes(raw: bytes) -> None:
    _check(raw)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_any_text(raw: str) -> None:
    _check(raw)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=_HL7_CHARS, max_size=300))
def test_any_text_after_an_msh_prefix(tail: str) -> None:
    _check("MSH|^~\\&|" + tail)
    _check("MSH" + tail)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_FIXTURES), st.data())
def test_mutated_valid_messages(fixture: str, data: st.DataObject) -> None:
    message = fixture
    for _ in range(data.draw(st.integers(1, 6), label="mutations")):
        at = data.draw(st.integers(0, len(message)), label="at")
        kind = data.draw(st.sampled_from(["insert", "delete", "replace"]), label="kind")
        text = data.draw(st.text(alphabet=_HL7_CHARS, min_size=1, max_size=4) | st.text(max_size=3))
        if kind == "insert":
            message = message[:at] + text + message[at:]
        elif kind == "delete":
            message = message[:at] + message[at + len(text) :]
        else:
            message = message[:at] + text + message[at + len(text) :]
    _check(message)
    _check(message.encode("utf-8", errors="surrogatepass"))


_FIELD_TEXT = st.text(alphabet="^~\\&0123456789ABCNHSMRFWX-.+ \x00é", max_size=25)


@settings(max_examples=300, deadline=None)
@given(
    event=st.sampled_from([*sorted(SUPPORTED_EVENTS), "A04", ""]),
    segments=st.lists(
        st.tuples(
            st.sampled_from(["EVN", "PID", "PV1", "PV2", "ZPD", "MSH", "PI", ""]),
            st.lists(_FIELD_TEXT, max_size=46),
        ),
        max_size=6,
    ),
)
def test_generated_adt_structures(event: str, segments: list[tuple[str, list[str]]]) -> None:
    header = f"MSH|^~\\&|PAS|RX1|WB|RX1|20240101120000||ADT^{event}|C1|P|2.5"
    body = "\r".join("|".join([name, *fields]) for name, fields in segments)
    _check(header + "\r" + body)
