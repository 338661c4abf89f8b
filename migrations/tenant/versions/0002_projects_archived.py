"""projects.archived: an additive change (a column with a default)

Revision ID: t0002
Revises: t0001
Create Date: 2026-11-28

Tenant revision ids are `tNNNN`, increasing along the chain: routers compare them as text to
refuse tenants below a minimum revision (tests check the convention).
"""

import sqlalchemy as sa
from alembic import op

revision = "t0002"
down_revision = "t0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("projects", sa.Column("archived", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    op.drop_column("projects", "archived")
