"""Realistic HL7 v2 ADT messages for the tests, as a PAS would send them.

NHS numbers are from the 999 test range with valid check digits; wards W01 and W02 and beds
like W01-B1-1 match the demo layout. PV1-3 is ``ward^bay^bed``. Segments end in CR unless a
constant's name says otherwise.
"""

from __future__ import annotations

from typing import Final

NHS_1: Final = "9990000018"
NHS_2: Final = "9990000026"
NHS_3: Final = "9990000034"
NHS_4: Final = "9990000042"
#: Ten digits, check digit wrong (9990000018 with its last digit changed).
NHS_BAD_CHECK: Final = "9990000019"

#: Admit, version 2.5: MRN, NHS number and a PAS-internal ID in PID-3; a Z-segment; MSH-15/16
#: asking for enhanced mode (we answer in original mode anyway).
ADT_A01: Final = (
    "MSH|^~\\&|PAS|RX1|WHITEBOARD|RX1|20240115093000||ADT^A01^ADT_A01|A01-0001|P|2.5|||AL|NE||UNICODE UTF-8\r"
    "EVN|A01|20240115092500|||JSMITH^Smith^Jane\r"
    f"PID|1||RX1000001^^^RX1^MR~{NHS_1}^^^NHS^NH~77001^^^PASINT^PI||O'Brien^Siobhan^Mary^^Mrs||19720304|F"
    "|||12 High Street^^Leeds^^LS1 1AA^GBR||0113 496 0000\r"
    "PV1|1|I|W01^B1^W01-B1-1|EM|||C4512^Okafor^Chidi^^^Dr|||MED|||||||||V0001|||||||||||||||||||||||||"
    "20240115092500\r"
    "PV2|||||||||20240120\r"
    "ZPD|1|PAS-LOCAL-FLAG^Y\r"
)

#: Transfer, version 2.4, LF line endings, event time with a +0100 offset (summer).
ADT_A02_LF: Final = (
    "MSH|^~\\&|PAS|RX1|WHITEBOARD|RX1|20240716143105+0100||ADT^A02^ADT_A02|A02-0001|P|2.4\n"
    "EVN|A02|20240716143000+0100\n"
    f"PID|1||{NHS_2}^^^NHS^NH~RX1000002^^^RX1^MR||Kowalski^Piotr||19550923|M\n"
    "PV1|1|I|W02^B3^W02-B3-2|||W01^B1^W01-B1-1|C4512^Okafor^Chidi^^^Dr|||MED\n"
)

#: Discharge, version 2.3, CRLF line endings, MSH-9 without a message structure, naive times
#: in the repeated hour of the autumn clock change (01:00-02:00 happens twice on 27 Oct 2024).
ADT_A03_CRLF: Final = (
    "MSH|^~\\&|PAS|RX1|WHITEBOARD|RX1|20241027014600||ADT^A03|A03-0001|P|2.3\r\n"
    "EVN|A03|20241027013000\r\n"
    f"PID|1||{NHS_3}^^^NHS^NH~RX1000003^^^RX1^MR||Ahmed^Fatima||19900101|F\r\n"
    "PV1|1|I|W01^B2^W01-B2-4|||||||MED|||||||||V0003|||||||||||||||||||||||||"
    "20241020101500|20241027014500\r\n"
)

#: Update, version 2.5.1: escape sequences in the names, sex U, empty trailing fields.
ADT_A08: Final = (
    "MSH|^~\\&|PAS|RX1|WHITEBOARD|RX1|20240116101500||ADT^A08^ADT_A01|A08-0001|P|2.5.1|||||\r"
    "EVN|A08|20240116101400||||\r"
    f"PID|1||{NHS_1}^^^NHS^NH~RX1000001^^^RX1^MR||Fitzgerald\\T\\Harris^Anne\\S\\Marie||19720304|U|||||\r"
    "PV1|1|I|W01^B1^W01-B1-1||||C4512^Okafor^Chidi^^^Dr|||MED|||||||||V0001||||||\r"
    "PV2|||||||||20240122000000|||\r"
)

#: Cancel admit, version 2.3.1: MSH-9 names only the message type, the event is in EVN-1.
ADT_A11: Final = (
    "MSH|^~\\&|PAS|RX1|WHITEBOARD|RX1|20240117080000||ADT|A11-0001|P|2.3.1\r"
    "EVN|A11|20240117075900\r"
    f"PID|1||{NHS_4}^^^NHS^NH||Jensen^Lars||19481130|M\r"
    "PV1|1|I|W02^B1^W02-B1-1\r"
)

#: Cancel transfer, version 2.4: back to W01-B1-1 from W02-B3-2.
ADT_A12: Final = (
    "MSH|^~\\&|PAS|RX1|WHITEBOARD|RX1|20240716150000+0100||ADT^A12^ADT_A12|A12-0001|P|2.4\r"
    "EVN|A12|20240716145900+0100\r"
    f"PID|1||{NHS_2}^^^NHS^NH~RX1000002^^^RX1^MR||Kowalski^Piotr||19550923|M\r"
    "PV1|1|I|W01^B1^W01-B1-1|||W02^B3^W02-B3-2\r"
)

#: Cancel discharge, version 2.5, winter (GMT) time without an offset.
ADT_A13: Final = (
    "MSH|^~\\&|PAS|RX1|WHITEBOARD|RX1|20241201120000||ADT^A13^ADT_A01|A13-0001|P|2.5\r"
    "EVN|A13|20241201115500\r"
    f"PID|1||{NHS_3}^^^NHS^NH~RX1000003^^^RX1^MR||Ahmed^Fatima||19900101|F\r"
    "PV1|1|I|W01^B2^W01-B2-4\r"
)

#: Admit of an unidentified patient: a hospital number (MRN) only, no NHS number, no DOB.
ADT_A01_MRN_ONLY: Final = (
    "MSH|^~\\&|ED|RX1|WHITEBOARD|RX1|20240115230000||ADT^A01^ADT_A01|A01-0002|P|2.5\r"
    "EVN|A01|20240115225500\r"
    "PID|1||U0000123^^^RX1^MR||UNKNOWN^MALE|||M\r"
    "PV1|1|E|W02^B1^W02-B1-3\r"
)

#: Every fixture with the event and version it carries.
ALL_ADT: Final[dict[str, tuple[str, str, str]]] = {
    "A01": (ADT_A01, "A01", "2.5"),
    "A02-lf": (ADT_A02_LF, "A02", "2.4"),
    "A03-crlf": (ADT_A03_CRLF, "A03", "2.3"),
    "A08": (ADT_A08, "A08", "2.5.1"),
    "A11": (ADT_A11, "A11", "2.3.1"),
    "A12": (ADT_A12, "A12", "2.4"),
    "A13": (ADT_A13, "A13", "2.5"),
    "A01-mrn-only": (ADT_A01_MRN_ONLY, "A01", "2.5"),
}


def with_control_id(message: str, control_id: str) -> str:
    """`message` (one of the constants, CR endings) with MSH-10 replaced."""
    msh, sep, rest = message.partition("\r")
    fields = msh.split("|")
    fields[9] = control_id
    return "|".join(fields) + sep + rest
