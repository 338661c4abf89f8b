"""Names of the channels and keys through which the planes tell each other things.

PostgreSQL NOTIFY channels (delivered at commit, so a listener never hears of a row before it
exists) and Redis pub/sub channels and keys.
"""

from __future__ import annotations

# NOTIFY: the control plane (or a fleet migration) queued operations; workers wake up
WAKE_CHANNEL = "tenantplane_operations"
# NOTIFY: an operation ended; the payload is its id (long polls of GET /v1/operations/{id})
OPERATION_DONE_CHANNEL = "tenantplane_operation_done"
# NOTIFY: the webhook recorded a new Stripe event; the workers' billing appliers wake up
BILLING_EVENTS_CHANNEL = "tenantplane_billing_events"

# Redis pub/sub: a routing-relevant catalog change; the message is the tenant id ("*": every one)
INVALIDATION_CHANNEL = "tenantplane:placement-invalidated"


# Redis keys of the rate limiter's windows (tenant_router/ratelimit.py, counted by `limits`): each
# key is this prefix, then `:LIMITER/tenantplane/<tenant id>/<limit>/1/minute`
RATE_LIMIT_KEY_PREFIX = "tenantplane:ratelimit"


def rate_limit_key_pattern(tenant_id: object) -> str:
    """A SCAN pattern matching every rate-limit window of one tenant (its id is in each key's name)."""
    return f"{RATE_LIMIT_KEY_PREFIX}:*/{tenant_id}/*"


def placement_redis_key(tenant_id: object) -> str:
    """The shared (Redis) copy of one tenant's placement."""
    return f"tenantplane:placement:{tenant_id}"


def alias_redis_key(kind: str, value: str) -> str:
    """Slug or custom domain -> tenant id, in Redis."""
    return f"tenantplane:alias:{kind}:{value}"


# Redis: failed admin authentications in the last window, shared by every API process
# (control_plane/services/auth_throttle.py). One sorted set per client address, named by a keyed
# digest of the address (no address in Redis), and one for every address together. The braces
# are a Redis Cluster hash tag: the throttle's script touches both keys, which must share a slot.
AUTH_FAILURES_ALL_KEY = "tenantplane:{auth-failures}:all"


def auth_failures_redis_key(address_digest: str) -> str:
    """One client address's failed admin authentications (by a keyed digest of the address)."""
    return f"tenantplane:{{auth-failures}}:addr:{address_digest}"
