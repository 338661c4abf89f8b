"""Every router setting can come from the environment; replicas divide the connection budget."""

from __future__ import annotations

import msgspec
import pytest

from tenant_router.config import RouterConfig

BASE = {"CATALOG_DATABASE_URL": "postgresql://x@127.0.0.1/c", "SECRET_KEY": "k" * 32}


def test_tuning_settings_come_from_the_environment():
    config = RouterConfig.from_env({**BASE, "ROUTER_TENANT_MAX_CONNECTIONS": "9", "ROUTER_ACQUIRE_TIMEOUT_SECONDS": "1.5",
                                    "ROUTER_SHARED_POOL_MAX_CONNECTIONS": "40", "ROUTER_CACHE_TTL_SECONDS": "12",
                                    "ROUTER_CONNECTION_IDLE_SECONDS": "7", "ROUTER_CACHE_PRELOAD_MAX": "100"})
    assert (config.tenant_max_connections, config.acquire_timeout_seconds, config.shared_pool_max_connections) == (9, 1.5, 40)
    assert (config.cache_ttl_seconds, config.connection_idle_seconds, config.cache_preload_max) == (12.0, 7.0, 100)
    assert RouterConfig.from_env(BASE).tenant_max_connections == 5  # unset: the default


def test_replicas_divide_each_servers_budget():
    assert RouterConfig.from_env(BASE).budget_fraction == 1.0
    assert RouterConfig.from_env({**BASE, "ROUTER_REPLICAS": "4"}).budget_fraction == 0.25
    assert RouterConfig.from_env({**BASE, "ROUTER_REPLICAS": "2", "ROUTER_BUDGET_FRACTION": "0.5"}).budget_fraction == 0.25


@pytest.mark.parametrize("env", [{"ROUTER_REPLICAS": "0"}, {"ROUTER_REPLICAS": "two"}, {"ROUTER_BUDGET_FRACTION": "1.5"}])
def test_bad_budget_settings_are_refused(env):
    with pytest.raises(ValueError):
        RouterConfig.from_env({**BASE, **env})


def test_a_bad_number_is_refused():
    with pytest.raises(msgspec.ValidationError):
        RouterConfig.from_env({**BASE, "ROUTER_TENANT_MAX_CONNECTIONS": "lots"})


def test_an_error_names_the_environment_variable_not_the_field():
    with pytest.raises(msgspec.ValidationError) as missing:
        RouterConfig.from_env({"SECRET_KEY": "k" * 32})
    assert "CATALOG_DATABASE_URL" in str(missing.value) and "catalog_dsn" not in str(missing.value)
    with pytest.raises(msgspec.ValidationError) as bad:
        RouterConfig.from_env({**BASE, "ROUTER_TENANT_MAX_CONNECTIONS": "lots"})
    assert "ROUTER_TENANT_MAX_CONNECTIONS" in str(bad.value) and "$." not in str(bad.value)
