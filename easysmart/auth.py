"""Logins with per-address lockout, refresh rotation and scrypt password hashes (the tokens: easysmart.identity).

Answers (docs/architecture.md §8):
- wrong password, unknown username, or an account of the other kind at a login route: 401, one message;
- five consecutive failures for one (account, client address): that pair is locked, 423 with Retry-After;
  other addresses are unaffected and a success resets the count;
- a blocked or inactive account presenting the right password or a valid refresh token: 403;
- a refresh token used twice: 401, and every token of its family is revoked.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterator

import psycopg2.extensions

from easysmart.config import LoginSettings
from easysmart.db import Database, one_row
from easysmart.errors import BadRequestError, EasySmartError, ForbiddenError, LockedError, UnauthorizedError
from easysmart.identity import ACCOUNT_KINDS, Principal, TokenService

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


# --- the service -------------------------------------------------------------------------------

_BAD_CREDENTIALS = "invalid username or password"


class AuthService:
    """Logins, refresh-token rotation and who-am-I, on the accounts tables of migration 0001.

    Lock times and refresh-token records are read at `tokens.clock`, the time the tokens are issued at.
    """

    def __init__(self, db: Database, tokens: TokenService, settings: LoginSettings) -> None:
        self.db = db
        self.tokens = tokens
        self.settings = settings

    def login(self, credentials: Credentials, kind: str, client_addr: str) -> dict:
        """Tokens for an account of `kind` ('device' or 'user') logging in from `client_addr`."""
        if kind not in ACCOUNT_KINDS:
            raise ValueError(f"kind must be one of {ACCOUNT_KINDS}, not {kind!r}")
        with self._refusals_committed() as cursor:
            return self._attempt(cursor, credentials, kind, client_addr)

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
        self, cursor: psycopg2.extensions.cursor, credentials: Credentials, kind: str, client_addr: str
    ) -> dict:
        cursor.execute(
            "SELECT id, tenant_id, kind, password_hash, active, blocked FROM accounts WHERE username = %s",
            (credentials.username,),
        )
        row = cursor.fetchone()
        if row is None:
            verify_password(credentials.password, _DUMMY_HASH)
            raise UnauthorizedError(_BAD_CREDENTIALS)
        account_id, tenant_id, account_kind, password_hash, active, blocked = row
        # Attempts for one (account, address) run one at a time, so parallel guesses cannot outrun the lock.
        cursor.execute(
            "INSERT INTO login_failures (account_id, client_addr) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (account_id, client_addr),
        )
        cursor.execute(
            "SELECT failures, locked_until FROM login_failures WHERE account_id = %s AND client_addr = %s FOR UPDATE",
            (account_id, client_addr),
        )
        failures, locked_until = one_row(cursor)
        now = self.tokens.clock()
        if locked_until is not None and locked_until > now:
            retry_after = int((locked_until - now).total_seconds()) + 1
            raise LockedError(
                f"too many failed logins for this account from this address; try again in {retry_after} s",
                retry_after_s=retry_after,
            )
        if not verify_password(credentials.password, password_hash) or account_kind != kind:
            self._count_failure(cursor, account_id, client_addr, failures, locked_until, now)
            raise UnauthorizedError(_BAD_CREDENTIALS)
        # Reset rather than delete: an attempt waiting on this row's lock must still find it.
        cursor.execute(
            "UPDATE login_failures SET failures = 0, locked_until = NULL, updated_at = %s"
            " WHERE account_id = %s AND client_addr = %s",
            (now, account_id, client_addr),
        )
        if blocked or not active:
            raise _refused(blocked)
        principal = Principal(str(account_id), str(tenant_id), account_kind, credentials.username)
        logger.info("login", extra={"account_id": principal.account_id, "kind": kind, "client_addr": client_addr})
        return self._issue(cursor, principal, family_id=uuid.uuid4())

    def _count_failure(
        self,
        cursor: psycopg2.extensions.cursor,
        account_id: uuid.UUID,
        client_addr: str,
        failures: int,
        locked_until: datetime | None,
        now: datetime,
    ) -> None:
        # A lock that has run out starts a fresh count.
        failures = 1 if locked_until is not None else failures + 1
        lock = (
            now + timedelta(seconds=self.settings.login_lockout_s)
            if failures >= self.settings.login_max_failures
            else None
        )
        cursor.execute(
            "UPDATE login_failures SET failures = %s, locked_until = %s, updated_at = %s"
            " WHERE account_id = %s AND client_addr = %s",
            (failures, lock, now, account_id, client_addr),
        )
        if lock is not None:
            logger.warning(
                "login locked",
                extra={"account_id": str(account_id), "client_addr": client_addr, "locked_until": lock.isoformat()},
            )

    def _issue(self, cursor: psycopg2.extensions.cursor, principal: Principal, family_id: uuid.UUID) -> dict:
        jti = uuid.uuid4()
        expires = self.tokens.clock() + timedelta(seconds=self.tokens.refresh_ttl_s(principal.kind))
        cursor.execute(
            "INSERT INTO refresh_tokens (jti, account_id, family_id, expires_at) VALUES (%s, %s, %s, %s)",
            (jti, principal.account_id, family_id, expires),
        )
        return self.tokens.issue_pair(principal, jti.hex)

    def refresh(self, refresh_token: str) -> dict:
        """A new pair for a valid, unused refresh token, which is used up; a reused one ends its family."""
        jti = self.tokens.verify_refresh(refresh_token)
        with self._refusals_committed() as cursor:
            return self._rotate(cursor, jti)

    def _rotate(self, cursor: psycopg2.extensions.cursor, jti: uuid.UUID) -> dict:
        cursor.execute(
            "SELECT r.family_id, r.used_at, r.revoked, a.id, a.tenant_id, a.username, a.kind, a.active, a.blocked"
            " FROM refresh_tokens r JOIN accounts a ON a.id = r.account_id WHERE r.jti = %s FOR UPDATE OF r",
            (jti,),
        )
        row = cursor.fetchone()
        if row is None:
            raise UnauthorizedError("unknown refresh token; log in again")
        family_id, used_at, revoked, account_id, tenant_id, username, kind, active, blocked = row
        if used_at is not None:
            # A refresh token presented twice may have been stolen: end the whole family.
            cursor.execute("UPDATE refresh_tokens SET revoked = true WHERE family_id = %s", (family_id,))
            logger.warning("refresh token reused; family revoked", extra={"account_id": str(account_id)})
            raise UnauthorizedError("this refresh token was already used; its session is revoked, log in again")
        if blocked or not active:
            raise _refused(blocked)
        if revoked:
            raise UnauthorizedError("this refresh token was revoked; log in again")
        cursor.execute("UPDATE refresh_tokens SET used_at = %s WHERE jti = %s", (self.tokens.clock(), jti))
        return self._issue(cursor, Principal(str(account_id), str(tenant_id), kind, username), family_id)

    def me(self, principal: Principal) -> dict:
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT a.username, a.kind, a.active, a.blocked, t.id, t.name, t.timezone FROM accounts a"
                " JOIN tenants t ON t.id = a.tenant_id WHERE a.id = %s",
                (principal.account_id,),
            )
            row = cursor.fetchone()
        if row is None:
            raise UnauthorizedError("the token's account no longer exists")
        username, kind, active, blocked, tenant_id, tenant_name, zone = row
        return {
            "account_id": principal.account_id,
            "username": username,
            "kind": kind,
            "active": active,
            "blocked": blocked,
            "tenant_id": str(tenant_id),
            "tenant_name": tenant_name,
            "timezone": zone,
        }


def _refused(blocked: bool) -> ForbiddenError:
    if blocked:
        return ForbiddenError("this account is blocked; ask an administrator to unblock it", reason="blocked")
    return ForbiddenError("this account is inactive", reason="inactive")
