"""Backfill orders.notional and drop users.legacy_status (critical: data change and a drop).

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("notional", sa.Numeric(24, 4), nullable=True))
    op.execute("UPDATE orders SET notional = quantity * price")
    op.drop_column("users", "legacy_status")


def downgrade() -> None:
    # The dropped values cannot come back; the column returns with its default.
    op.add_column("users", sa.Column("legacy_status", sa.String(20), nullable=True, server_default="active"))
    op.drop_column("orders", "notional")
