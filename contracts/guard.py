"""The verified tenant binding of the schema and shared tiers: what the router sends, and the SQL
that checks it on the server.

Why: on those tiers many tenants share a login role, so anything a tenant's SQL can set (a custom
setting such as app.tenant_id, SET ROLE to a role the gateway is a member of) cannot be what row
access depends on. Instead the router proves each binding with a MAC that only it and the guard's
functions can compute:

- The router sends, with BEGIN, `SELECT tp_guard.bind(tenant, issued_ms, mac)` where mac is
  HMAC-SHA256(key, "bind|tenant|backend pid|issued_ms"). The key is derived from SECRET_KEY and
  kept, on the server, in a table only the NOLOGIN role `tp_guard` may read. The backend pid ties a
  ticket to one session and `issued_ms` to a short window (TICKET_WINDOW_MS), so a ticket seen
  elsewhere is useless; tenant-facing roles cannot read other sessions' query text anyway
  (provisioning revokes the monitoring functions from PUBLIC in these databases).
- `bind()` (SECURITY DEFINER, owned by tp_guard) checks the ticket and records the binding as
  the setting `tp.binding` = tenant ":" HMAC(key, "seal|tenant|pid|transaction start"), LOCAL.
  Anyone may overwrite a custom setting, but nobody without the key can write a valid one, and a
  seal is only valid in the transaction that made it (COMMIT; BEGIN leaves the next transaction
  unbound), on the backend that made it.
- Policies compare rows with `(SELECT tp_guard.bound_tenant())`: an InitPlan, so the seal is
  checked once per statement, not per row. For sessions that are not tenant-facing (the
  provisioner's admin sessions) bound_tenant() reads app.tenant_id as before.
- app.tenant_id is still set by bind() (LOCAL), for column defaults and application code that read
  it; nothing that isolates tenants trusts it on a tenant-facing session.

Pure: text and HMACs, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

from contracts.credentials import subkey
from contracts.identifiers import SCHEMA_GATEWAY_ROLE, SHARED_APP_ROLE, quote_literal, validate

GUARD_SCHEMA = validate("tp_guard")
GUARD_OWNER = validate("tp_guard")  # NOLOGIN: owns the key table and the functions, nothing else
TICKET_WINDOW_MS = 60_000  # clock skew between router and server plus the time a BEGIN takes
TENANT_FACING_ROLES = (SCHEMA_GATEWAY_ROLE, SHARED_APP_ROLE)  # sessions that must prove a binding
_BLOCK = 64  # SHA-256's block size


def binding_key(secret_key: str) -> bytes:
    return subkey(secret_key, "tenant-binding")


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """HMAC's inner and outer keys (key XOR ipad, key XOR opad): the server stores these, so that
    HMAC is two sha256() calls there and needs no extension."""
    padded = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in padded), bytes(b ^ 0x5C for b in padded)


def ticket(key: bytes, tenant_id: uuid.UUID | str, pid: int, issued_ms: int) -> str:
    message = f"bind|{uuid.UUID(str(tenant_id))}|{int(pid)}|{int(issued_ms)}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def bind_statement(key: bytes, tenant_id: uuid.UUID | str, pid: int, issued_ms: int) -> str:
    """The statement that binds a transaction on backend `pid`; literals only (it goes out as
    simple-query text with the BEGIN, never as a prepared statement)."""
    tenant = str(uuid.UUID(str(tenant_id)))
    mac = ticket(key, tenant, pid, issued_ms)
    return f"SELECT {GUARD_SCHEMA}.bind({quote_literal(tenant)}::uuid, {int(issued_ms)}, {quote_literal(mac)})"


def _mac_sql(message: str) -> str:
    return f"encode(sha256(k.okey || sha256(k.ikey || convert_to({message}, 'UTF8'))), 'hex')"


_SEAL_MESSAGE = ("format('seal|%s|%s|%s', {tenant}, pg_catalog.pg_backend_pid(), "
                 "(extract(epoch FROM pg_catalog.now()) * 1000000)::bigint)")
_FACING = ", ".join(quote_literal(r) for r in TENANT_FACING_ROLES)

# Idempotent; run by the provisioner (with the key) in every schemas and shared database, and by
# tenant migrations there when it is missing. search_path is pinned on both functions (pg_temp
# last), so no object a session creates can stand in for the ones they use.
INSTALL_STATEMENTS: tuple[str, ...] = (
    f"""DO $role$ BEGIN
  CREATE ROLE {GUARD_OWNER} NOLOGIN NOINHERIT;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $role$""",
    f"""CREATE SCHEMA IF NOT EXISTS {GUARD_SCHEMA} AUTHORIZATION {GUARD_OWNER}""",
    f"""REVOKE ALL ON SCHEMA {GUARD_SCHEMA} FROM PUBLIC""",
    f"""GRANT USAGE ON SCHEMA {GUARD_SCHEMA} TO PUBLIC""",
    f"""CREATE TABLE IF NOT EXISTS {GUARD_SCHEMA}.binding_key (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row), ikey bytea NOT NULL, okey bytea NOT NULL)""",
    f"""ALTER TABLE {GUARD_SCHEMA}.binding_key OWNER TO {GUARD_OWNER}""",
    f"""REVOKE ALL ON TABLE {GUARD_SCHEMA}.binding_key FROM PUBLIC""",
    f"""CREATE OR REPLACE FUNCTION {GUARD_SCHEMA}.bind(tenant uuid, issued bigint, mac text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE k record;
BEGIN
  SELECT ikey, okey INTO k FROM {GUARD_SCHEMA}.binding_key;
  IF k.ikey IS NULL OR tenant IS NULL OR issued IS NULL
     OR abs(extract(epoch FROM clock_timestamp()) * 1000 - issued) > {TICKET_WINDOW_MS}
     OR mac IS DISTINCT FROM {_mac_sql("format('bind|%s|%s|%s', tenant, pg_backend_pid(), issued)")} THEN
    RAISE EXCEPTION 'tenant binding refused' USING ERRCODE = '42501';
  END IF;
  PERFORM set_config('tp.binding', tenant::text || ':' || {_mac_sql(_SEAL_MESSAGE.format(tenant="tenant"))}, true);
  PERFORM set_config('app.tenant_id', tenant::text, true);
  RETURN true;
END $fn$""",
    f"""ALTER FUNCTION {GUARD_SCHEMA}.bind(uuid, bigint, text) OWNER TO {GUARD_OWNER}""",
    f"""CREATE OR REPLACE FUNCTION {GUARD_SCHEMA}.bound_tenant() RETURNS uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE v text := current_setting('tp.binding', true); t text; k record;
BEGIN
  IF session_user NOT IN ({_FACING}) THEN  -- the provisioner's own sessions
    RETURN nullif(current_setting('app.tenant_id', true), '')::uuid;
  END IF;
  IF v IS NULL OR length(v) <> 101 THEN
    RETURN NULL;
  END IF;
  t := left(v, 36);
  SELECT ikey, okey INTO k FROM {GUARD_SCHEMA}.binding_key;
  IF k.ikey IS NOT NULL AND substr(v, 38) = {_mac_sql(_SEAL_MESSAGE.format(tenant="t"))} THEN
    RETURN t::uuid;
  END IF;
  RETURN NULL;
END $fn$""",
    f"""ALTER FUNCTION {GUARD_SCHEMA}.bound_tenant() OWNER TO {GUARD_OWNER}""",
    # The router's reset asks about the session's prepared statements through this instead of
    # pg_prepared_statements, which the provisioner closes to PUBLIC here: that view also shows the
    # text of what asyncpg cached for the connection's earlier borrowers (other tenants). Names and
    # from_sql only, of the calling session only.
    f"""CREATE OR REPLACE FUNCTION {GUARD_SCHEMA}.prepared_statements() RETURNS TABLE (name text, from_sql boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
  SELECT p.name, p.from_sql FROM pg_catalog.pg_prepared_statements p
$fn$""",
    f"""ALTER FUNCTION {GUARD_SCHEMA}.prepared_statements() OWNER TO {GUARD_OWNER}""",
)
INSTALL_SQL = ";\n".join(INSTALL_STATEMENTS)

SET_KEY_SQL = (f"INSERT INTO {GUARD_SCHEMA}.binding_key (ikey, okey) VALUES ($1, $2) "
               "ON CONFLICT (only_row) DO UPDATE SET ikey = excluded.ikey, okey = excluded.okey "
               "WHERE (binding_key.ikey, binding_key.okey) IS DISTINCT FROM (excluded.ikey, excluded.okey)")

BOUND_TENANT = f"(SELECT {GUARD_SCHEMA}.bound_tenant())"  # an InitPlan: once per statement
