"""Admin API keys: checked by digest; the bootstrap token from settings is stored hashed.

A key found valid is remembered in the process for `REMEMBER_SECONDS`, so that a burst of admin
calls (onboarding automation: create, then wait on the operation) does not read the key table on
every request. The price: a key revoked in the catalog keeps working in a running API process for
at most that long.

A wrong token is remembered as wrong for `FORGET_WRONG_SECONDS`, so that repeating it costs no
catalog query (a key created meanwhile by another process is refused that long; one set by this
process is accepted at once). Failed attempts are counted per client address and for all addresses
together (auth_throttle.py: in Redis when the API has one, shared by every API process, else in
the process): past either limit the address gets 429 without its token being looked up, so
guessing is bounded.
A token this process has found valid in the last `TRUSTED_SECONDS` (or set itself) is still looked
up from a throttled address: it is no guess, so an admin behind the same address (a NAT, a proxy)
keeps working while someone else guesses.
"""

from __future__ import annotations

import datetime as dt
import hmac
import time

import msgspec
from sqlalchemy import func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane import errors
from control_plane.catalog.models import AdminApiKey
from control_plane.services.auth_throttle import FAILURES_PER_MINUTE, AuthThrottle, FailureThrottle
from control_plane.tokens import hash_token

REMEMBER_SECONDS = 5.0
_REMEMBER_AT_MOST = 1000  # keys remembered at once (then forgotten all together)
FORGET_WRONG_SECONDS = 5.0
_WRONG_AT_MOST = 10_000  # wrong digests remembered at once (then forgotten all together)
TRUSTED_SECONDS = 600.0
_TRUSTED_AT_MOST = 1000


class Principal(msgspec.Struct, frozen=True):
    """Who an admin token is: the audit actor and the key's scopes (control_plane/scopes.py)."""
    actor: str
    scopes: frozenset[str]


class AdminAuth:
    def __init__(self, sessions: async_sessionmaker, remember_seconds: float = REMEMBER_SECONDS, *,
                 failures_per_minute: int = FAILURES_PER_MINUTE, forget_wrong_seconds: float = FORGET_WRONG_SECONDS,
                 throttle: AuthThrottle | None = None) -> None:
        self.sessions = sessions
        self.remember_seconds = remember_seconds
        self.forget_wrong_seconds = forget_wrong_seconds
        self.throttle: AuthThrottle = throttle if throttle is not None else FailureThrottle(failures_per_minute)
        self._valid: dict[str, tuple[Principal, float]] = {}  # digest -> (key, valid until: time.monotonic())
        self._wrong: dict[str, float] = {}  # digest -> wrong until (time.monotonic())
        self._trusted: dict[str, float] = {}  # digest found valid -> passes the throttle until
        self.catalog_lookups = 0

    async def ensure_bootstrap_token(self, token: str, name: str = "bootstrap") -> None:
        digest = hash_token(token)
        self._valid.clear()  # a rotated key is forgotten here at once (other processes: REMEMBER_SECONDS)
        self._wrong.clear()  # and a token set here is accepted at once, even if it was tried before
        self._trust(digest)
        async with self.sessions() as session, session.begin():
            await session.execute(
                insert(AdminApiKey).values(name=name, token_sha256=digest, scopes=["admin"])
                .on_conflict_do_update(index_elements=[AdminApiKey.name],  # the bootstrap key: full rights
                                       set_={"token_sha256": digest, "revoked_at": None, "scopes": ["admin"],
                                             "expires_at": None}))

    def forget(self) -> None:
        """Drop the keys remembered as valid (a key was revoked here: refused at once in this process)."""
        self._valid.clear()

    async def authenticate(self, authorization: str | None, client: str | None = None) -> str:
        """The key's name (the audit actor) for a valid `Bearer <token>` header. `client` is the
        caller's address, whose failed attempts are counted."""
        return (await self.authenticate_key(authorization, client)).actor

    async def authenticate_key(self, authorization: str | None, client: str | None = None) -> Principal:
        """The key (its actor and scopes) for a valid `Bearer <token>` header."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 512:
            raise errors.Unauthorized("send Authorization: Bearer <admin token>")
        digest = hash_token(token)
        remembered = self._valid.get(digest)
        if remembered is not None and remembered[1] > time.monotonic():
            return remembered[0]
        address = client or "unknown"
        if self._trusted.get(digest, 0.0) > time.monotonic():
            attempt = self.throttle.unchecked(address)  # no guess: passes a throttled address
        else:
            attempt = await self.throttle.admit(address)  # raises TooManyFailedAttempts
        try:
            principal = await self._look_up(digest)
        except BaseException:  # the catalog is down, or the request went away: proved nothing
            self.throttle.release(attempt)
            raise
        if principal is None:
            self.throttle.failed(attempt)
            raise errors.Unauthorized("the admin token is not valid")
        self.throttle.release(attempt)
        return principal

    async def _look_up(self, digest: str) -> Principal | None:
        """The actor for `digest`, or None; a digest remembered as wrong is not looked up again, and
        the catalog's answer is remembered briefly either way."""
        until = self._wrong.get(digest)
        if until is not None:
            if until > time.monotonic():
                return None
            del self._wrong[digest]
        self.catalog_lookups += 1
        async with self.sessions() as session:
            row = (await session.execute(
                select(AdminApiKey.name, AdminApiKey.token_sha256, AdminApiKey.scopes, AdminApiKey.expires_at)
                .where(AdminApiKey.token_sha256 == digest, AdminApiKey.revoked_at.is_(None),
                       or_(AdminApiKey.expires_at.is_(None), AdminApiKey.expires_at > func.now())))).first()
        if row is None or not hmac.compare_digest(row.token_sha256, digest):
            self._valid.pop(digest, None)
            self._remember_wrong(digest)
            return None
        principal = Principal(actor=f"api-key:{row.name}", scopes=frozenset(row.scopes or ()))
        self._trust(digest)
        if self.remember_seconds > 0:
            if len(self._valid) >= _REMEMBER_AT_MOST:
                self._valid.clear()
            remember = self.remember_seconds
            if row.expires_at is not None:  # never past the key's expiry
                remember = min(remember, (row.expires_at - dt.datetime.now(dt.UTC)).total_seconds())
            self._valid[digest] = (principal, time.monotonic() + remember)
        return principal

    def _remember_wrong(self, digest: str) -> None:
        if self.forget_wrong_seconds <= 0:
            return
        if len(self._wrong) >= _WRONG_AT_MOST:
            self._wrong.clear()
        self._wrong[digest] = time.monotonic() + self.forget_wrong_seconds

    def _trust(self, digest: str) -> None:
        if len(self._trusted) >= _TRUSTED_AT_MOST:
            self._trusted.clear()
        self._trusted[digest] = time.monotonic() + TRUSTED_SECONDS
