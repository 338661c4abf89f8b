"""workers: when each fleet-wide duty last ran (one round per interval across all workers)

Revision ID: 0010
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0010'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # one row per duty (the reconciler, retention); claimed by provisioning/rounds.py
    op.create_table('duty_rounds',
    sa.Column('duty', sa.String(length=64), nullable=False),
    sa.Column('last_run_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('duty', name=op.f('pk_duty_rounds'))
    )


def downgrade() -> None:
    op.drop_table('duty_rounds')
