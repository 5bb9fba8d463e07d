"""wards.layout_version: moves on whenever a layout load touches the ward

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 00:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("wards", schema=None) as batch_op:
        batch_op.add_column(sa.Column("layout_version", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("wards", schema=None) as batch_op:
        batch_op.drop_column("layout_version")
