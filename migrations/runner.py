"""Run the two Alembic trees (catalog, tenant) programmatically.

`upgrade(tree, dsn)` takes a libpq-style URL (postgresql://...). `tree` is "catalog" or the
process's `TenantTree` (migrations/tree.py: TENANT_MIGRATIONS, read once into the settings and passed
here). Alembic runs on a synchronous SQLAlchemy connection bridged from an asyncpg engine, so the
control plane needs one driver only.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from contracts import locks
from migrations.tree import DEMO_TREE, TenantTree

__all__ = ["DEMO_TREE", "TenantTree"]

Tree = Literal["catalog"] | TenantTree
_HERE = Path(__file__).resolve().parent
log = logging.getLogger("tenantplane.migrations")

# The tenant tree's migration lock (two-key form: this, hashtext(schema or '')): env.py takes it
# for a session, whoever applies a rendered script takes it for its transaction; either way one
# migrator per tenant database (or schema) at a time.
TENANT_MIGRATION_LOCK = locks.TENANT_MIGRATION


def sqlalchemy_url(dsn: str) -> str:
    """libpq URL → SQLAlchemy's asyncpg URL (whose dialect takes `ssl`, not libpq's `sslmode`)."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            rest = dsn[len(prefix):]
            base, _, query = rest.partition("?")
            if query:
                query = "&".join("ssl=" + p[len("sslmode="):] if p.startswith("sslmode=") else p
                                 for p in query.split("&"))
                rest = f"{base}?{query}"
            return "postgresql+asyncpg://" + rest
    raise ValueError("expected a postgresql:// URL")


def alembic_config(tree: Tree, dsn: str | None = None, **attributes: str | None) -> Config:
    """`attributes` reach env.py and the migrations: `tier` (dedicated|schema|shared) and, for the
    schema tier, `schema`."""
    url = None if dsn is None else sqlalchemy_url(dsn)
    if isinstance(tree, TenantTree):
        return tree.config(url, **attributes)
    if tree != "catalog":  # the tenant tree is a TenantTree, never a name: each process's own
        raise TypeError(f"not a migration tree: {tree!r}")
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE / "catalog"))
    if url is not None:
        cfg.attributes["url"] = url  # an attribute, not an option: ConfigParser chokes on '%'
    cfg.attributes.update({k: v for k, v in attributes.items() if v is not None})
    return cfg


def head(tree: Tree) -> str:
    if isinstance(tree, TenantTree):
        return tree.head()
    rev = ScriptDirectory.from_config(alembic_config(tree)).get_current_head()
    assert rev is not None
    return rev


# Alembic keeps the running migration's context in module globals (`alembic.context`, `op`), so two
# migrations in threads of one process would clobber each other (seen: KeyError 'config', and worse,
# DDL sent on the other migration's connection). One at a time per process; workers scale out by
# running more processes.
_ALEMBIC = threading.Lock()


def upgrade_sync(tree: Tree, dsn: str, revision: str = "head", **attributes: str | None) -> None:
    with _ALEMBIC:
        command.upgrade(alembic_config(tree, dsn, **attributes), revision)


async def upgrade(tree: Tree, dsn: str, revision: str = "head", **attributes: str | None) -> None:
    # alembic's env.py runs its own event loop; keep it off ours
    await asyncio.to_thread(upgrade_sync, tree, dsn, revision, **attributes)


def downgrade_sync(tree: Tree, dsn: str, revision: str) -> None:
    with _ALEMBIC:
        command.downgrade(alembic_config(tree, dsn), revision)


async def downgrade(tree: Tree, dsn: str, revision: str) -> None:
    """Back to `revision` (an operator's rollback of a catalog release; the tests check each step)."""
    await asyncio.to_thread(downgrade_sync, tree, dsn, revision)


# (tree, from, to, attributes) -> the rendered script, or None when the range must run online
_RENDERED: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], str | None] = {}


def render_upgrade_sync(tree: Tree, from_revision: str, to_revision: str, **attributes: str | None) -> str | None:
    """The SQL that takes a database from `from_revision` to `to_revision`, as
    `alembic upgrade --sql from:to` writes it (offline mode), without BEGIN/COMMIT; it ends with the
    `UPDATE alembic_version ... WHERE version_num = '<from>'`. Rendered once per range and process.

    None means "run this range online": the range is not an upgrade path, a revision in it says
    `online_only = True`, or rendering it failed -- a migration that needs a live connection (reads
    rows or inspects the database through `op.get_bind()`) fails offline, since there is no
    connection then. Rule for migration authors: a revision whose SQL depends on what the database
    holds must either fail offline or set `online_only = True`; it must never branch on
    `context.is_offline_mode()` to emit something else.
    """
    key = _render_key(tree, from_revision, to_revision, attributes)
    if key not in _RENDERED:
        _RENDERED[key] = render_with(alembic_config(tree, **attributes), from_revision, to_revision)
    return _RENDERED[key]


def render_with(cfg: Config, from_revision: str, to_revision: str) -> str | None:
    """`render_upgrade_sync` for any Alembic config (uncached)."""
    try:
        scripts = ScriptDirectory.from_config(cfg)
        path = list(scripts.iterate_revisions(to_revision, from_revision))
        if not path or from_revision not in {r.revision for r in scripts.walk_revisions()}:
            return None
        if any(getattr(rev.module, "online_only", False) for rev in path):
            return None
        buffer = io.StringIO()
        cfg.output_buffer = buffer
        with _ALEMBIC:
            command.upgrade(cfg, f"{from_revision}:{to_revision}", sql=True)
        return buffer.getvalue()
    except Exception as exc:  # not renderable: the online path runs it
        log.info("migration %s -> %s runs online (%s: %s)", from_revision, to_revision, type(exc).__name__, exc)
        return None


def _render_key(tree: Tree, from_revision: str, to_revision: str,
                attributes: dict[str, str | None]) -> tuple[str, str, str, tuple[tuple[str, str], ...]]:
    location = tree.location if isinstance(tree, TenantTree) else tree
    return location, from_revision, to_revision, tuple(sorted((k, v) for k, v in attributes.items() if v is not None))


async def render_upgrade(tree: Tree, from_revision: str, to_revision: str, **attributes: str | None) -> str | None:
    key = _render_key(tree, from_revision, to_revision, attributes)
    if key in _RENDERED:  # the usual case: no thread hop
        return _RENDERED[key]
    return await asyncio.to_thread(render_upgrade_sync, tree, from_revision, to_revision, **attributes)
