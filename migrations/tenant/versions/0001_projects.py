"""projects: the demo application's table

Revision ID: t0001
Revises:
Create Date: 2026-11-28

The same tenant revisions serve every tier (see migrations/tenant/tiers.py).
"""

import sqlalchemy as sa

from migrations.tenant.tiers import create_tenant_table

revision = "t0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_tenant_table(
        "projects",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True)),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
    )


def downgrade() -> None:
    from alembic import op

    op.drop_table("projects")
