"""The store of record: state tables, the append-only event log and the security records.

State rows say how things are now; `events` says how they came to be, per ward, `seq` 1, 2, 3…
assigned in the same transaction as the change (the ward row's `seq` is the counter, locked
for the length of the transaction). Alembic migrations under `migrations/` create exactly this.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

sites = Table(
    "sites",
    metadata,
    Column("code", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("position", Integer, nullable=False, default=0),
)

wards = Table(
    "wards",
    metadata,
    Column("code", String(32), primary_key=True),
    Column("site_code", String(32), ForeignKey("sites.code"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("specialty", String(200), nullable=False, default=""),
    Column("position", Integer, nullable=False, default=0),
    # The per-ward event counter: the last seq handed out.
    Column("seq", BigInteger, nullable=False, default=0),
    # Moves on with every layout load that touches the ward; with `seq` it says whether a
    # process's cached copy of the board is still the board.
    Column("layout_version", Integer, nullable=False, default=0, server_default="0"),
    Column("public_alerts", JSON, nullable=True),
)

beds = Table(
    "beds",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("ward_code", String(32), ForeignKey("wards.code"), nullable=False, index=True),
    Column("bay", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("stay_id", String(32), nullable=True),
    Column("position", Integer, nullable=False, default=0),
)

patients = Table(
    "patients",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("nhs_number", String(10), nullable=True, unique=True),
    Column("mrn", String(64), nullable=False, index=True),
    Column("given_name", String(200), nullable=False),
    Column("family_name", String(200), nullable=False),
    Column("dob", String(10), nullable=True),
    Column("sex", String(8), nullable=False),
    # The event time of the last feed message applied for this patient (HL7 ordering).
    Column("feed_time", String(32), nullable=True),
)

stays = Table(
    "stays",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("patient_id", String(32), ForeignKey("patients.id"), nullable=False),
    Column("ward_code", String(32), nullable=False),
    Column("bed_code", String(64), nullable=True),
    Column("is_open", Boolean, nullable=False, default=True, index=True),
    Column("version", Integer, nullable=False, default=1),
    Column("admitted_at", String(32), nullable=False),
    Column("ended_at", String(32), nullable=True),
    Column("end_reason", String(16), nullable=True),
    Column("consultant", String(200), nullable=True),
    Column("named_nurse", String(200), nullable=True),
    Column("edd", String(10), nullable=True),
    Column("day_status", String(8), nullable=True),
    Column("news2", Integer, nullable=True),
    Column("alerts", JSON, nullable=False),
    Column("discharge", JSON, nullable=False),
    Column("previous", JSON, nullable=True),
)

flags = Table(
    "flags",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("patient_id", String(32), ForeignKey("patients.id"), nullable=False, index=True),
    Column("code", String(32), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("precaution", String(16), nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("raised_by", String(200), nullable=False),
    Column("raised_at", String(32), nullable=False),
    Column("cleared_by", String(200), nullable=True),
    Column("cleared_at", String(32), nullable=True),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ward_code", String(32), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("at", String(32), nullable=False),
    Column("actor", Text, nullable=False),
    Column("type", String(32), nullable=False),
    Column("payload", JSON, nullable=False),
    UniqueConstraint("ward_code", "seq", name="uq_events_ward_seq"),
)
Index("ix_events_at", events.c.at)
# A patient's open stay and a ward's open stays are looked up on every feed message and every
# board load. With `is_open` indexed alone beside `patient_id` and `ward_code`, SQLite (which
# keeps no statistics unless told to ANALYZE) chose the `is_open` index and read every open
# stay in the trust each time; these answer both columns at once.
Index("ix_stays_patient_open", stays.c.patient_id, stays.c.is_open)
Index("ix_stays_ward_open", stays.c.ward_code, stays.c.is_open)

tokens = Table(
    "tokens",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("role", String(32), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", String(32), nullable=False),
    Column("revoked_at", String(32), nullable=True),
)

users = Table(
    "users",
    metadata,
    Column("username", String(100), primary_key=True),
    Column("role", String(32), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", String(32), nullable=False),
    # Moves on whenever the user is disabled or re-enabled: older sessions stop being valid.
    Column("session_epoch", Integer, nullable=False, default=0),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("username", String(100), nullable=False, index=True),
    Column("created_at", String(32), nullable=False),
    Column("last_seen_at", String(32), nullable=False),
    Column("ended_at", String(32), nullable=True),
)

displays = Table(
    "displays",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("ward_code", String(32), ForeignKey("wards.code"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("profile", String(32), nullable=False, default="landscape"),
    Column("pair_code_hash", String(64), nullable=True, unique=True),
    Column("pair_expires_at", String(32), nullable=True),
    Column("paired_at", String(32), nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("revoked_at", String(32), nullable=True),
)

hl7_messages = Table(
    "hl7_messages",
    metadata,
    Column("sender", Text, primary_key=True),
    Column("control_id", Text, primary_key=True),
    Column("received_at", String(32), nullable=False),
    Column("event", String(8), nullable=False),
)
