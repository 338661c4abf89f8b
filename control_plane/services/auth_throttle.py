"""Failed admin authentications, counted per client address and for every address together.

Two throttles with one interface (`AuthThrottle`): `FailureThrottle` counts in this process;
`SharedFailureThrottle` counts in Redis, so every API process shares one count per address and
one for all addresses (the fleet-wide cap, which bounds an attacker with many addresses: each no
longer gets the full limit). Both are sliding windows: a burst at a window's edge cannot double
a limit, as a fixed window would allow.

In Redis an attempt is *reserved* before its token is looked up, in one Lua script that checks
both limits and adds the attempt (atomic: concurrent guesses from many API processes cannot pass
the limit by their number), and released when the token proved valid; a failed attempt simply
stays counted. A process killed between the two leaves a reservation that counts as a failure
until the window forgets it (fails closed).

Redis never decides alone: every failure is counted in the process too, and while Redis does not
answer (each call bounded by REDIS_TIMEOUT_SECONDS, then Redis is skipped for `COOLDOWN_SECONDS`
instead of paying the timeout on every request) the process's own count decides. Releases and
counts that need no answer are sent in the background, so a request waits for Redis once at
most, and never longer than the timeout.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import logging
import math
import secrets
import time
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from contracts.channels import AUTH_FAILURES_ALL_KEY, auth_failures_redis_key
from contracts.credentials import subkey
from control_plane import errors

if TYPE_CHECKING:
    from control_plane.settings import Settings

log = logging.getLogger("tenantplane.auth")

FAILURES_PER_MINUTE = 20
GLOBAL_FAILURES_PER_MINUTE = 200
COOLDOWN_SECONDS = 5.0  # Redis skipped this long after it failed to answer


class Attempt(msgspec.Struct, frozen=True):
    """One token check from `address`; `reservation` names its entry in Redis (None: not reserved)."""
    address: str
    reservation: str | None = None


class AuthThrottle(Protocol):
    async def admit(self, address: str) -> Attempt:
        """May `address` have a token looked up? Raises TooManyFailedAttempts when not."""
        ...

    def unchecked(self, address: str) -> Attempt:
        """An attempt that was not admitted (a trusted token passes the throttle), still counted if it fails."""
        ...

    def failed(self, attempt: Attempt) -> None:
        """The token was wrong: the attempt counts (a reservation simply stays)."""
        ...

    def release(self, attempt: Attempt) -> None:
        """The token was valid, or could not be checked: the attempt is no failure."""
        ...

    async def aclose(self) -> None: ...


def _refused(wait: float, everyone: bool) -> errors.TooManyFailedAttempts:
    seconds = max(1, math.ceil(wait))
    where = "from all addresses" if everyone else "from this address"
    return errors.TooManyFailedAttempts(f"too many failed authentications {where}; try again in {seconds} s",
                                        retry_after=seconds)


class FailureThrottle:
    """Failed attempts per client address, and of all addresses together, in a sliding window (a
    log of at most `limit` times per address and `global_limit` in all, so memory is bounded by
    `limit` x `max_addresses`). With more than `max_addresses` addresses the one idle longest is
    forgotten first."""

    def __init__(self, limit: int = FAILURES_PER_MINUTE, window: float = 60.0, max_addresses: int = 10_000,
                 global_limit: int = GLOBAL_FAILURES_PER_MINUTE) -> None:
        self.limit, self.window, self.max_addresses = limit, window, max_addresses
        self.global_limit = global_limit
        self._failures: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()
        self._all: collections.deque[float] = collections.deque(maxlen=global_limit)

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again, or None when it may try now."""
        times = self._failures.get(address)
        if times is None:
            return None
        now = time.monotonic()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        if len(times) < self.limit:
            return None
        return max(1, math.ceil(times[0] + self.window - now))

    def global_retry_after(self) -> int | None:
        """Seconds until any address may try again (the cap on all of them), or None."""
        now = time.monotonic()
        while self._all and self._all[0] <= now - self.window:
            self._all.popleft()
        if len(self._all) < self.global_limit:
            return None
        return max(1, math.ceil(self._all[0] + self.window - now))

    def record(self, address: str) -> None:
        """Count one failure of `address`."""
        times = self._failures.pop(address, None) or collections.deque(maxlen=self.limit)
        now = time.monotonic()
        times.append(now)
        self._all.append(now)
        self._failures[address] = times  # last: the most recently active
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    # AuthThrottle
    async def admit(self, address: str) -> Attempt:
        wait = self.retry_after(address)
        if wait is not None:
            raise _refused(wait, everyone=False)
        wait = self.global_retry_after()
        if wait is not None:
            raise _refused(wait, everyone=True)
        return Attempt(address)

    def unchecked(self, address: str) -> Attempt:
        return Attempt(address)

    def failed(self, attempt: Attempt | str) -> None:  # an attempt, or just its address
        self.record(attempt if isinstance(attempt, str) else attempt.address)

    def release(self, attempt: Attempt) -> None:
        pass

    async def aclose(self) -> None:
        pass


