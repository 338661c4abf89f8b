"""workers: when each fleet-wide duty last ran (one round per interval across all workers); indexes for retention; cancel requests; progress

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0009'
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
    # POST /v1/operations/{id}/cancel: the worker ends the operation at its next step boundary
    op.add_column('operations', sa.Column('cancel_requested_at', postgresql.TIMESTAMP(timezone=True), nullable=True))
    # what a long operation has done so far (a move's rows and bytes copied), shown by GET /v1/operations/{id}
    op.add_column('operations', sa.Column('progress', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    # retention keeps operations a backup or a fleet migration's tenant row names: looked up by id
    op.create_index('ix_backups_operation_id', 'backups', ['operation_id'])
    op.create_index('ix_migration_run_tenants_operation_id', 'migration_run_tenants', ['operation_id'])


def downgrade() -> None:
    op.drop_column('operations', 'progress')
    op.drop_column('operations', 'cancel_requested_at')
    op.drop_index('ix_migration_run_tenants_operation_id', table_name='migration_run_tenants')
    op.drop_index('ix_backups_operation_id', table_name='backups')
    op.drop_table('duty_rounds')
