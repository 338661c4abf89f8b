"""A revision that forgets the helper: on the shared tier every tenant could read this table."""
import sqlalchemy as sa
from alembic import op

revision = "t0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("leaky", sa.Column("id", sa.BigInteger(), primary_key=True), sa.Column("body", sa.Text()))


def downgrade() -> None:
    op.drop_table("leaky")
