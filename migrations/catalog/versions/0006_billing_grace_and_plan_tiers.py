"""billing: the grace a past-due tenant keeps, plans that decide a tier, a tier move billing still owes

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_TS = postgresql.TIMESTAMP(timezone=True)
_TIER = "IN ('dedicated', 'schema', 'shared')"


def upgrade() -> None:
    # routers admit a past-due tenant until then (NULL while past due: no grace, 402 at once)
    op.add_column('tenants', sa.Column('billing_grace_until', _TS, nullable=True))
    # the tier a plan change asked for while another operation was open (a duty queues it later)
    op.add_column('tenants', sa.Column('pending_tier', sa.String(length=16), nullable=True))
    op.add_column('plans', sa.Column('tier', sa.String(length=16), nullable=True))
    op.add_column('plans', sa.Column('tier_on_leave', sa.String(length=16), nullable=True))
    op.create_check_constraint('ck_plans_tier', 'plans', f"tier {_TIER}")
    op.create_check_constraint('ck_plans_tier_on_leave', 'plans', f"tier_on_leave {_TIER}")
    op.create_index('ix_tenants_past_due', 'tenants', ['past_due_since'],
                    postgresql_where=sa.text("billing_status = 'past_due'"))
    op.create_index('ix_tenants_pending_tier', 'tenants', ['id'], postgresql_where=sa.text('pending_tier IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('ix_tenants_pending_tier', table_name='tenants', postgresql_where=sa.text('pending_tier IS NOT NULL'))
    op.drop_index('ix_tenants_past_due', table_name='tenants', postgresql_where=sa.text("billing_status = 'past_due'"))
    op.drop_constraint('ck_plans_tier_on_leave', 'plans', type_='check')
    op.drop_constraint('ck_plans_tier', 'plans', type_='check')
    op.drop_column('plans', 'tier_on_leave')
    op.drop_column('plans', 'tier')
    op.drop_column('tenants', 'pending_tier')
    op.drop_column('tenants', 'billing_grace_until')
