"""entries.reference replaces legacy_ref: backfill, then drop the old column (critical)

Revision ID: e6a0c9f3b8d1
Revises: d2f8b4c6e915
Create Date: 2026-11-10 11:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e6a0c9f3b8d1'
down_revision = 'd2f8b4c6e915'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('entries', sa.Column('reference', sa.Text(), nullable=True))
    op.execute('UPDATE entries SET reference = legacy_ref WHERE legacy_ref IS NOT NULL')
    op.drop_column('entries', 'legacy_ref')


def downgrade():
    op.add_column('entries', sa.Column('legacy_ref', sa.String(length=40), nullable=True))
    op.execute('UPDATE entries SET legacy_ref = left(reference, 40) WHERE reference IS NOT NULL')
    op.drop_column('entries', 'reference')
