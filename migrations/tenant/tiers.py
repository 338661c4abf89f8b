"""What tenant migrations use so that the same revisions serve all three tiers.

`create_tenant_table()` makes a plain table on the dedicated and schema tiers; on the shared tier
it adds `tenant_id` (defaulting to the transaction's bound tenant), puts it first in the primary key
(unique and foreign keys must include it too), and enables and forces row-level security with a
policy comparing `tenant_id` with the transaction's verified binding (contracts/guard.py). On the
schema tier a table is enabled for row-level security with a policy that admits only
transactions bound to the schema's tenant.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import UUID

from contracts import guard, identifiers

CURRENT_TENANT = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"  # a default only: see guard.py


def tier() -> str:
    return context.config.attributes.get("tier", "dedicated")


def is_shared() -> bool:
    return tier() == "shared"


def create_tenant_table(name: str, *columns: sa.Column, primary_key: tuple[str, ...] = ("id",)) -> None:
    if not is_shared():
        op.create_table(name, *columns, sa.PrimaryKeyConstraint(*primary_key))
        if tier() == "schema":
            protect_schema_table(name)
        return
    op.create_table(
        name,
        sa.Column("tenant_id", UUID(as_uuid=True), nullable=False, server_default=sa.text(CURRENT_TENANT)),
        *columns,
        sa.PrimaryKeyConstraint("tenant_id", *primary_key),
    )
    enable_row_level_security(name)


def ensure_guard() -> None:
    """The verified binding's functions (contracts/guard.py), which the policies call: the
    provisioner installs them, with the key, before it migrates; a database migrated on its own
    gets them here, without a key (no binding verifies until the provisioner sets one)."""
    bind = op.get_bind()
    if bind.exec_driver_sql(f"SELECT to_regprocedure('{guard.GUARD_SCHEMA}.bound_tenant()')").scalar() is None:
        for statement in guard.INSTALL_STATEMENTS:
            bind.exec_driver_sql(statement)


def enable_row_level_security(name: str) -> None:
    ensure_guard()
    policy = f"tenant_id = {guard.BOUND_TENANT}"
    op.execute(f'ALTER TABLE "{name}" ENABLE ROW LEVEL SECURITY')
    op.execute(f'ALTER TABLE "{name}" FORCE ROW LEVEL SECURITY')
    op.execute(f'CREATE POLICY tenant_isolation ON "{name}" USING ({policy}) WITH CHECK ({policy})')


def protect_schema_table(name: str) -> None:
    """Schema tier: the table answers only transactions bound to the schema's tenant (the gateway
    can SET ROLE to any tenant role). Enabled, not forced: the owner (the admin) works below it."""
    schema = context.config.attributes["schema"]
    tenant = uuid.UUID(hex=schema[len(identifiers.PREFIX) + 2:])
    ensure_guard()
    policy = f"{guard.BOUND_TENANT} = '{tenant}'::uuid"
    op.execute(f'ALTER TABLE "{name}" ENABLE ROW LEVEL SECURITY')
    op.execute(f'CREATE POLICY tenant_isolation ON "{name}" USING ({policy}) WITH CHECK ({policy})')
