"""One-time set-password tokens: answered when a user account is created or its password reset (the admin
function), redeemed once at POST /api/v1/auth/password/set (the auth function) within SET_PASSWORD_TTL.

Only a token's SHA-256 is stored, so a copy of the table sets no password. A new token of an account voids its
earlier unused ones.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

import psycopg2.extensions

SET_PASSWORD_TTL = timedelta(hours=24)
_TOKEN_BYTES = 32


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def issue(cursor: psycopg2.extensions.cursor, account_id: str, now: datetime) -> tuple[str, datetime]:
    """A new token of the account and its expiry; the account's earlier unused tokens stop working."""
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    expires_at = now + SET_PASSWORD_TTL
    cursor.execute("DELETE FROM password_set_tokens WHERE account_id = %s AND used_at IS NULL", (account_id,))
    cursor.execute(
        "INSERT INTO password_set_tokens (token_sha256, account_id, expires_at, created_at) VALUES (%s, %s, %s, %s)",
        (_digest(token), account_id, expires_at, now),
    )
    return token, expires_at


def redeem(cursor: psycopg2.extensions.cursor, token: str, now: datetime) -> str | None:
    """The account a valid, unused, unexpired token names, the token used up; None otherwise (which one is not
    said: a guess learns nothing)."""
    cursor.execute(
        "UPDATE password_set_tokens SET used_at = %s"
        " WHERE token_sha256 = %s AND used_at IS NULL AND expires_at > %s RETURNING account_id",
        (now, _digest(token), now),
    )
    row = cursor.fetchone()
    return str(row[0]) if row else None


def prune(cursor: psycopg2.extensions.cursor, now: datetime) -> int:
    """Deletes tokens past their expiry (used or not: neither can be redeemed any more)."""
    cursor.execute("DELETE FROM password_set_tokens WHERE expires_at <= %s", (now,))
    return cursor.rowcount
