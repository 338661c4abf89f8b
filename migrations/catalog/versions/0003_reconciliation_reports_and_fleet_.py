"""reconciliation reports and fleet migration runs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 11:51:17.453151
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('migration_runs',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('target_revision', sa.String(length=64), nullable=False),
    sa.Column('canary_size', sa.Integer(), nullable=False),
    sa.Column('wave_size', sa.Integer(), nullable=False),
    sa.Column('halt_on_error', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('state', sa.String(length=16), server_default='running', nullable=False),
    sa.Column('current_wave', sa.Integer(), server_default='0', nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_migration_runs'))
    )
    op.create_table('reconciliation_reports',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('started_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('report', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reconciliation_reports'))
    )
    op.create_table('migration_run_tenants',
    sa.Column('run_id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('wave', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('operation_id', sa.UUID(), nullable=True),
    sa.Column('from_revision', sa.String(length=64), nullable=True),
    sa.Column('to_revision', sa.String(length=64), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('finished_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['migration_runs.id'], name=op.f('fk_migration_run_tenants_run_id_migration_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_migration_run_tenants_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'tenant_id', name=op.f('pk_migration_run_tenants'))
    )
    op.create_index('ix_migration_run_tenants_wave', 'migration_run_tenants', ['run_id', 'wave'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_migration_run_tenants_wave', table_name='migration_run_tenants')
    op.drop_table('migration_run_tenants')
    op.drop_table('reconciliation_reports')
    op.drop_table('migration_runs')
