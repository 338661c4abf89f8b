"""For the domain verification tests: a real DNS server per module, and the admin API of the
shared stack with DOMAIN_VERIFICATION=dns pointed at it."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from control_plane.settings import Settings
from tests.conftest import Stack, admin_client, unique_slug
from tests.dnszone import dns_server


def dns_settings(stack: Stack, nameservers: str, **extra: object) -> Settings:
    return msgspec.structs.replace(stack.settings, domain_verification="dns", domain_verification_nameservers=nameservers,
                                   domain_verification_timeout_seconds=2.0, **extra)


@pytest.fixture(scope="module")
def zone():
    with dns_server() as (records, address):
        yield records, address


@pytest.fixture(scope="module")
async def dns_api(stack: Stack, zone):
    async with admin_client(Stack(settings=dns_settings(stack, zone[1]), pg=stack.pg)) as client:
        yield client


def fresh_domain(prefix: str = "shop") -> str:
    return f"{prefix}.{unique_slug('dv')}.example.test"


async def projects_via(tenant_app, domain: str, expect_status: int, timeout: float = 5.0):
    """The demo app's answer through the domain once it has the expected status (announcements
    reach the router at once; the loop only absorbs the delivery)."""
    deadline = time.monotonic() + timeout
    while True:
        response = await tenant_app.get("/api/projects", headers={"Host": domain})
        if response.status_code == expect_status or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.05)
