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
