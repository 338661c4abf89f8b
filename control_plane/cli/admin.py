"""Direct catalog access that must work before the API runs: registering a server on a catalog
engine of its own. `tenantctl dev` registers the first server with it, and `register-server
--replace` (no API route updates a server) uses it; every other admin command goes through the API."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from control_plane.schemas import ServerOut
    from control_plane.settings import Settings


async def register(settings: Settings, name: str, dsn: str, capacity_databases: int,
                   capacity_connections: int, replace: bool) -> ServerOut:
    """Register a server on a catalog engine of its own (one connection, disposed after)."""
    from control_plane.catalog.db import create_engine, sessionmaker
    from control_plane.schemas import RegisterServer
    from control_plane.services.servers import ServerService
    from provisioning.sealing import SecretBox

    engine = create_engine(settings.catalog_database_url, pool_size=1)
    try:
        service = ServerService(sessionmaker(engine), SecretBox(settings.secret_key))
        body = RegisterServer(name=name, dsn=dsn, capacity_databases=capacity_databases,
                              capacity_connections=capacity_connections)
        return await service.register("cli", body, replace=replace)
    finally:
        await engine.dispose()
