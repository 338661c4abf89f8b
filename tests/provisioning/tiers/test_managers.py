"""Each tier manager: its layout, and how a move reads and writes the tenant's tables there."""

from __future__ import annotations

import uuid

import pytest

from contracts.placement import Tier
from contracts.tiers import LAYOUTS
from migrations.tree import DEMO_TREE
from provisioning.context import StepContext
from provisioning.sealing import SecretBox
from provisioning.tiers import TIERS, tier_manager
from tests.conftest import SECRET_KEY

TENANT = uuid.UUID("12345678-1234-5678-1234-567812345678")


def side(tier: str) -> StepContext:
    async def announce(_: uuid.UUID) -> None:
        return None

    return StepContext(operation_id=uuid.uuid4(), tenant_id=TENANT, params={}, catalog=None,  # type: ignore[arg-type]
                       secret_key=SECRET_KEY, box=SecretBox(SECRET_KEY), announce=announce, tier=tier,
                       tenant_tree=DEMO_TREE)


def test_every_tier_has_a_manager_with_its_layout():
    assert set(TIERS) == set(Tier)
    for tier, manager in TIERS.items():
        assert manager.layout is LAYOUTS[tier]
        assert tier_manager(tier.value) is manager
        for steps in (manager.create, manager.delete, manager.migrate):
            assert steps and all(callable(step) for step in steps)
        for method in ("prepare_target", "drop_copy", "adopt_role", "tables"):  # the rest of TierManager
            assert callable(getattr(manager, method)), method
    with pytest.raises(ValueError):
        tier_manager("sharded")


def test_a_dedicated_tenants_tables_are_the_public_schema_of_its_database():
    tables = tier_manager("dedicated").tables(side("dedicated"))
    assert (tables.database, tables.schema, tables.row_filter) == (f"tp_db_{TENANT.hex}", "public", "")
    assert tables.qualified("projects") == '"public"."projects"'
    assert tables.read_column("tenant_id") == f"'{TENANT}'::uuid"  # the target tags rows, this copy does not
    assert tables.read_column("name") == '"name"'


def test_a_schema_tenants_tables_are_its_schema_in_the_schemas_database():
    tables = tier_manager("schema").tables(side("schema"))
    assert (tables.database, tables.schema, tables.row_filter) == ("tp_schemas", f"tp_s_{TENANT.hex}", "")
    assert tables.qualified("projects") == f'"tp_s_{TENANT.hex}"."projects"'
    assert tables.read_column("tenant_id") == f"'{TENANT}'::uuid"


def test_a_shared_tenants_tables_are_its_rows_in_the_shared_database():
    tables = tier_manager("shared").tables(side("shared"))
    assert (tables.database, tables.schema) == ("tp_shared", "public")
    assert tables.row_filter == f" WHERE tenant_id = '{TENANT}'"
    assert tables.read_column("tenant_id") == '"tenant_id"'
