"""The write path's statements, built once and run with bound parameters.

Building a SQLAlchemy statement (and its cache key) costs several times what SQLite takes to
run it; a feed message runs a dozen of them. These are the hot ones, built once per dialect
and row shape and reused, and run through `whiteboard.store.direct.run`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import BigInteger, Table, and_, bindparam, case, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Executable

from whiteboard.store.tables import beds, events, hl7_messages, metadata, patients, stays, tokens, wards


@cache
def upsert(dialect_name: str, table_name: str, columns: tuple[str, ...], key: str) -> Executable:
    """INSERT … ON CONFLICT (key) DO UPDATE of exactly `columns` (others keep their values)."""
    table: Table = metadata.tables[table_name]
    dialect: Any = sqlite if dialect_name == "sqlite" else postgresql
    insert = dialect.insert(table)
    return insert.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[key], set_={c: insert.excluded[c] for c in columns if c != key}
    )


def upsert_for(dialect_name: str, table: Table, row: dict[str, Any], key: str) -> Executable:
    return upsert(dialect_name, table.name, tuple(sorted(row)), key)


@cache
def record_message(dialect_name: str) -> Executable:
    """Remember a feed message's control ID; does nothing if it is already there."""
    dialect: Any = sqlite if dialect_name == "sqlite" else postgresql
    return dialect.insert(hl7_messages).on_conflict_do_nothing(  # type: ignore[no-any-return]
        index_elements=["sender", "control_id"]
    )


SET_BED = (
    update(beds)
    .where(beds.c.code == bindparam("b_code"))
    .values(state=bindparam("b_state"), version=bindparam("b_version"), stay_id=bindparam("b_stay"))
)
REOPEN_STAY = (
    update(stays).where(stays.c.id == bindparam("s_id")).values(is_open=True, ended_at=None, end_reason=None)
)
SET_WARD_SEQ = update(wards).where(wards.c.code == bindparam("w_code")).values(seq=bindparam("w_seq"))
#: SET_WARD_SEQ only while the ward is still at the seq and layout a command was decided on.
#: Otherwise the new seq is NULL, which the NOT NULL column refuses: the whole statement it is
#: part of fails and nothing of it is applied (`Repository._write_at_once`).
_WARD_AT = and_(wards.c.seq == bindparam("w_was"), wards.c.layout_version == bindparam("w_layout"))
SET_WARD_SEQ_IF_AT = (
    update(wards)
    .where(wards.c.code == bindparam("w_code"))
    .values(seq=case((_WARD_AT, bindparam("w_seq", type_=BigInteger))))  # typed: a CASE gives no type
)
#: SET_WARD_SEQ_IF_AT, and only while the bearer token the write is made with is live: a
#: revoked token is refused by the write's own statement, as at once as a lookup before it.
SET_WARD_SEQ_IF_AT_FOR_TOKEN = (
    update(wards)
    .where(wards.c.code == bindparam("w_code"))
    .values(
        seq=case(
            (
                and_(
                    _WARD_AT,
                    exists().where(tokens.c.token_hash == bindparam("t_hash"), tokens.c.revoked_at.is_(None)),
                ),
                bindparam("w_seq", type_=BigInteger),
            )
        )
    )
)
APPEND_EVENTS = events.insert()
WARD_VERSIONS = select(wards.c.code, wards.c.seq, wards.c.layout_version).where(
    wards.c.code.in_(bindparam("codes", expanding=True))
)
#: PostgreSQL: lock the wards a command touches and read their versions in one round trip.
#: Sorted, so two transactions touching the same wards never wait on each other in a cycle;
#: FOR UPDATE returns each row as committed once its lock is held.
LOCK_WARDS = WARD_VERSIONS.order_by(wards.c.code).with_for_update()
#: One ward's (seq, layout version): per ward, as an expanding IN list is written per execution.
WARD_VERSION = select(wards.c.seq, wards.c.layout_version).where(wards.c.code == bindparam("code"))
#: LOCK_WARDS for one ward (nearly every command), without an expanding IN list.
LOCK_WARD = WARD_VERSION.with_for_update()
WARD_OF_BED = select(beds.c.ward_code).where(beds.c.code == bindparam("code"))
PATIENT_BY_NHS = select(patients).where(patients.c.nhs_number == bindparam("value"))
PATIENT_BY_MRN = select(patients).where(patients.c.mrn == bindparam("value")).order_by(patients.c.id).limit(1)
SET_FEED_TIME = (
    update(patients)
    .where(patients.c.id == bindparam("p_id"))
    .where((patients.c.feed_time.is_(None)) | (patients.c.feed_time < bindparam("p_time")))
    .values(feed_time=bindparam("p_time"))
)
#: The patient's open stay (the feed's lookups, built once rather than per message).
OPEN_STAY_OF_PATIENT = select(stays.c.id, stays.c.ward_code, stays.c.previous).where(
    stays.c.patient_id == bindparam("p_id"), stays.c.is_open
)
#: The ward of an open stay (every command on a stay starts here).
WARD_OF_OPEN_STAY = select(stays.c.ward_code).where(stays.c.id == bindparam("s_id"), stays.c.is_open)
#: The ward of the patient's latest stay, where a late message about them is recorded.
LAST_WARD_OF_PATIENT = (
    select(stays.c.ward_code)
    .where(stays.c.patient_id == bindparam("p_id"))
    .order_by(stays.c.admitted_at.desc())
    .limit(1)
)
