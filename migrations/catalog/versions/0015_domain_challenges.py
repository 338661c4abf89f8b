"""custom domain ownership: pending TXT challenges, and when a routed domain was verified

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A pending domain is a row here, never in tenant_domains: routers read tenant_domains only (and
    # the catalog reader role is granted nothing on this table), so a domain nobody has proved
    # routes nowhere, whatever version of the router reads the catalog. Several tenants may claim
    # the same domain, each with a token of its own; the first whose TXT record is found gets it.
    # The token is published in DNS by design: it is no secret, only what the check compares.
    op.create_table(
        'domain_challenges',
        sa.Column('domain', sa.String(253), nullable=False),
        sa.Column('tenant_id', sa.UUID(), nullable=False),
        sa.Column('token', sa.String(64), nullable=False),
        sa.Column('created_at', sa.TIMESTAMP(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('checked_at', sa.TIMESTAMP(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name='fk_domain_challenges_tenant_id_tenants',
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('tenant_id', 'domain', name='pk_domain_challenges'),
    )
    # NULL: added with DOMAIN_VERIFICATION=off (or before it existed), routed on the admin's word
    op.add_column('tenant_domains', sa.Column('verified_at', sa.TIMESTAMP(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('tenant_domains', 'verified_at')
    op.drop_table('domain_challenges')
