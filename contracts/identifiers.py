"""The only place SQL identifiers are derived, validated and quoted.

Names of databases, roles and schemas come from the tenant's id (a UUID), never from its slug or
any other user input, so they are short, lowercase and predictable; still, every identifier that
reaches SQL goes through `quote()`, which refuses anything outside a conservative alphabet.
"""

from __future__ import annotations

import re
import uuid

PREFIX = "tp_"  # every object we create on a server carries this prefix (reconciliation finds them)
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class InvalidIdentifier(ValueError):
    pass


def validate(name: str) -> str:
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise InvalidIdentifier(f"not a safe SQL identifier: {name!r}")
    return name


def quote(name: str) -> str:
    """Validated, double-quoted identifier, ready to be placed in SQL text."""
    return '"' + validate(name) + '"'


def quote_literal(value: str) -> str:
    """A string literal for the few statements that cannot take bind parameters (ALTER ROLE ... PASSWORD)."""
    if "\x00" in value:
        raise InvalidIdentifier("NUL in literal")
    return "'" + value.replace("'", "''") + "'"


def _hex(tenant_id: uuid.UUID | str) -> str:
    return uuid.UUID(str(tenant_id)).hex


def tenant_database(tenant_id: uuid.UUID | str) -> str:
    return validate(f"{PREFIX}db_{_hex(tenant_id)}")


def tenant_role(tenant_id: uuid.UUID | str) -> str:
    return validate(f"{PREFIX}role_{_hex(tenant_id)}")


def tenant_schema(tenant_id: uuid.UUID | str) -> str:
    return validate(f"{PREFIX}s_{_hex(tenant_id)}")


def spare_database(key: uuid.UUID | str) -> str:
    """A spare copy of the template, waiting to be renamed to a tenant's database, and the role of
    the same name that is granted row access in it and becomes the tenant's role (spares.py)."""
    return validate(f"{SPARE_PREFIX}{_hex(key)}")


def restore_role(operation_id: uuid.UUID | str) -> str:
    """The short-lived login role a restore, clone or drill loads its pg_dump archive as: named by
    the operation, so a rerun after a crash finds (and reuses or drops) the same role."""
    return validate(f"{RESTORE_ROLE_PREFIX}{_hex(operation_id)}")


SPARE_PREFIX = f"{PREFIX}spare_"
RESTORE_ROLE_PREFIX = f"{PREFIX}restore_"
TEMPLATE_DATABASE = validate(f"{PREFIX}template")
SCHEMAS_DATABASE = validate(f"{PREFIX}schemas")  # schema tier: one schema per tenant in here
SHARED_DATABASE = validate(f"{PREFIX}shared")  # shared tier: rows with tenant_id, under RLS
SCHEMA_GATEWAY_ROLE = validate(f"{PREFIX}gateway")  # logs in to SCHEMAS_DATABASE, SET LOCAL ROLEs per tenant
SHARED_APP_ROLE = validate(f"{PREFIX}shared_app")  # logs in to SHARED_DATABASE; owns nothing, no BYPASSRLS

