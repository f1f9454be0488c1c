"""Identity: who a request speaks for (a Principal) and the signed tokens that carry it.

Every function that checks a bearer token imports this module; logins, passwords and refresh
rotation live in `easysmart.auth`, which only the auth function needs.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping

import jwt

from easysmart.clock import Clock, utc_now
from easysmart.config import ConfigError, TokenSettings
from easysmart.errors import UnauthorizedError

ACCOUNT_KINDS = ("device", "user")

_REQUIRED_CLAIMS = ["sub", "tenant", "acct", "type", "iat", "exp", "jti", "iss", "aud"]
_JWT_MESSAGES = {
    jwt.InvalidSignatureError: "the token's signature is not valid",
    jwt.InvalidAlgorithmError: "the token's algorithm is not accepted (only HS256)",
    jwt.InvalidAudienceError: "the token was issued for another audience",
    jwt.InvalidIssuerError: "the token was issued by another issuer",
}


@dataclass(frozen=True)
class Principal:
    """Who a verified access token speaks for."""

    account_id: str
    tenant_id: str
    kind: str
    username: str | None = None
    # The account's version when the token was issued (easysmart.accountstate): a token older than the
    # account's current version is refused.
    version: int = 1
    # A user's role in its tenant (easysmart.authz); devices have none. Tokens signed before roles existed carry
    # none: every user was its tenant's owner then, and any role change since bumped the version.
    role: str | None = None


# Access-token jtis are derived from their pair's refresh-token jti (issue_pair).
_ACCESS_JTI_NAMESPACE = uuid.UUID("6f1c2d4e-8a0b-4c3d-9e5f-7a6b5c4d3e2f")

MIN_SECRET_BYTES = 32
# Example values published with the repository: never accepted as a real secret.
PUBLISHED_SECRETS = frozenset({"change-me-to-at-least-32-random-bytes-please"})  # .env.example


# Access tokens verified recently, per TokenService: a client sends the same access token until it expires, and
# verifying it (PyJWT's parsing and HS256) costs ~50 us of CPU in a loop, 100-160 us within a whole request.
# ~1.3 KB each, token included.
VERIFIED_TOKENS_KEPT = 4096


@dataclass(frozen=True)
class _VerifiedAccess:
    principal: Principal
    times: dict[str, int]  # the token's exp, iat and nbf (when it has one)


class _VerifiedTokens:
    """A bounded LRU of access tokens that passed every check, by the token as sent. What a token says cannot
    change without changing the token (its signature covers it), so only its times are left to check on each use."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, _VerifiedAccess] = OrderedDict()
        self._lock = threading.Lock()  # a gthread worker serves several requests at once

    def get(self, token: str) -> _VerifiedAccess | None:
        with self._lock:
            verified = self._entries.get(token)
            if verified is not None:
                self._entries.move_to_end(token)
            return verified

    def put(self, token: str, verified: _VerifiedAccess) -> None:
        with self._lock:
            self._entries[token] = verified
            self._entries.move_to_end(token)
            if len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def discard(self, token: str) -> None:
        with self._lock:
            self._entries.pop(token, None)


