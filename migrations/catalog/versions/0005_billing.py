"""billing: Stripe events, per-object order, idempotency keys, dunning outbox, tenant billing columns

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_TS = postgresql.TIMESTAMP(timezone=True)
_JSON = postgresql.JSONB(astext_type=sa.Text())


def upgrade() -> None:
    op.add_column('tenants', sa.Column('stripe_customer_id', sa.String(length=255), nullable=True))
    op.add_column('tenants', sa.Column('stripe_subscription_id', sa.String(length=255), nullable=True))
    op.add_column('tenants', sa.Column('paid_until', _TS, nullable=True))
    op.add_column('tenants', sa.Column('past_due_since', _TS, nullable=True))
    # one tenant per Stripe customer: an event for a customer names at most one tenant
    op.create_index('uq_tenants_stripe_customer_id', 'tenants', ['stripe_customer_id'], unique=True,
                    postgresql_where=sa.text('stripe_customer_id IS NOT NULL'))
    op.add_column('plans', sa.Column('stripe_price_ids', postgresql.ARRAY(sa.String(length=255)),
                                     server_default=sa.text("'{}'"), nullable=False))

    op.create_table('billing_events',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=100), nullable=False),
    sa.Column('created', _TS, nullable=False),
    sa.Column('received_at', _TS, server_default=sa.text('now()'), nullable=False),
    sa.Column('deliveries', sa.Integer(), server_default='1', nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('effect', _JSON, server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('applied_at', _TS, nullable=True),
    sa.Column('payload', _JSON, nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_events'))
    )
    op.create_index('ix_billing_events_state_received', 'billing_events', ['state', 'received_at'])
    op.create_index('ix_billing_events_tenant_id', 'billing_events', ['tenant_id'])

    op.create_table('billing_objects',
    sa.Column('object_id', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('last_event_created', _TS, nullable=False),
    sa.Column('last_event_id', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('price_id', sa.String(length=255), nullable=True),
    sa.Column('period_end', _TS, nullable=True),
    sa.Column('failed_at', _TS, nullable=True),
    sa.Column('terminal', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_billing_objects_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('object_id', name=op.f('pk_billing_objects'))
    )
    op.create_index('ix_billing_objects_tenant_kind', 'billing_objects', ['tenant_id', 'kind'])

    op.create_table('billing_idempotency_keys',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=255), nullable=False),
    sa.Column('created_at', _TS, server_default=sa.text('now()'), nullable=False),
    sa.Column('completed_at', _TS, nullable=True),
    sa.Column('result_id', sa.String(length=255), nullable=True),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_billing_idempotency_keys'))
    )
    op.create_index('uq_billing_idempotency_keys_open_purpose', 'billing_idempotency_keys', ['purpose'],
                    unique=True, postgresql_where=sa.text('completed_at IS NULL'))

    op.create_table('dunning_outbox',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('event_id', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('payload', _JSON, server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', _TS, server_default=sa.text('now()'), nullable=False),
    sa.Column('next_attempt_at', _TS, server_default=sa.text('now()'), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('delivered_at', _TS, nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_dunning_outbox_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dunning_outbox')),
    sa.UniqueConstraint('event_id', name=op.f('uq_dunning_outbox_event_id'))
    )
    op.create_index('ix_dunning_outbox_pending', 'dunning_outbox', ['next_attempt_at'],
                    postgresql_where=sa.text('delivered_at IS NULL'))

    op.create_table('billing_sync_checkpoints',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('last_created', _TS, nullable=False),
    sa.Column('last_event_id', sa.String(length=255), nullable=True),
    sa.Column('updated_at', _TS, server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_billing_sync_checkpoints'))
    )


def downgrade() -> None:
    op.drop_table('billing_sync_checkpoints')
    op.drop_index('ix_dunning_outbox_pending', table_name='dunning_outbox', postgresql_where=sa.text('delivered_at IS NULL'))
    op.drop_table('dunning_outbox')
    op.drop_index('uq_billing_idempotency_keys_open_purpose', table_name='billing_idempotency_keys',
                  postgresql_where=sa.text('completed_at IS NULL'))
    op.drop_table('billing_idempotency_keys')
    op.drop_index('ix_billing_objects_tenant_kind', table_name='billing_objects')
    op.drop_table('billing_objects')
    op.drop_index('ix_billing_events_tenant_id', table_name='billing_events')
    op.drop_index('ix_billing_events_state_received', table_name='billing_events')
    op.drop_table('billing_events')
    op.drop_column('plans', 'stripe_price_ids')
    op.drop_index('uq_tenants_stripe_customer_id', table_name='tenants', postgresql_where=sa.text('stripe_customer_id IS NOT NULL'))
    op.drop_column('tenants', 'past_due_since')
    op.drop_column('tenants', 'paid_until')
    op.drop_column('tenants', 'stripe_subscription_id')
    op.drop_column('tenants', 'stripe_customer_id')
