"""lifecycle events: given up (`abandoned_at`) after EVENTS_GIVE_UP_AFTER_HOURS of delivery counted
from `pending_since` (an admin's redelivery starts it again), and pruned after EVENTS_KEEP_DAYS

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

_TS = postgresql.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.add_column('tenant_events', sa.Column('abandoned_at', _TS, nullable=True))
    op.add_column('tenant_events', sa.Column('pending_since', _TS, server_default=sa.text('now()'), nullable=False))
    # events written before this revision wait from when they happened, not from the upgrade: an
    # old backlog is given up at the first delivery round instead of being sent days late
    op.execute("UPDATE tenant_events SET pending_since = occurred_at")
    # delivery claims from this index: a given-up event is no longer due
    op.drop_index('ix_tenant_events_pending', table_name='tenant_events')
    op.create_index('ix_tenant_events_pending', 'tenant_events', ['next_attempt_at'],
                    postgresql_where=sa.text('delivered_at IS NULL AND abandoned_at IS NULL'))
    op.create_index('ix_tenant_events_abandoned', 'tenant_events', ['id'],
                    postgresql_where=sa.text('abandoned_at IS NOT NULL'))
    # retention deletes the oldest first
    op.create_index('ix_tenant_events_occurred_at', 'tenant_events', ['occurred_at', 'id'])


def downgrade() -> None:
    op.drop_index('ix_tenant_events_occurred_at', table_name='tenant_events')
    op.drop_index('ix_tenant_events_abandoned', table_name='tenant_events')
    op.drop_index('ix_tenant_events_pending', table_name='tenant_events')
    op.create_index('ix_tenant_events_pending', 'tenant_events', ['next_attempt_at'],
                    postgresql_where=sa.text('delivered_at IS NULL'))
    op.drop_column('tenant_events', 'pending_since')
    op.drop_column('tenant_events', 'abandoned_at')
