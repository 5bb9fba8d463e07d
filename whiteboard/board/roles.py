"""Who may do what: the default role matrix of DESIGN 4.5, as data.

The shells ask `allowed(role, action)` before they look at a request body, so a role that may
not act learns only that (403), never whether its input would have been valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

Role = Literal["admin", "nurse", "doctor", "ipc", "bed_manager", "viewer", "feed", "display"]
#: Roles a user or token may be given; `display` belongs to paired wall screens only.
ASSIGNABLE_ROLES: tuple[str, ...] = ("admin", "nurse", "doctor", "ipc", "bed_manager", "viewer", "feed")
USER_ROLES: tuple[str, ...] = ("admin", "nurse", "doctor", "ipc", "bed_manager", "viewer")

Action = Literal[
    "read_clinical",  # clinical view of any ward: snapshot, socket, ward list
    "read_display",  # display view
    "read_events",  # the event log of a ward
    "move_patients",  # admit, transfer, discharge by hand
    "edit_stay",
    "edit_bed",
    "raise_suspected_flag",
    "raise_confirmed_flag",
    "update_flag",  # confirm or clear
    "audit_flags",
    "post_hl7",
    "administer",  # users, tokens, displays
]

_CLINICAL_READERS = frozenset({"admin", "nurse", "doctor", "ipc", "bed_manager", "viewer"})

MATRIX: Mapping[str, frozenset[str]] = {
    "read_clinical": _CLINICAL_READERS,
    "read_display": _CLINICAL_READERS | {"display"},
    "read_events": frozenset({"admin", "nurse", "doctor", "ipc", "bed_manager"}),
    "move_patients": frozenset({"admin", "nurse", "bed_manager"}),
    "edit_stay": frozenset({"admin", "nurse", "doctor"}),
    "edit_bed": frozenset({"admin", "nurse", "bed_manager"}),
    "raise_suspected_flag": frozenset({"admin", "nurse", "doctor", "ipc"}),
    "raise_confirmed_flag": frozenset({"admin", "ipc"}),
    "update_flag": frozenset({"admin", "ipc"}),
    "audit_flags": frozenset({"admin", "ipc"}),
    "post_hl7": frozenset({"admin", "feed"}),
    "administer": frozenset({"admin"}),
}


def allowed(role: str, action: str) -> bool:
    return role in MATRIX.get(action, frozenset())


def may_read_view(role: str, view: str) -> bool:
    return allowed(role, "read_clinical" if view == "clinical" else "read_display")
