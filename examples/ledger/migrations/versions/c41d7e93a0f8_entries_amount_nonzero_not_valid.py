"""entries.amount_cents must not be zero, checked for new rows only (low: NOT VALID)

Revision ID: c41d7e93a0f8
Revises: 8b1e6f0a2c57
Create Date: 2026-10-02 10:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'c41d7e93a0f8'
down_revision = '8b1e6f0a2c57'
branch_labels = None
depends_on = None


def upgrade():
    op.execute('ALTER TABLE entries ADD CONSTRAINT ck_entries_amount_nonzero CHECK (amount_cents <> 0) NOT VALID')


def downgrade():
    op.drop_constraint('ck_entries_amount_nonzero', 'entries', type_='check')
