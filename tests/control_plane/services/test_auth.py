"""Admin keys: a key found valid is remembered briefly; a revoked one stops working once that
window is over; a wrong token never becomes valid by being remembered (the throttle and the
brief memory of wrong tokens: test_auth_throttle.py)."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from sqlalchemy import func, update

from control_plane import errors
from control_plane.catalog.db import create_engine, sessionmaker
from control_plane.catalog.models import AdminApiKey
from control_plane.services.auth import AdminAuth


@pytest.fixture
async def sessions(stack):
    engine = create_engine(stack.catalog_dsn, pool_size=1)
    try:
        yield sessionmaker(engine)
    finally:
        await engine.dispose()


async def _key(sessions, auth: AdminAuth) -> tuple[str, str]:
    name, token = f"k{secrets.token_hex(6)}", "tpa_" + secrets.token_urlsafe(24)
    await auth.ensure_bootstrap_token(token, name=name)
    return name, token


async def _revoke(sessions, name: str) -> None:
    async with sessions() as session, session.begin():
        await session.execute(update(AdminApiKey).where(AdminApiKey.name == name).values(revoked_at=func.now()))


async def test_a_revoked_key_stops_working_once_the_window_is_over(sessions):
    auth = AdminAuth(sessions, remember_seconds=0.3)
    name, token = await _key(sessions, auth)
    assert await auth.authenticate(f"Bearer {token}") == f"api-key:{name}"
    await _revoke(sessions, name)
    assert await auth.authenticate(f"Bearer {token}") == f"api-key:{name}"  # remembered
    await asyncio.sleep(0.35)
    with pytest.raises(errors.Unauthorized):
        await auth.authenticate(f"Bearer {token}")
    with pytest.raises(errors.Unauthorized):  # and the refusal is not remembered as anything else
        await auth.authenticate(f"Bearer {token}")


async def test_without_a_window_revocation_is_immediate(sessions):
    auth = AdminAuth(sessions, remember_seconds=0)
    name, token = await _key(sessions, auth)
    assert await auth.authenticate(f"Bearer {token}") == f"api-key:{name}"
    await _revoke(sessions, name)
    with pytest.raises(errors.Unauthorized):
        await auth.authenticate(f"Bearer {token}")


async def test_a_wrong_token_is_refused_and_a_new_key_accepted_at_once(sessions):
    auth = AdminAuth(sessions, remember_seconds=60)
    with pytest.raises(errors.Unauthorized):
        await auth.authenticate("Bearer tpa_not-a-key")
    name, token = await _key(sessions, auth)  # a key that becomes valid is accepted at once
    assert await auth.authenticate(f"Bearer {token}") == f"api-key:{name}"
    for header in (None, "", "Basic abc", "Bearer ", "Bearer " + "x" * 600):
        with pytest.raises(errors.Unauthorized):
            await auth.authenticate(header)


async def test_rotating_a_key_in_this_process_forgets_the_old_token(sessions):
    auth = AdminAuth(sessions, remember_seconds=60)
    name, old = await _key(sessions, auth)
    assert await auth.authenticate(f"Bearer {old}") == f"api-key:{name}"
    new = "tpa_" + secrets.token_urlsafe(24)
    await auth.ensure_bootstrap_token(new, name=name)
    with pytest.raises(errors.Unauthorized):
        await auth.authenticate(f"Bearer {old}")
    assert await auth.authenticate(f"Bearer {new}") == f"api-key:{name}"
