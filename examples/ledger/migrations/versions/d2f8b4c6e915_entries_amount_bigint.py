"""entries.amount_cents becomes bigint (high: the table is rewritten)

Revision ID: d2f8b4c6e915
Revises: a97c3d5e1b20
Create Date: 2026-11-10 10:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'd2f8b4c6e915'
down_revision = 'a97c3d5e1b20'
branch_labels = None
depends_on = None


def upgrade():
    op.alter_column('entries', 'amount_cents', existing_type=sa.Integer(), type_=sa.BigInteger(),
                    existing_nullable=False)


def downgrade():
    op.alter_column('entries', 'amount_cents', existing_type=sa.BigInteger(), type_=sa.Integer(),
                    existing_nullable=False)
