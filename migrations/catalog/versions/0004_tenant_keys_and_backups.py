"""tenant keys and backups

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 17:40:00

`tenant_keys` holds each tenant's backup data keys, only ever wrapped (by KMS or by a local master
key), one row per key version; destroying a tenant's keys erases `wrapped_key` and stamps
`destroyed_at`, which makes every backup encrypted under them unreadable (crypto-shredding).
`backups` is one row per backup (issue #10): what was dumped, where the object is, its digest and
the manifest recorded at dump time, and the last restore drill.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tenant_keys',
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('wrapped_key', sa.LargeBinary(), nullable=True),
    sa.Column('wrapper_kind', sa.String(length=16), nullable=False),
    sa.Column('wrapper_key_id', sa.Text(), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('wrapped_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('destroyed_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_tenant_keys_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', 'version', name=op.f('pk_tenant_keys'))
    )
    op.create_table('backups',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('tier', sa.String(length=16), nullable=False),
    sa.Column('revision', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=16), server_default='queued', nullable=False),
    sa.Column('trigger', sa.String(length=16), server_default='manual', nullable=False),
    sa.Column('label', sa.String(length=200), nullable=True),
    sa.Column('store', sa.String(length=16), nullable=False),
    sa.Column('object_key', sa.Text(), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('digest', sa.String(length=64), nullable=True),
    sa.Column('key_version', sa.Integer(), nullable=True),
    sa.Column('manifest', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('operation_id', sa.UUID(), nullable=True),
    sa.Column('schedule_slot', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('verified_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('drill_result', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_backups_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backups'))
    )
    op.create_index('ix_backups_tenant_created', 'backups', ['tenant_id', 'created_at'], unique=False)
    op.create_index('uq_backups_schedule_slot', 'backups', ['tenant_id', 'schedule_slot'], unique=True,
                    postgresql_where=sa.text('schedule_slot IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('uq_backups_schedule_slot', table_name='backups')
    op.drop_index('ix_backups_tenant_created', table_name='backups')
    op.drop_table('backups')
    op.drop_table('tenant_keys')
