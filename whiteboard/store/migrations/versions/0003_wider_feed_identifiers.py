"""Room for real feed identifiers: ISO OIDs in MSH-3/MSH-4 and long MSH-10s

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.alter_column(
            "actor", existing_type=sa.String(length=200), type_=sa.Text(), existing_nullable=False
        )
    with op.batch_alter_table("hl7_messages", schema=None) as batch_op:
        batch_op.alter_column(
            "sender", existing_type=sa.String(length=200), type_=sa.Text(), existing_nullable=False
        )
        batch_op.alter_column(
            "control_id", existing_type=sa.String(length=200), type_=sa.Text(), existing_nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("hl7_messages", schema=None) as batch_op:
        batch_op.alter_column("control_id", existing_type=sa.Text(), type_=sa.String(length=200))
        batch_op.alter_column("sender", existing_type=sa.Text(), type_=sa.String(length=200))
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.alter_column("actor", existing_type=sa.Text(), type_=sa.String(length=200))
