"""Which tenant a request is for: from a verified JWT claim, or from the Host name. No I/O here."""

from __future__ import annotations

import re
import uuid

import jwt

from tenant_router.errors import InvalidToken, TenantNotFound

_SLUG = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
ALGORITHMS = ["HS256"]  # pinned: never taken from the token header


def normalise_host(host: str) -> str:
    """Lowercase, without port and trailing dot. IPv6 literals keep their brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]")[0] + "]"
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host.rstrip(".")


def slug_from_host(host: str | None, apex: str) -> str | None:
    """`acme.example.com` under apex `example.com` → `acme`; anything else → None."""
    if not host:
        return None
    name = normalise_host(host)
    apex = normalise_host(apex)
    suffix = "." + apex
    if not name.endswith(suffix):
        return None
    label = name[: -len(suffix)]
    return label if _SLUG.fullmatch(label) else None


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def tenant_id_from_token(token: str, secret: str | None, leeway: int) -> uuid.UUID:
    return tenant_id_from_claims(verified_claims(token, secret, leeway))


def verified_claims(token: str, secret: str | None, leeway: int) -> dict:
    if not secret:
        raise InvalidToken("tokens are not accepted here")
    try:
        claims = jwt.decode(token, secret, algorithms=ALGORITHMS, leeway=leeway,
                            options={"require": ["exp", "tenant_id"]})
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"token rejected: {type(exc).__name__}") from None
    return claims


def tenant_id_from_claims(claims: dict) -> uuid.UUID:
    try:
        return uuid.UUID(str(claims["tenant_id"]))
    except ValueError:
        raise TenantNotFound("no such tenant") from None
