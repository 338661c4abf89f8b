"""An application's own tenant revision: point TENANT_MIGRATIONS at this folder (in the API's,
the workers' and tenantctl's environment) and every tenant database, schema and shared table is
made from it: templates, spares, creates, fleet migrations, moves and restores.

    export TENANT_MIGRATIONS=$PWD/examples/tenant_migrations

The folder is checked when a process starts (an error names the variable), and the API and every
worker compare it with the tree the catalog records: a process given another tree refuses to start.

`create_tenant_table()` is the helper that makes one revision serve all three tiers: a plain table
on the dedicated and schema tiers; on the shared tier it adds `tenant_id` (first in the primary
key, defaulting to the transaction's tenant) and forces row-level security. A revision that makes a
shared-tier table any other way is refused at migration time and rolled back.
"""
import sqlalchemy as sa

from migrations.tenant.tiers import create_tenant_table

revision = "t0001"  # tNNNN, increasing: routers compare revisions as text (TENANT_MIN_REVISION)
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_tenant_table(
        "notes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True)),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
    )


def downgrade() -> None:
    from alembic import op

    op.drop_table("notes")
