"""add accounts.currency (low: a nullable column)

Revision ID: 8b1e6f0a2c57
Revises: 3f2a9c1d7b44
Create Date: 2026-09-08 10:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '8b1e6f0a2c57'
down_revision = '3f2a9c1d7b44'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('accounts', sa.Column('currency', sa.String(length=3), nullable=True))


def downgrade():
    op.drop_column('accounts', 'currency')