# KEYS: the address's set, the set of all; ARGV: window (ms), limit, global limit, member, check
# (1: refuse past a limit; 0: count regardless, a trusted token that failed). Times are the Redis
# server's, so API processes with skewed clocks share one window. Answers {0, 0} when counted,
# {1 | 2, ms to wait} when the address (1) or everyone (2) is at the limit.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, limit, all_limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if ARGV[5] == '1' then
  for i, cap in ipairs({limit, all_limit}) do
    if redis.call('ZCARD', KEYS[i]) >= cap then
      local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
      return {i, tonumber(oldest[2]) + window - now}
    end
  end
end
for i, cap in ipairs({limit, all_limit}) do
  redis.call('ZADD', KEYS[i], now, ARGV[4])
  redis.call('ZREMRANGEBYRANK', KEYS[i], 0, -(cap + 1))
  redis.call('PEXPIRE', KEYS[i], window)
end
return {0, 0}
"""


class SharedFailureThrottle:
    """The counts in Redis (`redis`: a redis.asyncio client), `local` deciding when Redis does not answer."""

    def __init__(self, redis: Any, local: FailureThrottle, *, address_secret: bytes, timeout: float,
                 cooldown: float = COOLDOWN_SECONDS) -> None:
        self.redis, self.local = redis, local
        self.timeout, self.cooldown = timeout, cooldown
        self._secret = address_secret
        self._script = redis.register_script(_RESERVE)
        self._skip_until = 0.0
        self._background: set[asyncio.Task] = set()

    def _keys(self, address: str) -> list[str]:
        # keyed, so the set of addresses in Redis cannot be recovered by hashing every IPv4 address
        digest = hmac.new(self._secret, address.encode(), hashlib.sha256).hexdigest()[:32]
        return [auth_failures_redis_key(digest), AUTH_FAILURES_ALL_KEY]

    def _available(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _unavailable(self, exc: BaseException) -> None:
        self._skip_until = time.monotonic() + self.cooldown
        log.warning("failed-login throttle: Redis did not answer (%s); counting in this process for %.0f s",
                    type(exc).__name__, self.cooldown)

    async def _call(self, awaitable: Any) -> Any:
        """`awaitable` bounded by the timeout; None (and Redis skipped for a while) when Redis fails."""
        try:
            async with asyncio.timeout(self.timeout):
                return await awaitable
        except Exception as exc:  # includes TimeoutError; cancellation still propagates
            self._unavailable(exc)
            return None

    def _in_background(self, make: Any) -> None:
        if not self._available():
            return  # not sent: the local count stands in, and the window forgets it anyway
        task = asyncio.get_running_loop().create_task(self._call(make()))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _count(self, address: str, member: str, check: bool) -> Any:
        local = self.local
        return self._script(keys=self._keys(address),
                            args=[int(local.window * 1000), local.limit, local.global_limit, member, int(check)])

    async def admit(self, address: str) -> Attempt:
        if self._available():
            member = secrets.token_hex(8)
            answer = await self._call(self._count(address, member, check=True))
            if answer is not None:
                which, wait_ms = int(answer[0]), int(answer[1])
                if which:
                    raise _refused(wait_ms / 1000, everyone=which == 2)
                return Attempt(address, member)
        return await self.local.admit(address)  # Redis did not answer: this process's count decides

    def unchecked(self, address: str) -> Attempt:
        return Attempt(address)

    def failed(self, attempt: Attempt) -> None:
        self.local.record(attempt.address)
        if attempt.reservation is None:  # not counted in Redis yet
            self._in_background(lambda: self._count(attempt.address, secrets.token_hex(8), check=False))

    def release(self, attempt: Attempt) -> None:
        if attempt.reservation is not None:
            keys, member = self._keys(attempt.address), attempt.reservation

            async def release() -> None:
                async with self.redis.pipeline(transaction=True) as pipe:
                    for key in keys:
                        pipe.zrem(key, member)
                    await pipe.execute()

            self._in_background(release)

    async def aclose(self) -> None:
        """Wait for what is still being sent (each send is bounded by the timeout)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def build(settings: Settings, redis: Any | None) -> AuthThrottle:
    """The API's throttle: shared through `redis` (the API's bounded client) when there is one."""
    local = FailureThrottle(settings.admin_auth_failures_per_minute,
                            global_limit=settings.admin_auth_failures_global_per_minute)
    if redis is None:
        return local
    return SharedFailureThrottle(redis, local, address_secret=subkey(settings.secret_key, "auth-failure-addresses"),
                                 timeout=settings.redis_timeout_seconds)
