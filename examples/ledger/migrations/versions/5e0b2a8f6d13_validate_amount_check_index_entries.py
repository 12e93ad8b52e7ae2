"""validate the amount check; index entries by account, built concurrently (low)

Revision ID: 5e0b2a8f6d13
Revises: c41d7e93a0f8
Create Date: 2026-10-02 11:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '5e0b2a8f6d13'
down_revision = 'c41d7e93a0f8'
branch_labels = None
depends_on = None


def upgrade():
    # SHARE UPDATE EXCLUSIVE: reads and writes go on while existing rows are checked.
    op.execute('ALTER TABLE entries VALIDATE CONSTRAINT ck_entries_amount_nonzero')
    # CONCURRENTLY cannot run inside a transaction.
    with op.get_context().autocommit_block():
        op.create_index('ix_entries_account_id_created_at', 'entries', ['account_id', 'created_at'],
                        postgresql_concurrently=True, if_not_exists=True)


def downgrade():
    with op.get_context().autocommit_block():
        op.drop_index('ix_entries_account_id_created_at', table_name='entries', postgresql_concurrently=True,
                      if_exists=True)
