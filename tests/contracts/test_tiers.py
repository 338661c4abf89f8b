"""Each tier's layout gives the names, login role, pool key and binding both planes rely on."""

from __future__ import annotations

import hashlib
import hmac
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import guard, identifiers
from contracts.identifiers import InvalidIdentifier
from contracts.placement import Placement, PoolKey, TenantStatus, Tier
from contracts.tiers import LAYOUTS, IncompletePlacement, layout_of

KEY = guard.binding_key("test-secret-key-" + "x" * 32)


def placement(tier: Tier, tenant_id: uuid.UUID, version: int = 7, **names) -> Placement:
    database, role, schema = layout_of(tier).names(tenant_id)
    values = {"database": database, "role": role, "schema": schema, **names}
    return Placement(tenant_id=tenant_id, slug="acme", status=TenantStatus.active, tier=tier,
                     server_id=uuid.uuid4(), host="db.internal", port=5433, version=version,
                     sslmode="require", **values)


def test_every_tier_has_one_layout():
    assert set(LAYOUTS) == set(Tier)
    assert all(layout.tier is tier for tier, layout in LAYOUTS.items())
    assert layout_of("schema") is LAYOUTS[Tier.schema]
    with pytest.raises(InvalidIdentifier):
        layout_of("sharded")


@given(st.uuids())
def test_names_per_tier(tid: uuid.UUID):
    assert layout_of("dedicated").names(tid) == (identifiers.tenant_database(tid), identifiers.tenant_role(tid), None)
    assert layout_of("schema").names(tid) == (identifiers.SCHEMAS_DATABASE, identifiers.tenant_role(tid),
                                              identifiers.tenant_schema(tid))
    assert layout_of("shared").names(tid) == (identifiers.SHARED_DATABASE, identifiers.SHARED_APP_ROLE, None)
    assert layout_of("dedicated").names(tid).database == f"tp_db_{tid.hex}"
    assert layout_of("schema").names(tid).schema == f"tp_s_{tid.hex}"


def test_a_dedicated_tenant_logs_in_as_its_role_to_a_pool_of_its_own_and_needs_no_binding():
    tid = uuid.uuid4()
    p = placement(Tier.dedicated, tid)
    assert p.login_role == f"tp_role_{tid.hex}"
    assert p.pool_key == PoolKey(host="db.internal", port=5433, database=f"tp_db_{tid.hex}",
                                 role=f"tp_role_{tid.hex}", version=7, shared=False, sslmode="require")
    assert LAYOUTS[Tier.dedicated].binding(p, KEY, 4242, 1_700_000_000_000) is None


def test_a_schema_tenant_goes_through_the_gateway_and_binds_role_and_search_path():
    tid = uuid.uuid4()
    p = placement(Tier.schema, tid)
    assert p.login_role == "tp_gateway"
    assert p.pool_key == PoolKey(host="db.internal", port=5433, database="tp_schemas", role="tp_gateway",
                                 version=0, shared=True, sslmode="require")
    assert LAYOUTS[Tier.schema].binding(p, KEY, 4242, 1_700_000_000_000) == (
        f'SET LOCAL ROLE "tp_role_{tid.hex}"; SET LOCAL search_path = "tp_s_{tid.hex}"; '
        f"SELECT tp_guard.bind('{tid}'::uuid, 1700000000000, '{guard.ticket(KEY, tid, 4242, 1_700_000_000_000)}')")
    with pytest.raises(IncompletePlacement, match="no schema"):
        LAYOUTS[Tier.schema].binding(placement(Tier.schema, tid, schema=None), KEY, 1, 1)
    with pytest.raises(InvalidIdentifier):
        LAYOUTS[Tier.schema].binding(placement(Tier.schema, tid, role='x"; DROP TABLE t; --'), KEY, 1, 1)


def test_a_shared_tenant_uses_the_app_role_and_binds_its_id():
    tid = uuid.uuid4()
    p = placement(Tier.shared, tid)
    assert p.login_role == "tp_shared_app"
    assert p.pool_key == PoolKey(host="db.internal", port=5433, database="tp_shared", role="tp_shared_app",
                                 version=0, shared=True, sslmode="require")
    mac = guard.ticket(KEY, tid, 4242, 1_700_000_000_000)
    assert LAYOUTS[Tier.shared].binding(p, KEY, 4242, 1_700_000_000_000) == (
        f"SELECT tp_guard.bind('{tid}'::uuid, 1700000000000, '{mac}')")


def test_a_ticket_is_an_hmac_of_the_tenant_the_backend_and_the_time():
    tid = uuid.uuid4()
    expected = hmac.new(KEY, f"bind|{tid}|4242|17".encode(), hashlib.sha256).hexdigest()
    assert guard.ticket(KEY, tid, 4242, 17) == expected
    assert guard.ticket(KEY, tid, 4243, 17) != expected and guard.ticket(KEY, tid, 4242, 18) != expected
    assert guard.ticket(guard.binding_key("another deployment's key" * 2), tid, 4242, 17) != expected
    ikey, okey = guard.hmac_pads(KEY)  # what the server stores: HMAC as two sha256() calls
    inner = hashlib.sha256(ikey + f"bind|{tid}|4242|17".encode()).digest()
    assert hashlib.sha256(okey + inner).hexdigest() == expected


def test_pools_of_shared_databases_outlive_placement_versions():
    tid = uuid.uuid4()
    for tier in (Tier.schema, Tier.shared):
        assert placement(tier, tid, version=1).pool_key == placement(tier, tid, version=2).pool_key
    assert placement(Tier.dedicated, tid, version=1).pool_key != placement(Tier.dedicated, tid, version=2).pool_key


def test_which_tiers_give_the_tenant_a_role_and_log_in_as_it():
    assert {t for t, layout in LAYOUTS.items() if layout.has_tenant_role} == {Tier.dedicated, Tier.schema}
    assert {t for t, layout in LAYOUTS.items() if layout.logs_in_as_tenant} == {Tier.dedicated}
