"""projects: the demo application's table

Revision ID: t0001
Revises:
Create Date: 2026-11-28

The same tenant revisions serve every tier; this one is for the dedicated tier's own database.
"""

from alembic import op
import sqlalchemy as sa

revision = "t0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), primary_key=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
    )


def downgrade() -> None:
    op.drop_table("projects")
