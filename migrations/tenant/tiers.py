"""What tenant migrations use so that the same revisions serve all three tiers.

`create_tenant_table()` makes a plain table on the dedicated and schema tiers; on the shared tier
it adds `tenant_id` (defaulting to the transaction's bound tenant), puts it first in the primary key
(unique and foreign keys must include it too), and enables and forces row-level security with a
policy comparing `tenant_id` with `NULLIF(current_setting('app.tenant_id', true), '')`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import UUID

CURRENT_TENANT = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"


def tier() -> str:
    return context.config.attributes.get("tier", "dedicated")


def is_shared() -> bool:
    return tier() == "shared"


def create_tenant_table(name: str, *columns: sa.Column, primary_key: tuple[str, ...] = ("id",)) -> None:
    if not is_shared():
        op.create_table(name, *columns, sa.PrimaryKeyConstraint(*primary_key))
        return
    op.create_table(
        name,
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False, server_default=sa.text(CURRENT_TENANT)),
        *columns,
        sa.PrimaryKeyConstraint("tenant_id", *primary_key),
    )
    enable_row_level_security(name)


def enable_row_level_security(name: str) -> None:
    op.execute(f'ALTER TABLE "{name}" ENABLE ROW LEVEL SECURITY')
    op.execute(f'ALTER TABLE "{name}" FORCE ROW LEVEL SECURITY')
    op.execute(f'CREATE POLICY tenant_isolation ON "{name}" '
               f"USING (tenant_id = {CURRENT_TENANT}) WITH CHECK (tenant_id = {CURRENT_TENANT})")
