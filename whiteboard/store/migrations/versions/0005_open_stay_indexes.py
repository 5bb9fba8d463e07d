"""Stays: open-stay lookups by patient and by ward use one two-column index each

SQLite keeps no statistics unless told to ANALYZE; with `is_open` indexed alone it chose that
index for "the patient's open stay" and "the ward's open stays", reading every open stay in the
trust on every feed message and every board load. The single-column patient and ward indexes
are the new indexes' leading columns, so they go.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 07:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stays", schema=None) as batch_op:
        batch_op.create_index("ix_stays_patient_open", ["patient_id", "is_open"], unique=False)
        batch_op.create_index("ix_stays_ward_open", ["ward_code", "is_open"], unique=False)
        batch_op.drop_index(batch_op.f("ix_stays_patient_id"))
        batch_op.drop_index(batch_op.f("ix_stays_ward_code"))


def downgrade() -> None:
    with op.batch_alter_table("stays", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stays_ward_code"), ["ward_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_stays_patient_id"), ["patient_id"], unique=False)
        batch_op.drop_index("ix_stays_ward_open")
        batch_op.drop_index("ix_stays_patient_open")