class TokenService:
    """Issues and verifies HS256 JWTs with the secret, issuer, audience and lifetimes of TokenSettings, at `clock`'s
    time. A short or published secret would let anyone mint tokens: the service refuses to start with one.

    An access token that passed verification is kept (at most `verified_tokens_kept`); its next use checks its times
    at the clock's time again, and nothing else: its signature, issuer, audience and claims cannot have changed."""

    def __init__(
        self, settings: TokenSettings, clock: Clock = utc_now, verified_tokens_kept: int = VERIFIED_TOKENS_KEPT
    ) -> None:
        secret = settings.jwt_secret.encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes (e.g. head -c 48 /dev/urandom | base64)"
            )
        if settings.jwt_secret in PUBLISHED_SECRETS:
            raise ConfigError("JWT_SECRET is a published example value; generate one of your own")
        self.settings = settings
        self.clock = clock
        self._verified = _VerifiedTokens(verified_tokens_kept)

    def refresh_ttl_s(self, kind: str) -> int:
        return self.settings.device_refresh_ttl_s if kind == "device" else self.settings.user_refresh_ttl_s

    def _encode(self, principal: Principal, token_type: str, ttl_s: int, jti: str, issued_at: int | None = None) -> str:
        now = int(self.clock().timestamp()) if issued_at is None else issued_at
        claims = {
            "sub": principal.account_id,
            "tenant": principal.tenant_id,
            "acct": principal.kind,
            "type": token_type,
            "iat": now,
            "exp": now + ttl_s,
            "jti": jti,
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "ver": principal.version,
        }
        if principal.username:
            claims["username"] = principal.username
        if principal.role:
            claims["role"] = principal.role
        return jwt.encode(claims, self.settings.jwt_secret, algorithm="HS256")

    def access_token(self, principal: Principal) -> str:
        return self._encode(principal, "access", self.settings.access_token_ttl_s, uuid.uuid4().hex)

    def refresh_token(self, principal: Principal, jti: str) -> str:
        return self._encode(principal, "refresh", self.refresh_ttl_s(principal.kind), jti)

    def issue_pair(self, principal: Principal, refresh_jti: str | None = None, issued_at: int | None = None) -> dict:
        """The login/refresh answer. The caller records `refresh_jti` to make rotation possible.

        Given `issued_at` (seconds), the pair depends only on its arguments: HS256 is deterministic and the access
        token's jti is derived from the refresh token's, so the same arguments sign the same pair again."""
        refresh_jti = refresh_jti or uuid.uuid4().hex
        access_jti = uuid.uuid5(_ACCESS_JTI_NAMESPACE, refresh_jti).hex
        access_ttl_s = self.settings.access_token_ttl_s
        return {
            "access_token": self._encode(principal, "access", access_ttl_s, access_jti, issued_at),
            "refresh_token": self._encode(
                principal, "refresh", self.refresh_ttl_s(principal.kind), refresh_jti, issued_at
            ),
            "token_type": "bearer",
            "expires_in": self.settings.access_token_ttl_s,
            "refresh_expires_in": self.refresh_ttl_s(principal.kind),
            "account_type": principal.kind,
        }

    def decode(self, token: str, expected_type: str) -> dict:
        """Verified claims of a token of `expected_type`; UnauthorizedError saying what is wrong otherwise."""
        try:
            claims = jwt.decode(
                token,
                self.settings.jwt_secret,
                algorithms=["HS256"],
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                # The times are checked at the clock's time below; PyJWT would read the real clock.
                options={"require": _REQUIRED_CLAIMS, "verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.InvalidTokenError as error:
            message = next((text for kind, text in _JWT_MESSAGES.items() if isinstance(error, kind)), None)
            raise UnauthorizedError(message or f"the token is not valid: {error}") from None
        _check_times(_times(claims), self.clock().timestamp())
        if claims["type"] != expected_type:
            raise UnauthorizedError(f"{_a(claims['type'])} token cannot be used as {_a(expected_type)} token")
        if claims["acct"] not in ACCOUNT_KINDS:
            raise UnauthorizedError("the token names no known account type")
        return claims

    def verify_access(self, token: str) -> Principal:
        verified = self._verified.get(token)
        if verified is not None:
            try:
                _check_times(verified.times, self.clock().timestamp())
            except UnauthorizedError:
                self._verified.discard(token)
                raise
            return verified.principal
        claims = self.decode(token, "access")
        try:
            # Tokens signed before versions existed carry none: they stand for an account's first version.
            version = int(claims.get("ver", 1))
        except (ValueError, TypeError, OverflowError):
            raise UnauthorizedError("the token is not valid: its ver claim must be an integer") from None
        role = claims.get("role")
        if role is not None and not isinstance(role, str):
            raise UnauthorizedError("the token is not valid: its role claim must be a string")
        principal = Principal(
            str(claims["sub"]), str(claims["tenant"]), claims["acct"], claims.get("username"), version, role
        )
        self._verified.put(token, _VerifiedAccess(principal, _times(claims)))
        return principal

    def verify_refresh(self, token: str) -> uuid.UUID:
        """The jti of a valid refresh token (its rotation state lives in the database)."""
        claims = self.decode(token, "refresh")
        try:
            return uuid.UUID(hex=str(claims["jti"]))
        except ValueError:
            raise UnauthorizedError("the refresh token's jti is not one this service issued") from None


def _times(claims: dict) -> dict[str, int]:
    """The token's exp, iat and nbf (when present) in whole seconds, as PyJWT reads them."""
    times = {}
    for name in ("exp", "iat", "nbf"):
        if name in claims:
            try:
                times[name] = int(claims[name])
            except (ValueError, TypeError, OverflowError):
                raise UnauthorizedError(f"the token is not valid: its {name} claim must be an integer") from None
    return times


def _check_times(times: dict[str, int], now: float) -> None:
    """exp, iat and nbf as PyJWT checks them (no leeway), at `now`."""
    if times["iat"] > now or times.get("nbf", now) > now:
        raise UnauthorizedError("the token is not valid yet")
    if times["exp"] <= now:
        raise UnauthorizedError("the token has expired")


def _a(token_type: object) -> str:
    return f"an {token_type}" if token_type == "access" else f"a {token_type}"


def bearer_principal(headers: Mapping[str, str], tokens: TokenService) -> Principal:
    """The principal of `Authorization: Bearer <access token>`; 401 saying what is missing or wrong."""
    header = headers.get("Authorization") or headers.get("authorization") or ""
    if not header.strip():
        raise UnauthorizedError("missing Authorization header; send 'Authorization: Bearer <access token>'")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("the Authorization header must be 'Bearer <access token>'")
    return tokens.verify_access(token.strip())
