"""admin keys with scopes, an expiry and who made them; indexes for the newest-first admin lists

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_TS = postgresql.TIMESTAMP(timezone=True)


def upgrade() -> None:
    # keys made before scopes existed (the bootstrap token) keep full rights
    op.add_column('admin_api_keys', sa.Column('scopes', postgresql.ARRAY(sa.String(length=32)),
                                              server_default=sa.text("'{admin}'"), nullable=False))
    op.add_column('admin_api_keys', sa.Column('expires_at', _TS, nullable=True))
    op.add_column('admin_api_keys', sa.Column('created_by', sa.String(length=100), nullable=True))
    # GET /v1/operations and GET /v1/audit page newest first by (time, id)
    op.create_index('ix_operations_created_at', 'operations', ['created_at', 'id'])
    op.create_index('ix_audit_log_at', 'audit_log', ['at', 'id'])


def downgrade() -> None:
    op.drop_index('ix_audit_log_at', table_name='audit_log')
    op.drop_index('ix_operations_created_at', table_name='operations')
    op.drop_column('admin_api_keys', 'created_by')
    op.drop_column('admin_api_keys', 'expires_at')
    op.drop_column('admin_api_keys', 'scopes')
