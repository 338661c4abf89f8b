"""Backups: take one, list a tenant's, read one, restore a tenant from one, rotate, rewrap or destroy its keys."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import Body, JSONBody, Parameter

from control_plane.api.controllers.params import KeyParam, actor
from control_plane.schemas import (
    BackupAccepted,
    BackupList,
    BackupOut,
    CreateBackup,
    DestroyKeys,
    KeysDestroyed,
    KeysRewrapped,
    KeysRotated,
    RestoreAccepted,
    RestoreTenant,
)
from control_plane.services.backups import BackupService


class TenantBackupController(Controller):
    path = "/v1/tenants"
    opt = {"area": "tenants"}  # the scopes it needs: control_plane/scopes.py
    tags = ["backups"]

    @post("/{key:str}/backups", status_code=202, summary="Back the tenant up (asynchronously)")
    async def create(self, request: Request, key: KeyParam, backups: NamedDependency[BackupService],
                     data: Annotated[CreateBackup | None, Body()] = None) -> BackupAccepted:
        return await backups.create(actor(request), key, data or CreateBackup())

    @get("/{key:str}/backups", summary="The tenant's backups, newest first")
    async def list_backups(self, key: KeyParam, backups: NamedDependency[BackupService]) -> BackupList:
        return await backups.list_for_tenant(key)

    @post("/{key:str}/restore", status_code=202, summary="Restore the tenant in place from one of its backups, "
          "or bring a deleted tenant back under its id")
    async def restore(self, request: Request, key: KeyParam, data: JSONBody[RestoreTenant],
                      backups: NamedDependency[BackupService]) -> RestoreAccepted:
        return await backups.restore(actor(request), key, data)

    @post("/{key:str}/keys/rotate", status_code=200, summary="A new backup key version for the tenant")
    async def rotate_key(self, request: Request, key: KeyParam, backups: NamedDependency[BackupService]) -> KeysRotated:
        return await backups.rotate_key(actor(request), key)

    @post("/{key:str}/keys/rewrap", status_code=200,
          summary="Move the tenant's backup key versions under its current wrapper (idempotent)")
    async def rewrap_keys(self, request: Request, key: KeyParam,
                          backups: NamedDependency[BackupService]) -> KeysRewrapped:
        return await backups.rewrap_keys(actor(request), key)

    @post("/{key:str}/keys/destroy", status_code=200,
          summary="Destroy the tenant's backup keys for good (its backups become unreadable)")
    async def destroy_keys(self, request: Request, key: KeyParam, data: JSONBody[DestroyKeys],
                           backups: NamedDependency[BackupService]) -> KeysDestroyed:
        return await backups.destroy_keys(actor(request), key, data)


class BackupController(Controller):
    path = "/v1/backups"
    opt = {"area": "tenants"}  # the scopes it needs: control_plane/scopes.py
    tags = ["backups"]

    @get("/{key:str}", summary="One backup")
    async def get_backup(self, key: Annotated[str, Parameter(max_length=100)],
                         backups: NamedDependency[BackupService]) -> BackupOut:
        return await backups.get(key)

    @post("/{key:str}/verify", status_code=202, summary="A restore drill of the backup into a scratch database")
    async def verify(self, request: Request, key: Annotated[str, Parameter(max_length=100)],
                     backups: NamedDependency[BackupService]) -> BackupAccepted:
        return await backups.verify(actor(request), key)
