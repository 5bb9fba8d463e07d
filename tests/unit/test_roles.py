"""The default role matrix of DESIGN 4.5, every role against every action."""

from __future__ import annotations

from typing import get_args

import pytest

from whiteboard.board.roles import (
    ASSIGNABLE_ROLES,
    MATRIX,
    USER_ROLES,
    Action,
    Role,
    allowed,
    may_read_view,
)

ROLES = ("admin", "nurse", "doctor", "ipc", "bed_manager", "viewer", "feed", "display")
ACTIONS = (
    "read_clinical",
    "read_display",
    "read_events",
    "move_patients",
    "edit_stay",
    "edit_bed",
    "raise_suspected_flag",
    "raise_confirmed_flag",
    "update_flag",
    "audit_flags",
    "post_hl7",
    "administer",
)

# DESIGN 4.5, transcribed: what each role may do; every other action is refused.
# Every role that reads the clinical view may also read the display view (a masked subset of it).
READS = {"read_clinical", "read_display", "read_events"}
TABLE: dict[str, set[str]] = {
    "admin": set(ACTIONS),
    "nurse": READS | {"move_patients", "edit_stay", "edit_bed", "raise_suspected_flag"},
    "doctor": READS | {"edit_stay", "raise_suspected_flag"},
    "ipc": READS | {"raise_suspected_flag", "raise_confirmed_flag", "update_flag", "audit_flags"},
    "bed_manager": READS | {"move_patients", "edit_bed"},
    "viewer": {"read_clinical", "read_display"},
    "feed": {"post_hl7"},
    "display": {"read_display"},
}

CELLS = [(role, action, action in TABLE[role]) for role in ROLES for action in ACTIONS]


def test_the_table_covers_every_role_and_action() -> None:
    assert tuple(TABLE) == ROLES
    assert set(ROLES) == set(get_args(Role))
    assert set(ACTIONS) == set(get_args(Action))
    assert set(MATRIX) == set(ACTIONS)
    assert all(TABLE[role] <= set(ACTIONS) for role in ROLES)
    assert len(CELLS) == len(ROLES) * len(ACTIONS)


@pytest.mark.parametrize(("role", "action", "expected"), CELLS)
def test_default_matrix(role: str, action: str, expected: bool) -> None:
    assert allowed(role, action) is expected


@pytest.mark.parametrize("role", ["display", "feed"])
def test_display_and_feed_read_no_clinical_view(role: str) -> None:
    assert not allowed(role, "read_clinical")
    assert not may_read_view(role, "clinical")
    assert not allowed(role, "read_events")


def test_a_display_reads_only_the_display_view() -> None:
    assert may_read_view("display", "display")
    assert [a for a in ACTIONS if allowed("display", a)] == ["read_display"]


def test_feed_may_only_post_hl7() -> None:
    assert [a for a in ACTIONS if allowed("feed", a)] == ["post_hl7"]
    assert not may_read_view("feed", "display")


def test_nurse_raises_suspected_but_not_confirmed_flags() -> None:
    assert allowed("nurse", "raise_suspected_flag")
    assert not allowed("nurse", "raise_confirmed_flag")
    assert not allowed("nurse", "update_flag")


def test_doctor_cannot_move_patients_or_beds() -> None:
    assert not allowed("doctor", "move_patients")
    assert not allowed("doctor", "edit_bed")
    assert allowed("doctor", "edit_stay")


def test_bed_manager_cannot_edit_stays_or_flags() -> None:
    assert not allowed("bed_manager", "edit_stay")
    assert not allowed("bed_manager", "raise_suspected_flag")
    assert allowed("bed_manager", "move_patients")
    assert allowed("bed_manager", "edit_bed")


def test_ipc_handles_flags_and_nothing_else_writable() -> None:
    writes = {"move_patients", "edit_stay", "edit_bed", "post_hl7", "administer"}
    assert not any(allowed("ipc", a) for a in writes)
    for action in ("raise_suspected_flag", "raise_confirmed_flag", "update_flag", "audit_flags"):
        assert allowed("ipc", action)


def test_viewer_reads_and_writes_nothing() -> None:
    assert [a for a in ACTIONS if allowed("viewer", a)] == ["read_clinical", "read_display"]


def test_admin_may_do_everything() -> None:
    assert all(allowed("admin", a) for a in ACTIONS)


@pytest.mark.parametrize("role", ["admin", "nurse", "doctor", "ipc", "bed_manager", "viewer"])
def test_every_clinical_reader_reads_both_views(role: str) -> None:
    assert may_read_view(role, "clinical")
    assert may_read_view(role, "display")


def test_unknown_roles_and_actions_are_refused() -> None:
    assert not allowed("superuser", "read_clinical")
    assert not allowed("", "read_clinical")
    assert not allowed("admin", "delete_ward")
    assert not may_read_view("superuser", "display")


def test_assignable_roles() -> None:
    assert set(ASSIGNABLE_ROLES) == set(ROLES) - {"display"}
    assert set(USER_ROLES) == set(ROLES) - {"display", "feed"}
