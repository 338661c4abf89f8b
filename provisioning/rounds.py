"""Fleet-wide rounds: a duty that must run once per interval across all workers (the reconciler,
retention) claims its round here first. The claim is one statement on the duty's row in
`duty_rounds` (this module owns the table): it moves `last_run_at` to now only if the last round is
at least an interval old, so of several workers looking at once exactly one gets the round (the
others wait on the row lock, see the new time and get nothing)."""

from __future__ import annotations

import asyncpg

RECONCILER = "reconciler"
RETENTION = "retention"
LOGIN_WATCH = "login_watch"

_CLAIM = """
INSERT INTO duty_rounds (duty, last_run_at) VALUES ($1, now())
ON CONFLICT (duty) DO UPDATE SET last_run_at = now()
WHERE duty_rounds.last_run_at <= now() - make_interval(secs => $2)
RETURNING true
"""


async def claim(catalog: asyncpg.Pool | asyncpg.Connection, duty: str, interval: float) -> bool:
    """True when this caller has the duty's round for the interval now starting."""
    # a little slack: a worker that sleeps exactly `interval` after its own claim must win again
    return bool(await catalog.fetchval(_CLAIM, duty, max(0.0, interval * 0.95)))


async def last_run(catalog: asyncpg.Pool | asyncpg.Connection, duty: str):
    return await catalog.fetchval("SELECT last_run_at FROM duty_rounds WHERE duty = $1", duty)
