"""Logins that cannot be used to lock out or enumerate, refresh rotation and scrypt password hashes (the tokens:
easysmart.identity; the account state every request checks: easysmart.accountstate).

Answers (docs/architecture.md §8):
- wrong password, unknown username, an account of the other kind, a blocked or an inactive account: the same
  401 after the same work (a password hash is checked in every case), so none of them can be told apart;
- more than LOGIN_RATELIMIT_PER_MINUTE attempts from one client address: 429 with Retry-After (Redis; Redis being
  down skips this limit, the database-backed counts below still hold);
- LOGIN_MAX_FAILURES failures of one (username, client address): that pair is locked for LOGIN_LOCKOUT_S, 429 with
  Retry-After; other addresses are unaffected and a success resets the count;
- LOGIN_USERNAME_MAX_FAILURES failures of one username from any address: each further failure makes the next
  attempt on it, from any address, wait 1 s, 2 s, 4 s ... at most LOGIN_THROTTLE_MAX_S (429 with Retry-After; the
  request never sleeps), so guesses spread over many addresses stay slow and the owner still gets in;
- failures are counted per username whether it exists or not: the 429s of a known and an unknown name are alike;
- a refresh token used twice: the same pair again within REFRESH_RETRY_S of its first use while that pair's
  refresh token is unused (a client retrying a lost answer), else 401 and every token of its family is revoked.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import math
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterator

import psycopg2.extensions

from easysmart import audit, passwordtokens
from easysmart.accountstate import ACCOUNT_REFUSED, AccountState, AccountStates, change_account
from easysmart.config import LoginSettings
from easysmart.db import Database, one_row
from easysmart.errors import (
    BadRequestError,
    EasySmartError,
    ForbiddenError,
    RateLimitedError,
    UnauthorizedError,
    UnprocessableError,
)
from easysmart.identity import ACCOUNT_KINDS, Principal, TokenService
from easysmart.metrics import AUTH_LOCKOUTS, AUTH_LOGINS, AUTH_REFRESH_REUSE, AUTH_REFRESHES
from easysmart.observability import request_id_var
from easysmart.ratelimit import Limit, RateLimiter

logger = logging.getLogger(__name__)

# --- passwords -------------------------------------------------------------------------------

# scrypt cost: ~50 ms and 16 MiB per hash on a small server; stored with each hash so it can grow.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _SCRYPT_DKLEN = 2**14, 8, 1, 32
_SCRYPT_MAXMEM = 64 * 1024 * 1024


def hash_password(password: str) -> str:
    """`scrypt$N$r$p$salt$key` (salt and key base64): self-describing, so parameters can change later."""
    salt = os.urandom(16)
    key = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, maxmem=_SCRYPT_MAXMEM, dklen=_SCRYPT_DKLEN
    )
    return (
        f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"
    )


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of a password against a stored hash; a malformed hash never matches."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key, validate=True)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


# Unknown usernames are checked against this so they cost as much time as known ones.
_DUMMY_HASH = hash_password(uuid.uuid4().hex)

# --- request bodies ----------------------------------------------------------------------------

_MAX_USERNAME = 256
# scrypt's cost grows with the input: a bound keeps a huge "password" from being a cheap attack.
_MAX_PASSWORD = 1024


def _string_field(body: object, name: str, max_length: int) -> str:
    if not isinstance(body, dict):
        raise BadRequestError(f"the body must be a JSON object with {name!r}", field=name)
    if name not in body:
        raise BadRequestError(f"{name}: required", field=name)
    value = body[name]
    if not isinstance(value, str):
        raise BadRequestError(f"{name}: must be a string, not {type(value).__name__}", field=name)
    if not value:
        raise BadRequestError(f"{name}: must not be empty", field=name)
    if len(value) > max_length:
        raise BadRequestError(f"{name}: longer than {max_length} characters", field=name)
    return value


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    @classmethod
    def from_body(cls, body: object) -> "Credentials":
        return cls(_string_field(body, "username", _MAX_USERNAME), _string_field(body, "password", _MAX_PASSWORD))


def refresh_token_from_body(body: object) -> str:
    return _string_field(body, "refresh_token", 8192)


# A password a user sets (set-password token, own change): at least this long; at most _MAX_PASSWORD.
MIN_NEW_PASSWORD = 10


def new_password_from_body(body: object, name: str) -> str:
    """The new password of a body, held to the policy (422 with its path)."""
    password = _string_field(body, name, _MAX_PASSWORD)
    if len(password) < MIN_NEW_PASSWORD:
        raise UnprocessableError(
            f"{name}: at least {MIN_NEW_PASSWORD} characters",
            paths=[f"$.{name}"],
            errors=[{"path": f"$.{name}", "message": f"at least {MIN_NEW_PASSWORD} characters"}],
        )
    return password


@dataclass(frozen=True)
class PasswordChange:
    old_password: str
    new_password: str

    @classmethod
    def from_body(cls, body: object) -> "PasswordChange":
        return cls(_string_field(body, "old_password", _MAX_PASSWORD), new_password_from_body(body, "new_password"))


@dataclass(frozen=True)
class PasswordSet:
    token: str
    password: str

    @classmethod
    def from_body(cls, body: object) -> "PasswordSet":
        return cls(_string_field(body, "token", 256), new_password_from_body(body, "password"))


# --- the service -------------------------------------------------------------------------------

_BAD_CREDENTIALS = "invalid username or password"
_REVOKED = "this refresh token was revoked; log in again"
# The row of login_failures that counts a username's failures from every address.
EVERY_ADDRESS = "*"
# A refresh token presented again this soon after its first use is a client retrying a lost answer.
REFRESH_RETRY_S = 30


@dataclass(frozen=True)
class _FailureCount:
    client_addr: str
    failures: int
    locked_until: datetime | None


class AuthService:
    """Logins, refresh-token rotation and who-am-I, on the accounts tables (migrations 0001, 0007).

    Lock times and refresh-token records are read at `tokens.clock`, the time the tokens are issued at. `limiter`
    holds the per-address login rate limit and `states` mirrors an account's state into Redis when it logs in (so
    its next request finds it there); without them neither happens.
    """

    def __init__(
        self,
        db: Database,
        tokens: TokenService,
        settings: LoginSettings,
        limiter: RateLimiter | None = None,
        states: AccountStates | None = None,
    ) -> None:
        self.db = db
        self.tokens = tokens
        self.settings = settings
        self.limiter = limiter
        self.states = states

    def login(self, credentials: Credentials, kind: str, client_addr: str, user_agent: str | None = None) -> dict:
        """Tokens for an account of `kind` ('device' or 'user') logging in from `client_addr`."""
        if kind not in ACCOUNT_KINDS:
            raise ValueError(f"kind must be one of {ACCOUNT_KINDS}, not {kind!r}")
        try:
            self._rate_limit(client_addr)
        except RateLimitedError:
            AUTH_LOGINS.labels("rate_limited").inc()
            raise
        with self._refusals_committed() as cursor:
            pair, state = self._attempt(cursor, credentials, kind, client_addr, user_agent)
        AUTH_LOGINS.labels("success").inc()
        self._mirror(state)
        return pair

    def _rate_limit(self, client_addr: str) -> None:
        if self.limiter is None:
            return
        limit = Limit("client address", f"login:{client_addr}", self.settings.login_ratelimit_per_minute)
        try:
            self.limiter.check([limit])
        except RateLimitedError as error:
            raise RateLimitedError(
                f"too many logins from this address; try again in {error.retry_after_s} s",
                retry_after_s=error.retry_after_s,
                headers=error.headers,
            ) from None

    def _mirror(self, state: AccountState) -> None:
        if self.states is not None:
            self.states.mirror(state)

    @contextlib.contextmanager
    def _refusals_committed(self) -> Iterator[psycopg2.extensions.cursor]:
        """A transaction that is committed when the block refuses the request too: a counted failure or a revoked
        session must outlast the refusal, which is raised after the commit."""
        refusal: EasySmartError | None = None
        with self.db.transaction() as cursor:
            try:
                yield cursor
            except EasySmartError as error:
                refusal = error
        if refusal is not None:
            raise refusal

    def _attempt(
        self,
        cursor: psycopg2.extensions.cursor,
        credentials: Credentials,
        kind: str,
        client_addr: str,
        user_agent: str | None,
    ) -> tuple[dict, AccountState]:
        now = self.tokens.clock()
        # Attempts on one username run one at a time (its every-address row is locked first, then the pair's),
        # so parallel guesses cannot outrun the counts.
        every = self._failure_count(cursor, credentials.username, EVERY_ADDRESS, now)
        pair = self._failure_count(cursor, credentials.username, client_addr, now)
        for count in (pair, every):
            if count.locked_until is not None and count.locked_until > now:
                AUTH_LOGINS.labels("locked" if count is pair else "throttled").inc()
                retry_after = max(1, math.ceil((count.locked_until - now).total_seconds()))
                raise RateLimitedError(
                    f"too many failed logins for this username; try again in {retry_after} s",
                    retry_after_s=retry_after,
                    headers={},
                )
        cursor.execute(
            "SELECT id, tenant_id, kind, password_hash, active, blocked, version, role, previous_password_hash,"
            " previous_password_expires_at FROM accounts WHERE username = %s AND deleted_at IS NULL",
            (credentials.username,),
        )
        row = cursor.fetchone()
        # The hash is checked whatever else is wrong, so every refusal costs the same time.
        password_matches = verify_password(credentials.password, row[3] if row else _DUMMY_HASH)
        grace_until = None
        if row is not None and not password_matches and row[8] is not None and row[9] > now:
            # A rotation with a grace period: the previous password works until it ends, and so do its sessions.
            password_matches = verify_password(credentials.password, row[8])
            grace_until = row[9]
        if row is None or not password_matches or row[2] != kind or not row[4] or row[5]:
            self._count_failure(cursor, credentials.username, pair, every, now)
            if row is not None:
                _audit_failed_login(
                    cursor, str(row[0]), str(row[1]), credentials.username, client_addr, user_agent, now
                )
            AUTH_LOGINS.labels("failure").inc()
            raise UnauthorizedError(_BAD_CREDENTIALS)
        account_id, tenant_id, _, _, active, blocked, version, role, _, _ = row
        cursor.execute("UPDATE accounts SET last_login_at = %s WHERE id = %s", (now, account_id))
        # Reset rather than delete: an attempt waiting on these rows' locks must still find them.
        cursor.execute(
            "UPDATE login_failures SET failures = 0, locked_until = NULL, updated_at = %s"
            " WHERE username = %s AND client_addr IN (%s, %s)",
            (now, credentials.username, EVERY_ADDRESS, client_addr),
        )
        principal = Principal(str(account_id), str(tenant_id), kind, credentials.username, int(version), role)
        logger.info("login", extra={"account_id": principal.account_id, "kind": kind, "client_addr": client_addr})
        # The first login of the (UTC) day writes the row; later ones only count on it.
        audit.record(
            cursor,
            principal,
            "login",
            kind,
            principal.account_id,
            {},
            request_id_var.get(),
            client_addr,
            user_agent,
            at=now,
            aggregate_key=f"login:{principal.account_id}:{now:%Y-%m-%d}",
        )
        pair_issued = self._issue(cursor, principal, uuid.uuid4(), now, grace_until)
        return pair_issued, AccountState(principal.account_id, int(version), bool(active), bool(blocked))

    @staticmethod
    def _failure_count(
        cursor: psycopg2.extensions.cursor, username: str, client_addr: str, now: datetime
    ) -> _FailureCount:
        cursor.execute(
            "INSERT INTO login_failures (username, client_addr, updated_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (username, client_addr, now),
        )
        cursor.execute(
            "SELECT failures, locked_until FROM login_failures WHERE username = %s AND client_addr = %s FOR UPDATE",
            (username, client_addr),
        )
        failures, locked_until = one_row(cursor)
        return _FailureCount(client_addr, failures, locked_until)

    def _count_failure(
        self,
        cursor: psycopg2.extensions.cursor,
        username: str,
        pair: _FailureCount,
        every: _FailureCount,
        now: datetime,
    ) -> None:
        settings = self.settings
        # A pair's lock that has run out starts a fresh count.
        pair_failures = 1 if pair.locked_until is not None else pair.failures + 1
        pair_lock = (
            now + timedelta(seconds=settings.login_lockout_s) if pair_failures >= settings.login_max_failures else None
        )
        every_failures = every.failures + 1
        every_lock = None
        if every_failures >= settings.login_username_max_failures:
            # 1 s, doubling with each further failure, at most LOGIN_THROTTLE_MAX_S (the exponent bounded first).
            doublings = min(every_failures - settings.login_username_max_failures, 32)
            every_lock = now + timedelta(seconds=min(settings.login_throttle_max_s, 2**doublings))
        for count, failures, lock in ((every, every_failures, every_lock), (pair, pair_failures, pair_lock)):
            cursor.execute(
                "UPDATE login_failures SET failures = %s, locked_until = %s, updated_at = %s"
                " WHERE username = %s AND client_addr = %s",
                (failures, lock, now, username, count.client_addr),
            )
        if pair_lock is not None:
            AUTH_LOCKOUTS.inc()
            logger.warning(
                "login locked for an address",
                extra={"username": username, "client_addr": pair.client_addr, "locked_until": pair_lock.isoformat()},
            )

    def _issue(
        self,
        cursor: psycopg2.extensions.cursor,
        principal: Principal,
        family_id: uuid.UUID,
        now: datetime,
        grace_until: datetime | None = None,
    ) -> dict:
        jti = uuid.uuid4()
        expires = now + timedelta(seconds=self.tokens.refresh_ttl_s(principal.kind))
        cursor.execute(
            "INSERT INTO refresh_tokens (jti, account_id, family_id, expires_at, grace_until)"
            " VALUES (%s, %s, %s, %s, %s)",
            (jti, principal.account_id, family_id, expires, grace_until),
        )
        return self.tokens.issue_pair(principal, jti.hex, issued_at=int(now.timestamp()))

    def refresh(self, refresh_token: str) -> dict:
        """A new pair for a valid, unused refresh token, which is used up; a reused one ends its family unless it is
        a retry within REFRESH_RETRY_S, which answers the pair its first use answered."""
        try:
            jti = self.tokens.verify_refresh(refresh_token)
            with self._refusals_committed() as cursor:
                pair, state = self._rotate(cursor, jti)
        except UnauthorizedError:
            AUTH_REFRESHES.labels("failure").inc()
            raise
        AUTH_REFRESHES.labels("success").inc()
        self._mirror(state)
        return pair

    def _rotate(self, cursor: psycopg2.extensions.cursor, jti: uuid.UUID) -> tuple[dict, AccountState]:
        cursor.execute(
            "SELECT r.family_id, r.used_at, r.revoked, r.successor_jti, r.grace_until,"
            " a.id, a.tenant_id, a.username, a.kind, a.active, a.blocked, a.version, a.role"
            " FROM refresh_tokens r JOIN accounts a ON a.id = r.account_id WHERE r.jti = %s FOR UPDATE OF r",
            (jti,),
        )
        row = cursor.fetchone()
        if row is None:
            raise UnauthorizedError("unknown refresh token; log in again")
        (
            family_id,
            used_at,
            revoked,
            successor_jti,
            grace_until,
            account_id,
            tenant_id,
            username,
            kind,
            active,
            blocked,
            version,
            role,
        ) = row
        # The role is read anew: a refresh after a role change carries the new one.
        principal = Principal(str(account_id), str(tenant_id), kind, username, int(version), role)
        state = AccountState(principal.account_id, int(version), bool(active), bool(blocked))
        now = self.tokens.clock()
        if used_at is not None:
            if not revoked and state.usable and self._retry_of_lost_answer(cursor, used_at, successor_jti, now):
                # The same claims signed again (HS256 is deterministic): the very pair the first use answered. Nothing
                # is stored for it but the successor's jti; the retry gets no more than the first answer gave.
                return self.tokens.issue_pair(principal, successor_jti.hex, issued_at=int(used_at.timestamp())), state
            # A refresh token presented twice may have been stolen: end the whole family.
            cursor.execute("UPDATE refresh_tokens SET revoked = true WHERE family_id = %s", (family_id,))
            AUTH_REFRESH_REUSE.inc()
            logger.warning("refresh token reused; family revoked", extra={"account_id": str(account_id)})
            raise UnauthorizedError("this refresh token was already used; its session is revoked, log in again")
        if revoked or not state.usable or (grace_until is not None and grace_until <= now):
            raise UnauthorizedError(_REVOKED)
        successor = uuid.uuid4()
        cursor.execute(
            "UPDATE refresh_tokens SET used_at = %s, successor_jti = %s WHERE jti = %s", (now, successor, jti)
        )
        expires = now + timedelta(seconds=self.tokens.refresh_ttl_s(kind))
        cursor.execute(
            "INSERT INTO refresh_tokens (jti, account_id, family_id, expires_at, grace_until)"
            " VALUES (%s, %s, %s, %s, %s)",
            (successor, account_id, family_id, expires, grace_until),
        )
        return self.tokens.issue_pair(principal, successor.hex, issued_at=int(now.timestamp())), state

    @staticmethod
    def _retry_of_lost_answer(
        cursor: psycopg2.extensions.cursor, used_at: datetime, successor_jti: uuid.UUID | None, now: datetime
    ) -> bool:
        """Within REFRESH_RETRY_S of the first use, and only while the pair it answered is unused and unrevoked:
        once that refresh token has been used, the client evidently got the answer."""
        if successor_jti is None or now - used_at > timedelta(seconds=REFRESH_RETRY_S):
            return False
        cursor.execute("SELECT used_at, revoked FROM refresh_tokens WHERE jti = %s", (successor_jti,))
        successor = cursor.fetchone()
        return successor is not None and successor[0] is None and not successor[1]

    def me(self, principal: Principal) -> dict:
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT a.username, a.kind, a.active, a.blocked, a.version, t.id, t.name, t.timezone, a.role"
                " FROM accounts a JOIN tenants t ON t.id = a.tenant_id WHERE a.id = %s",
                (principal.account_id,),
            )
            row = cursor.fetchone()
        if row is None:
            raise UnauthorizedError("the token's account no longer exists")
        username, kind, active, blocked, version, tenant_id, tenant_name, zone, role = row
        if not AccountState(principal.account_id, int(version), active, blocked).admits(principal):
            raise UnauthorizedError(ACCOUNT_REFUSED)
        return {
            "account_id": principal.account_id,
            "username": username,
            "kind": kind,
            "active": active,
            "blocked": blocked,
            "tenant_id": str(tenant_id),
            "tenant_name": tenant_name,
            "timezone": zone,
            "role": role,
        }

    def set_password(self, request: PasswordSet, client_addr: str, user_agent: str | None = None) -> dict:
        """Redeems a one-time set-password token (easysmart.passwordtokens): the account's password is set, every
        token it had is refused from its next request on. 401 for a token that is unknown, used or expired."""
        self._rate_limit(client_addr)
        password_hash = hash_password(request.password)
        now = self.tokens.clock()
        with self.db.transaction() as cursor:
            account_id = passwordtokens.redeem(cursor, request.token, now)
            if account_id is None:
                raise UnauthorizedError("this set-password token is unknown, used or expired; ask for a new one")
            state = change_account(cursor, account_id=account_id, password_hash=password_hash)
            cursor.execute("SELECT tenant_id, username FROM accounts WHERE id = %s", (account_id,))
            tenant_id, username = one_row(cursor)
            audit.record(
                cursor,
                None,
                "user.password_set",
                "user",
                account_id,
                {},
                request_id_var.get(),
                client_addr,
                user_agent,
                tenant_id=str(tenant_id),
                actor_name=username,
            )
        self._mirror_if(state)
        return {"account_id": account_id, "username": username}

    def change_password(
        self, principal: Principal, change: PasswordChange, client_addr: str, user_agent: str | None = None
    ) -> dict:
        """A user's own password change, the old password required: every refresh token of the account is revoked
        and its version bumped (every session ends); the answer is a new pair for this one."""
        if principal.kind != "user":
            raise ForbiddenError("devices get a new password from an admin (rotate); log in as a user")
        self._rate_limit(client_addr)
        new_hash = hash_password(change.new_password)
        with self._refusals_committed() as cursor:
            cursor.execute(
                "SELECT password_hash, role FROM accounts WHERE id = %s AND active AND NOT blocked FOR UPDATE",
                (principal.account_id,),
            )
            row = cursor.fetchone()
            if row is None:
                raise UnauthorizedError(ACCOUNT_REFUSED)
            if not verify_password(change.old_password, row[0]):
                raise ForbiddenError("old_password: not the account's password", path="$.old_password")
            state = change_account(cursor, account_id=principal.account_id, password_hash=new_hash)
            assert state is not None
            audit.record(
                cursor,
                principal,
                "user.password_change",
                "user",
                principal.account_id,
                {},
                request_id_var.get(),
                client_addr,
                user_agent,
            )
            renewed = Principal(
                principal.account_id, principal.tenant_id, "user", principal.username, state.version, row[1]
            )
            pair = self._issue(cursor, renewed, uuid.uuid4(), self.tokens.clock())
        self._mirror(state)
        return pair

    def _mirror_if(self, state: AccountState | None) -> None:
        if state is not None:
            self._mirror(state)


# Failed logins of one account from one address within a minute share one audit row (its details count them):
# with the login limits above (per address, per pair, per username) an attacker's guesses cost at most one row per
# account, address and minute. Unknown usernames are not audited (no tenant to show them to; the logs have them).
def _audit_failed_login(
    cursor: psycopg2.extensions.cursor,
    account_id: str,
    tenant_id: str,
    username: str,
    client_addr: str,
    user_agent: str | None,
    now: datetime,
) -> None:
    audit.record(
        cursor,
        None,
        "login.failed",
        "account",
        account_id,
        {"username": username},
        request_id_var.get(),
        client_addr,
        user_agent,
        tenant_id=tenant_id,
        actor_name="anonymous",
        at=now,
        aggregate_key=f"login.failed:{account_id}:{client_addr}:{now:%Y-%m-%dT%H:%M}",
    )


def prune_login_records(db: Database, now: datetime, lockout_s: int) -> dict:
    """Deletes refresh tokens past their expiry (no longer usable, so no longer needed to detect a reuse) and login
    failure counts untouched for longer than the lockout (any lock of theirs has run out)."""
    with db.transaction() as cursor:
        cursor.execute("DELETE FROM refresh_tokens WHERE expires_at <= %s", (now,))
        refresh_tokens = cursor.rowcount
        cursor.execute(
            "DELETE FROM login_failures WHERE updated_at < %s AND (locked_until IS NULL OR locked_until <= %s)",
            (now - timedelta(seconds=lockout_s), now),
        )
        login_failures = cursor.rowcount
        set_password_tokens = passwordtokens.prune(cursor, now)
    return {
        "refresh_tokens_pruned": refresh_tokens,
        "login_failures_pruned": login_failures,
        "set_password_tokens_pruned": set_password_tokens,
    }
