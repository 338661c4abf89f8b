"""per-tenant KMS keys: one row per tenant whose data keys are wrapped under a KMS key of its own

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The row is written before CreateKey (key_id NULL: "a key may exist"), the key id right after
    # it, before the alias: a crash anywhere leaves a row saying where to look, so a rerun adopts the
    # key it made instead of leaving an orphan (provisioning/backups/tenant_kms.py). Holds the tenant
    # id and KMS ids and dates only; it outlives an erasure as the record of the scheduled deletion.
    op.create_table(
        'tenant_kms_keys',
        sa.Column('tenant_id', sa.UUID(), nullable=False),
        sa.Column('key_id', sa.Text(), nullable=True),
        sa.Column('alias', sa.Text(), nullable=False),
        sa.Column('created_at', sa.TIMESTAMP(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('aliased_at', sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column('deletion_scheduled_at', sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column('deletion_date', sa.TIMESTAMP(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name='fk_tenant_kms_keys_tenant_id_tenants',
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('tenant_id', name='pk_tenant_kms_keys'),
    )


def downgrade() -> None:
    op.drop_table('tenant_kms_keys')
