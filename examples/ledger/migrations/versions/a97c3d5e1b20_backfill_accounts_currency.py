"""backfill accounts.currency for accounts opened before it existed (medium: a data change)

Revision ID: a97c3d5e1b20
Revises: 5e0b2a8f6d13
Create Date: 2026-10-02 12:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'a97c3d5e1b20'
down_revision = '5e0b2a8f6d13'
branch_labels = None
depends_on = None


def upgrade():
    op.execute("UPDATE accounts SET currency = 'EUR' WHERE currency IS NULL")


def downgrade():
    # Which accounts had no currency before is not recorded: the backfill stays.
    pass
