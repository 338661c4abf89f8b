"""Which tenant a request names, and how far to trust it. No I/O here.

Order: a verified bearer JWT (its `tenant_id` claim), else a trusted internal header (`X-Tenant-ID`,
honoured only with a valid `X-Service-Token`), else the Host: `{slug}.{apex}` or a custom domain.
The JWT algorithms are pinned per key (an HMAC secret verifies HS256 only; a public key verifies its
own RS256/ES256 only), so `alg: none` and HMAC-signed-with-the-public-key tokens are refused.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from typing import Any

import jwt
import msgspec

from tenant_router.config import RouterConfig
from tenant_router.errors import InvalidToken, TenantNotFound, UntrustedHeader

_SLUG = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")
ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256"})


class TenantKey(msgspec.Struct, frozen=True):
    """What a request names: ("id", uuid), ("slug", slug) or ("domain", host)."""

    kind: str
    value: str


def normalise_host(host: str) -> str:
    """Lowercase, without port and trailing dot. IPv6 literals keep their brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]")[0] + "]"
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host.rstrip(".")


# A last label that is a number (decimal, or 0x hex) makes browsers and resolvers read the whole
# name as an IPv4 address in one of inet_aton's forms (`127.0.0.01`, `0x7f.1`), per the URL standard's
# "ends in a number" rule; no top-level domain is numeric.
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")


def is_valid_domain(name: str) -> bool:
    """A host name: labels of letters, digits and '-', and never an IP address in any spelling."""
    return bool(_HOSTNAME.fullmatch(name)) and not _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1])


def key_from_host(host: str | None, apex: str) -> TenantKey | None:
    """`acme.{apex}` → slug `acme`; another valid host name → a custom domain; else None."""
    if not host:
        return None
    name = normalise_host(host)
    apex = normalise_host(apex)
    if name == apex:
        return None
    if name.endswith("." + apex):
        label = name[: -len(apex) - 1]
        return TenantKey("slug", label) if _SLUG.fullmatch(label) else None
    return TenantKey("domain", name) if is_valid_domain(name) else None


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _verification_key(token: str, config: RouterConfig) -> tuple[Any, list[str]]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("token rejected: DecodeError") from None
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken("token rejected: bad kid")
    if kid is not None and kid in config.jwt_public_keys:
        entry = config.jwt_public_keys[kid]
        alg = entry.get("alg", "")
        if alg not in ASYMMETRIC:
            raise InvalidToken("token rejected: key algorithm not allowed")
        return entry["key"], [alg]
    if config.jwt_secret and kid is None:
        return config.jwt_secret, ["HS256"]
    raise InvalidToken("token rejected: unknown key")


def verified_claims(token: str, config: RouterConfig) -> dict:
    key, algorithms = _verification_key(token, config)
    required = ["exp", "tenant_id"]
    if config.jwt_issuer:
        required.append("iss")
    if config.jwt_audience:
        required.append("aud")
    try:
        return jwt.decode(token, key, algorithms=algorithms, leeway=config.jwt_leeway_seconds,
                          issuer=config.jwt_issuer, audience=config.jwt_audience,
                          options={"require": required, "verify_aud": bool(config.jwt_audience)})
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"token rejected: {type(exc).__name__}") from None


def tenant_id_from_claims(claims: dict) -> uuid.UUID:
    try:
        return uuid.UUID(str(claims["tenant_id"]))
    except ValueError:
        raise TenantNotFound("no such tenant") from None


def is_service_token(service_token: str | None, config: RouterConfig) -> bool:
    """Whether `service_token` (an X-Service-Token value) is one of the configured service credentials."""
    if not service_token:
        return False
    digest = hashlib.sha256(service_token.encode()).hexdigest()
    return any(hmac.compare_digest(digest, d) for d in config.service_token_sha256)


def trusted_tenant(tenant_header: str, service_token: str | None, config: RouterConfig) -> TenantKey:
    """X-Tenant-ID from a caller that proves a service credential; anyone else is refused."""
    if not is_service_token(service_token, config):
        raise UntrustedHeader("X-Tenant-ID is only accepted from trusted services")
    try:
        return TenantKey("id", str(uuid.UUID(tenant_header)))
    except ValueError:
        raise TenantNotFound("no such tenant") from None
