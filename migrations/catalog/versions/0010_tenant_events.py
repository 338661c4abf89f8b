"""lifecycle events: one row per tenant created, moved, restored, suspended, resumed or deleted, written
in the transaction of the change; delivered to EVENTS_WEBHOOK_URL and listed by GET /v1/events

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

_TS = postgresql.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        'tenant_events',
        sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column('type', sa.String(length=32), nullable=False),
        # no foreign key: the log outlives the tenant row (an erasure removes its events itself)
        sa.Column('tenant_id', sa.UUID(), nullable=False),
        sa.Column('operation_id', sa.UUID(), nullable=False),
        sa.Column('occurred_at', _TS, server_default=sa.text('now()'), nullable=False),
        sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.Column('next_attempt_at', _TS, server_default=sa.text('now()'), nullable=False),
        sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('delivered_at', _TS, nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_tenant_events')),
        # one event per operation, whatever reruns the statement that ends it
        sa.UniqueConstraint('operation_id', name=op.f('uq_tenant_events_operation_id')),
    )
    # the writing transaction (SQLAlchemy has no xid8 type): a reader lists an event only once every
    # transaction that could still add an earlier id has ended (provisioning/events.py)
    op.execute("ALTER TABLE tenant_events ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id()")
    op.create_index('ix_tenant_events_tenant', 'tenant_events', ['tenant_id', 'id'])
    op.create_index('ix_tenant_events_type', 'tenant_events', ['type', 'id'])
    op.create_index('ix_tenant_events_pending', 'tenant_events', ['next_attempt_at'],
                    postgresql_where=sa.text('delivered_at IS NULL'))


def downgrade() -> None:
    op.drop_table('tenant_events')
