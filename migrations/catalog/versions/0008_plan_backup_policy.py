"""backups: a plan's own schedule and retention for its tenants' backups

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # {"schedule": "<5-field cron, UTC>" | "off", "keep_days": N, "keep_last": K}; NULL: the global settings
    op.add_column('plans', sa.Column('backup', postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column('plans', 'backup')
