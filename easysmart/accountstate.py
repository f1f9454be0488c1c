"""Per-account state that takes effect on an account's next request: blocked, active and a version.

The database is the truth (`accounts.blocked`, `active`, `version`); Redis holds a copy per account
(`account:<id>`) that ingest reads in the rate limiter's round trip and analytics in one HGETALL.
Every change of an account (block, unblock, deactivation, password, role) bumps the
version; access tokens carry the version they were issued at (`ver`), so a token issued before a
change is refused (401) on its next request, as is any token of a blocked or inactive account.

- Redis up, copy present: no database work.
- Redis up, no copy (first request, or expired): the database row, then the copy is written.
- Redis down: the database row, kept in the process for at most `cache_s` (5 s).
A copy is written only if it is not older than the one in Redis (a Lua compare-and-set on the version),
so a request that read the database before a change cannot overwrite the change's copy. Copies expire
after STATE_TTL_S, which bounds how long a change that never reached Redis (Redis down at the time, or
restored from an older snapshot) goes unseen; `esm account ...` says when the write failed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Mapping

import psycopg2.extensions
import redis

from easysmart.clock import MonotonicClock
from easysmart.db import Database
from easysmart.errors import UnauthorizedError
from easysmart.identity import Principal, TokenService, bearer_principal
from easysmart.observability import tenant_id_var
from easysmart.ratelimit import BudgetCheck, Limit, RateLimiter

logger = logging.getLogger(__name__)

STATE_TTL_S = 300
DB_CACHE_S = 5.0
# The process-local cache of database reads (Redis down) is emptied past this many accounts.
_DB_CACHE_MAX = 10000
ACCOUNT_REFUSED = "this token's account is blocked, inactive or changed since the token was issued; log in again"

_MIRROR_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version'))
if current and current > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'active', ARGV[2], 'blocked', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


@dataclass(frozen=True)
class AccountState:
    """What authorisation needs to know of an account beyond its token (its role is in the token, and a role
    change bumps the version)."""

    account_id: str
    version: int
    active: bool
    blocked: bool

    @property
    def usable(self) -> bool:
        return self.active and not self.blocked

    def admits(self, principal: Principal) -> bool:
        return self.usable and principal.version >= self.version

    @classmethod
    def from_fields(cls, account_id: str, fields: dict) -> AccountState:
        def field(name: str) -> str:
            value = fields[name.encode()]
            return value.decode() if isinstance(value, bytes) else str(value)

        return cls(account_id, int(field("version")), field("active") == "1", field("blocked") == "1")


def state_key(account_id: str) -> str:
    return f"account:{account_id}"


def read_state(cursor: psycopg2.extensions.cursor, account_id: str) -> AccountState | None:
    cursor.execute("SELECT version, active, blocked FROM accounts WHERE id = %s", (account_id,))
    row = cursor.fetchone()
    return AccountState(account_id, int(row[0]), bool(row[1]), bool(row[2])) if row else None


def change_account(
    cursor: psycopg2.extensions.cursor,
    username: str | None = None,
    *,
    account_id: str | None = None,
    blocked: bool | None = None,
    active: bool | None = None,
    password_hash: str | None = None,
    role: str | None = None,
) -> AccountState | None:
    """Applies a change to the account `username` (or `account_id`; None: no such account) and bumps its version.

    An account that can no longer be used, or whose password changed, loses every refresh token at once. A role
    travels in the access token: the bump refuses tokens carrying the old one, so the client refreshes (the refresh
    reads the role anew)."""
    key_column, key = ("username", username) if account_id is None else ("id", account_id)
    cursor.execute(
        "UPDATE accounts SET blocked = coalesce(%s, blocked), active = coalesce(%s, active),"
        " password_hash = coalesce(%s, password_hash), role = coalesce(%s, role), version = version + 1,"
        f" updated_at = now() WHERE {key_column} = %s RETURNING id, version, active, blocked",
        (blocked, active, password_hash, role, key),
    )
    row = cursor.fetchone()
    if row is None:
        return None
    state = AccountState(str(row[0]), int(row[1]), bool(row[2]), bool(row[3]))
    if not state.usable or password_hash is not None:
        cursor.execute(
            "UPDATE refresh_tokens SET revoked = true WHERE account_id = %s AND NOT revoked", (state.account_id,)
        )
    if password_hash is not None:
        # A new password also ends the grace period of a rotation (easysmart.admin.devices).
        cursor.execute(
            "UPDATE accounts SET previous_password_hash = NULL, previous_password_expires_at = NULL WHERE id = %s",
            (state.account_id,),
        )
    return state


class AccountStates:
    """Reads (and mirrors into Redis) the state of accounts, and refuses tokens their account no longer admits."""

    def __init__(
        self,
        db: Database,
        client: redis.Redis | None,
        monotonic: MonotonicClock = time.monotonic,
        cache_s: float = DB_CACHE_S,
    ) -> None:
        self.db = db
        self.client = client
        self.monotonic = monotonic
        self.cache_s = cache_s
        self._cache: dict[str, tuple[AccountState | None, float]] = {}
        self._lock = threading.Lock()

    def principal(self, headers: Mapping[str, str], tokens: TokenService) -> Principal:
        """The principal of a request's bearer token once its account admits it; the logs then name its tenant."""
        principal = bearer_principal(headers, tokens)
        self.check(principal)
        tenant_id_var.set(principal.tenant_id)
        return principal

    def check(self, principal: Principal) -> None:
        """401 unless the principal's account admits its token (one Redis read, or the database)."""
        fields: dict | None = None
        if self.client is not None:
            try:
                fields = self.client.hgetall(state_key(principal.account_id))
            except redis.RedisError as error:
                logger.warning("account state read from the database, Redis unavailable: %s", error)
        self._refuse_unless_admitted(principal, fields)

    def admit(
        self,
        principal: Principal,
        limiter: RateLimiter,
        limits: list[Limit],
        budget_check: BudgetCheck | None = None,
    ) -> dict[str, str]:
        """check(), the rate limits and (with budget_check) the decompression budget in one Redis round trip, refusing
        in that order; the RateLimit-* headers."""
        return limiter.check_and_read(
            limits,
            state_key(principal.account_id),
            lambda fields: self._refuse_unless_admitted(principal, fields),
            budget_check,
        )

    def _refuse_unless_admitted(self, principal: Principal, fields: dict | None) -> None:
        """`fields`: the Redis copy ({} when there is none), or None when Redis could not be read."""
        if fields:
            state: AccountState | None = AccountState.from_fields(principal.account_id, fields)
        elif fields is None:
            state = self._cached_database_state(principal.account_id)
        else:
            state = self._database_state(principal.account_id)
            if state is not None:
                self.mirror(state)
        if state is None or not state.admits(principal):
            raise UnauthorizedError(ACCOUNT_REFUSED)

    def _database_state(self, account_id: str) -> AccountState | None:
        with self.db.transaction() as cursor:
            return read_state(cursor, account_id)

    def _cached_database_state(self, account_id: str) -> AccountState | None:
        now = self.monotonic()
        with self._lock:
            cached = self._cache.get(account_id)
        if cached is not None and now - cached[1] < self.cache_s:
            return cached[0]
        state = self._database_state(account_id)
        with self._lock:
            if len(self._cache) >= _DB_CACHE_MAX:
                self._cache.clear()
            self._cache[account_id] = (state, now)
        return state

    def mirror(self, state: AccountState) -> bool:
        return self.client is not None and mirror_state(self.client, state)


def mirror_state(client: redis.Redis, state: AccountState) -> bool:
    """Writes the Redis copy of `state` unless Redis holds a newer one; False when Redis could not be written."""
    try:
        client.register_script(_MIRROR_SCRIPT)(
            keys=[state_key(state.account_id)], args=[state.version, int(state.active), int(state.blocked), STATE_TTL_S]
        )
    except redis.RedisError as error:
        logger.warning("account state not written to Redis: %s", error, extra={"account_id": state.account_id})
        return False
    return True
