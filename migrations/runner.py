"""Run the two Alembic trees (catalog, tenant) programmatically.

`upgrade(tree, dsn)` takes a libpq-style URL (postgresql://...). Alembic runs on a synchronous
SQLAlchemy connection bridged from an asyncpg engine, so the control plane needs one driver only.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

Tree = Literal["catalog", "tenant"]
_HERE = Path(__file__).resolve().parent


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
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE / tree))
    if dsn is not None:
        # stored as an attribute, not an option: ConfigParser would choke on '%' in passwords
        cfg.attributes["url"] = sqlalchemy_url(dsn)
    cfg.attributes.update({k: v for k, v in attributes.items() if v is not None})
    return cfg


def head(tree: Tree) -> str:
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
