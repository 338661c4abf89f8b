"""An application's own tenant revision (TENANT_MIGRATIONS), through the helper."""
import sqlalchemy as sa

from migrations.tenant.tiers import create_tenant_table

revision = "t0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_tenant_table("notes", sa.Column("id", sa.BigInteger(), sa.Identity(always=True)),
                        sa.Column("body", sa.Text(), nullable=False))


def downgrade() -> None:
    from alembic import op
    op.drop_table("notes")
