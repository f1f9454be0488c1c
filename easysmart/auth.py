"""Authentication: scrypt password hashes, JWTs, logins with per-address lockout, refresh rotation."""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Mapping

import jwt

from easysmart.config import Settings
from easysmart.db import Database
from easysmart.errors import BadRequestError, ForbiddenError, LockedError, UnauthorizedError

logger = logging.getLogger(__name__)

# scrypt cost: ~50 ms and 16 MiB per hash on this class of machine.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_REQUIRED_CLAIMS = ["sub", "tenant", "acct", "type", "iat", "exp", "jti", "iss", "aud"]
ACCOUNT_KINDS = ("device", "user")


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return "scrypt${}${}${}${}${}".format(_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, base64.b64encode(salt).decode(), base64.b64encode(key).decode())


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# Unknown usernames are checked against this so they cost as much time as known ones.
_DUMMY_HASH = hash_password(uuid.uuid4().hex)


@dataclass(frozen=True)
class Principal:
    account_id: str
    tenant_id: str
    kind: str
    username: str | None = None


class TokenService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _encode(self, principal: Principal, token_type: str, ttl_s: int, jti: str | None = None) -> tuple[str, str]:
        now = int(time.time())
        jti = jti or uuid.uuid4().hex
        claims = {
            "sub": principal.account_id, "tenant": principal.tenant_id, "acct": principal.kind, "type": token_type,
            "iat": now, "exp": now + ttl_s, "jti": jti, "iss": self.settings.jwt_issuer, "aud": self.settings.jwt_audience,
        }
        if principal.username:
            claims["username"] = principal.username
        return jwt.encode(claims, self.settings.jwt_secret, algorithm="HS256"), jti

    def access_token(self, principal: Principal) -> str:
        return self._encode(principal, "access", self.settings.access_token_ttl_s)[0]

    def refresh_ttl_s(self, kind: str) -> int:
        return self.settings.device_refresh_ttl_s if kind == "device" else self.settings.user_refresh_ttl_s

    def refresh_token(self, principal: Principal, jti: str) -> str:
        return self._encode(principal, "refresh", self.refresh_ttl_s(principal.kind), jti)[0]

    def decode(self, token: str, expected_type: str) -> dict:
        try:
            claims = jwt.decode(
                token, self.settings.jwt_secret, algorithms=["HS256"], audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer, options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthorizedError("the token has expired") from None
        except jwt.InvalidTokenError as error:
            raise UnauthorizedError(f"the token is not valid: {error}") from None
        if claims.get("type") != expected_type:
            raise UnauthorizedError(f"a {claims.get('type')} token cannot be used as an {expected_type} token")
        if claims.get("acct") not in ACCOUNT_KINDS:
            raise UnauthorizedError("the token names no known account type")
        return claims

    def verify_access(self, token: str) -> Principal:
        claims = self.decode(token, "access")
        return Principal(str(claims["sub"]), str(claims["tenant"]), claims["acct"], claims.get("username"))


def bearer_principal(headers: Mapping[str, str], tokens: TokenService) -> Principal:
    header = headers.get("Authorization") or ""
    scheme, _, token = header.partition(" ")
    if not header:
        raise UnauthorizedError("missing Authorization header; send 'Authorization: Bearer <access token>'")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("the Authorization header must be 'Bearer <access token>'")
    return tokens.verify_access(token.strip())


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    @classmethod
    def from_body(cls, body: object) -> "Credentials":
        if not isinstance(body, dict):
            raise BadRequestError("the body must be a JSON object with username and password")
        for name in ("username", "password"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise BadRequestError(f"{name}: required, a non-empty string", field=name)
        return cls(body["username"], body["password"])


class AuthService:
    def __init__(self, db: Database, tokens: TokenService, settings: Settings) -> None:
        self.db = db
        self.tokens = tokens
        self.settings = settings

    def login(self, credentials: Credentials, kind: str, client_addr: str) -> dict:
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT a.id, a.tenant_id, a.kind, a.password_hash, a.active, a.blocked, f.failures, f.locked_until"
                " FROM accounts a LEFT JOIN login_failures f ON f.account_id = a.id AND f.client_addr = %s"
                " WHERE a.username = %s FOR UPDATE OF a",
                (client_addr, credentials.username),
            )
            row = cursor.fetchone()
            if row is None:
                verify_password(credentials.password, _DUMMY_HASH)
                raise UnauthorizedError("invalid username or password")
            account_id, tenant_id, account_kind, password_hash, active, blocked, failures, locked_until = row
            now = datetime.now(timezone.utc)
            if locked_until is not None and locked_until > now:
                retry = int((locked_until - now).total_seconds()) + 1
                raise LockedError(f"too many failed logins from this address; try again in {retry} s", retry_after_s=retry)
            if not verify_password(credentials.password, password_hash) or account_kind != kind:
                self._count_failure(cursor, account_id, client_addr, failures or 0, locked_until, now)
                raise UnauthorizedError("invalid username or password")
            cursor.execute("DELETE FROM login_failures WHERE account_id = %s AND client_addr = %s", (account_id, client_addr))
            if blocked or not active:
                raise ForbiddenError("this account is blocked or inactive")
            principal = Principal(str(account_id), str(tenant_id), account_kind, credentials.username)
            return self._issue(cursor, principal, family_id=uuid.uuid4())

    def _count_failure(self, cursor, account_id, client_addr: str, failures: int, locked_until, now: datetime) -> None:
        # A lock that has run out starts a fresh count.
        failures = 1 if locked_until is not None else failures + 1
        lock = now + timedelta(seconds=self.settings.login_lockout_s) if failures >= self.settings.login_max_failures else None
        cursor.execute(
            "INSERT INTO login_failures (account_id, client_addr, failures, locked_until, updated_at)"
            " VALUES (%s, %s, %s, %s, now()) ON CONFLICT (account_id, client_addr)"
            " DO UPDATE SET failures = EXCLUDED.failures, locked_until = EXCLUDED.locked_until, updated_at = now()",
            (account_id, client_addr, failures, lock),
        )
        if lock is not None:
            logger.warning("login locked", extra={"account_id": str(account_id), "client_addr": client_addr})
        # The failure must be recorded even though the caller raises: commit it now.
        cursor.connection.commit()

    def _issue(self, cursor, principal: Principal, family_id: uuid.UUID) -> dict:
        jti = uuid.uuid4()
        expires = datetime.now(timezone.utc) + timedelta(seconds=self.tokens.refresh_ttl_s(principal.kind))
        cursor.execute(
            "INSERT INTO refresh_tokens (jti, account_id, family_id, expires_at) VALUES (%s, %s, %s, %s)",
            (jti, principal.account_id, family_id, expires),
        )
        return {
            "access_token": self.tokens.access_token(principal),
            "refresh_token": self.tokens.refresh_token(principal, jti.hex),
            "token_type": "bearer",
            "expires_in": self.settings.access_token_ttl_s,
            "refresh_expires_in": self.tokens.refresh_ttl_s(principal.kind),
            "account_type": principal.kind,
        }

    def refresh(self, body: object) -> dict:
        token = body.get("refresh_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise BadRequestError("refresh_token: required, a non-empty string", field="refresh_token")
        claims = self.tokens.decode(token, "refresh")
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT r.family_id, r.used_at, r.revoked, a.active, a.blocked, a.username, a.kind"
                " FROM refresh_tokens r JOIN accounts a ON a.id = r.account_id WHERE r.jti = %s FOR UPDATE OF r",
                (uuid.UUID(hex=claims["jti"]),),
            )
            row = cursor.fetchone()
            if row is None:
                raise UnauthorizedError("unknown refresh token")
            family_id, used_at, revoked, active, blocked, username, kind = row
            if used_at is not None or revoked:
                # A reused refresh token may be stolen: end the whole family.
                cursor.execute("UPDATE refresh_tokens SET revoked = true WHERE family_id = %s", (family_id,))
                cursor.connection.commit()
                raise UnauthorizedError("this refresh token was already used; log in again")
            if blocked or not active:
                raise ForbiddenError("this account is blocked or inactive")
            cursor.execute("UPDATE refresh_tokens SET used_at = now() WHERE jti = %s", (uuid.UUID(hex=claims["jti"]),))
            principal = Principal(str(claims["sub"]), str(claims["tenant"]), kind, username)
            return self._issue(cursor, principal, family_id)

    def me(self, principal: Principal) -> dict:
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT a.username, a.kind, a.active, a.blocked, t.id, t.name, t.timezone FROM accounts a"
                " JOIN tenants t ON t.id = a.tenant_id WHERE a.id = %s",
                (principal.account_id,),
            )
            row = cursor.fetchone()
        if row is None:
            raise UnauthorizedError("the account no longer exists")
        username, kind, active, blocked, tenant_id, tenant_name, zone = row
        return {"account_id": principal.account_id, "username": username, "kind": kind, "active": active,
                "blocked": blocked, "tenant_id": str(tenant_id), "tenant_name": tenant_name, "timezone": zone}
