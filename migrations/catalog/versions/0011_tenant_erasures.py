"""erasure: one row per erased tenant, the suppression list and the erasure report

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # holds only the tenant id, dates and what was removed where (no name, slug or domain): it is
    # the suppression list restore and the reconciler check, and the report GET .../erasure returns
    op.create_table(
        'tenant_erasures',
        sa.Column('tenant_id', sa.UUID(), nullable=False),
        sa.Column('requested_at', sa.TIMESTAMP(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('completed_at', sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column('operation_id', sa.UUID(), nullable=True),
        sa.Column('places', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.PrimaryKeyConstraint('tenant_id', name='pk_tenant_erasures'),
    )


def downgrade() -> None:
    op.drop_table('tenant_erasures')
