"""alerts

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 21:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pixelgate.db.tables

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("active_key", sa.String(length=160), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Numeric(precision=18, scale=6, asdecimal=False), nullable=False),
        sa.Column("threshold", sa.Numeric(precision=18, scale=6, asdecimal=False), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("raised_at", pixelgate.db.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", pixelgate.db.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("active_key", name=op.f("uq_alerts_active_key")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index("ix_alerts_raised", ["raised_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_alerts_raised")
    op.drop_table("alerts")
