"""orders.quantity integer -> bigint (high risk: rewrites the table under ACCESS EXCLUSIVE).

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("orders", "quantity", type_=sa.BigInteger, existing_type=sa.Integer, existing_nullable=False)


def downgrade() -> None:
    op.alter_column("orders", "quantity", type_=sa.Integer, existing_type=sa.BigInteger, existing_nullable=False)
