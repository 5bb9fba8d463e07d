"""Original-mode ACKs: header swap, MSA-2 echo, ERR codes, escaping, and ACKs to non-HL7."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import hl7
import pytest

from tests import fixtures_hl7 as fx
from whiteboard.hl7.ack import accept_ack, ack_code_of, build_ack, refusal_ack
from whiteboard.hl7.parse import Hl7Refused, parse_adt


def segments(ack: str) -> dict[str, list[str]]:
    """Segment ID -> its fields, split on the default separators (MSH-1 is index 1)."""
    assert ack.endswith("\r")
    out: dict[str, list[str]] = {}
    for line in ack[:-1].split("\r"):
        fields = line.split("|")
        if fields[0] == "MSH":
            fields.insert(1, "|")
        out[fields[0]] = fields
    return out


def field(fields: list[str], n: int) -> str:
    return fields[n] if n < len(fields) else ""


def refused(raw: bytes | str) -> Hl7Refused:
    with pytest.raises(Hl7Refused) as info:
        parse_adt(raw)
    return info.value


def test_aa_swaps_sender_and_receiver_and_echoes_the_control_id() -> None:
    adt = parse_adt(fx.ADT_A01)
    ack = accept_ack(adt)
    seg = segments(ack)
    assert list(seg) == ["MSH", "MSA"]
    msh, msa = seg["MSH"], seg["MSA"]
    assert field(msh, 2) == "^~\\&"
    assert (field(msh, 3), field(msh, 4), field(msh, 5), field(msh, 6)) == ("WHITEBOARD", "RX1", "PAS", "RX1")
    assert field(msh, 9) == "ACK^A01^ACK"
    assert field(msh, 10)
    assert field(msh, 10) != "A01-0001"
    assert len(field(msh, 10)) <= 20
    assert field(msh, 11) == "P"
    assert field(msh, 12) == "2.5"
    assert msa[1:] == ["AA", "A01-0001"]
    assert ack_code_of(ack) == "AA"


def test_original_mode_whatever_msh15_and_msh16_ask() -> None:
    assert "|AL|NE|" in fx.ADT_A01  # the fixture asks for enhanced mode
    ack = accept_ack(parse_adt(fx.ADT_A01))
    assert ack_code_of(ack) == "AA"
    assert "MSA|AA|A01-0001\r" in ack


def test_msh7_is_now_in_utc() -> None:
    msh7 = field(segments(accept_ack(parse_adt(fx.ADT_A01)))["MSH"], 7)
    assert re.fullmatch(r"\d{14}\+0000", msh7)
    sent = datetime.strptime(msh7[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - sent) < timedelta(seconds=5)


def test_each_ack_has_a_new_control_id() -> None:
    adt = parse_adt(fx.ADT_A01)
    ids = {field(segments(accept_ack(adt))["MSH"], 10) for _ in range(50)}
    assert len(ids) == 50


def test_version_and_event_follow_the_original() -> None:
    msh = segments(accept_ack(parse_adt(fx.ADT_A02_LF)))["MSH"]
    assert (field(msh, 9), field(msh, 12)) == ("ACK^A02^ACK", "2.4")
    msh = segments(accept_ack(parse_adt(fx.ADT_A11)))["MSH"]  # event from EVN-1
    assert (field(msh, 9), field(msh, 12)) == ("ACK^A11^ACK", "2.3.1")


def test_ae_carries_msa3_and_err() -> None:
    err = refused(fx.ADT_A01.replace(fx.NHS_1, fx.NHS_BAD_CHECK))
    ack = refusal_ack(err)
    seg = segments(ack)
    assert list(seg) == ["MSH", "MSA", "ERR"]
    assert seg["MSA"][1:] == ["AE", "A01-0001", f"PID-3: NHS number {fx.NHS_BAD_CHECK} fails its check digit"]
    errs = seg["ERR"]
    assert field(errs, 1) == "PID^1^3^102&Data type error&HL70357"
    assert field(errs, 2) == "PID^1^3"
    assert field(errs, 3) == "102^Data type error^HL70357"
    assert field(errs, 4) == "E"
    assert field(errs, 8) == seg["MSA"][3]
    assert ack_code_of(ack) == "AE"


@pytest.mark.parametrize(
    ("message", "code", "err3"),
    [
        (
            fx.ADT_A01.replace("ADT^A01^ADT_A01", "ORU^R01^ORU_R01"),
            "AR",
            "200^Unsupported message type^HL70357",
        ),
        (
            fx.ADT_A01.replace("ADT^A01^ADT_A01", "ADT^A04^ADT_A01"),
            "AR",
            "201^Unsupported event code^HL70357",
        ),
        (fx.ADT_A01.replace("|P|2.5|", "|P|2.7|"), "AR", "203^Unsupported version id^HL70357"),
        (fx.ADT_A01.replace("|A01-0001|", "||"), "AR", "101^Required field missing^HL70357"),
        (fx.ADT_A01.replace("PV1|", "ZV1|"), "AE", "100^Segment sequence error^HL70357"),
    ],
)
def test_err3_codes(message: str, code: str, err3: str) -> None:
    ack = refusal_ack(refused(message))
    assert ack_code_of(ack) == code
    assert field(segments(ack)["ERR"], 3) == err3


@pytest.mark.parametrize("raw", [b"", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\xff\xfe\x00", "PID|1"])
def test_ar_to_input_that_is_not_hl7_has_empty_msa2(raw: bytes | str) -> None:
    ack = refusal_ack(refused(raw))
    seg = segments(ack)
    assert seg["MSA"][:2] == ["MSA", "AR"]
    assert field(seg["MSA"], 2) == ""
    assert field(seg["MSH"], 3) == "WHITEBOARD"
    assert field(seg["MSH"], 9) == "ACK"
    assert field(seg["MSH"], 12) == "2.5"
    assert field(seg["ERR"], 3).startswith("100^")
    assert ack_code_of(ack) == "AR"


def test_reason_is_escaped_and_round_trips_through_python_hl7() -> None:
    reason = "bad | pipe ^ caret ~ tilde \\ backslash & amp\rnew line é €"
    ack = build_ack("AE", message=None, control_id="ID|1^2", reason=reason, error_code="207")
    assert ack.count("\r") == 3
    parsed = hl7.parse(ack)
    msa = parsed.segment("MSA")
    assert parsed.unescape(str(msa(2))) == "ID|1^2"
    assert parsed.unescape(str(msa(3))) == "bad | pipe ^ caret ~ tilde \\ backslash & amp new line é ?"
    assert parsed.unescape(str(parsed.segment("ERR")(8))) == parsed.unescape(str(msa(3)))


def test_ack_uses_the_originals_encoding_characters() -> None:
    table = str.maketrans({"|": "#", "^": "$", "~": "%", "\\": "@"})
    adt = parse_adt(fx.ADT_A01.translate(table))
    ack = build_ack("AE", message=adt.message, control_id=adt.control_id, reason="a#b", error_code="204")
    assert ack.startswith("MSH#$%@&#WHITEBOARD#RX1#PAS#RX1#")
    assert "#ACK$A01$ACK#" in ack
    assert "MSA#AE#A01-0001#a@F@b\r" in ack
    assert "204$Unknown key identifier$HL70357" in ack
    assert ack_code_of(ack) == "AE"


def test_unknown_error_code_becomes_207_and_aa_has_no_err() -> None:
    ack = build_ack("AR", message=None, control_id="", reason="x", error_code="999")
    assert field(segments(ack)["ERR"], 3) == "207^Application internal error^HL70357"
    assert "ERR" not in segments(build_ack("AA", message=None, control_id="C1"))
    assert segments(build_ack("AA", message=None, control_id="C1", reason="duplicate"))["MSA"][1:] == [
        "AA",
        "C1",
        "duplicate",
    ]


def test_aa_without_reason_has_no_msa3() -> None:
    ack = accept_ack(parse_adt(fx.ADT_A13))
    assert "MSA|AA|A13-0001\r" in ack


def test_an_oversized_version_or_event_is_not_echoed() -> None:
    err = refused(fx.ADT_A01.replace("|P|2.5|", "|P|" + "9" * 80 + "|"))
    msh = segments(refusal_ack(err))["MSH"]
    assert field(msh, 12) == "2.5"
    err = refused(fx.ADT_A01.replace("ADT^A01^ADT_A01", "ADT^A01X99^ADT_A01"))
    msh = segments(refusal_ack(err))["MSH"]
    assert field(msh, 9) == "ACK"


@pytest.mark.parametrize(
    "text", ["", "garbage", "MSH|^~\\&|A\rPID|1", "\x0bMSH|^~\\&\rMSA|AE|1\x1c\r", "MSH|^^^^"]
)
def test_ack_code_of_odd_input(text: str) -> None:
    expected = "AE" if "MSA|AE" in text else ""
    assert ack_code_of(text) == expected
