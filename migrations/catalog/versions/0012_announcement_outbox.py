"""announcement outbox: routing announcements Redis did not take, kept until a worker delivers them

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a row lives from the change it announces (or the failed publish) to its delivery
    # (provisioning/announcement_outbox.py); tenant_id NULL stands for "every tenant" (the "*" broadcast). No foreign key: the
    # announcement of a deleted tenant must still be delivered.
    op.create_table(
        'announcement_outbox',
        sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column('tenant_id', sa.UUID(), nullable=True),
        sa.Column('aliases', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"),
                  nullable=False),
        sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'),
                  nullable=False),
        # when the workers may publish it: at once for what a send failed to take; a grace later for
        # what a change wrote in its own transaction (its process publishes and deletes it first)
        sa.Column('due_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'),
                  nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_announcement_outbox')),
    )


def downgrade() -> None:
    op.drop_table('announcement_outbox')
