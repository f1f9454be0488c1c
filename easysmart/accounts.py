"""Tenants and accounts: what the `esm` command line manages. Every change is written to the audit log with the
operator (`esm:<os user>`) as its actor."""

from __future__ import annotations

import re
import uuid
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg2.extensions

from easysmart import audit
from easysmart.accountstate import AccountState, change_account
from easysmart.auth import hash_password
from easysmart.authz import ROLE_NAMES
from easysmart.db import one_row
from easysmart.errors import BadRequestError
from easysmart.identity import ACCOUNT_KINDS


class AccountError(BadRequestError):
    """A tenant or account request that cannot be carried out; the message says why."""


_USERNAME = re.compile(r"^[A-Za-z0-9._@+-]{1,256}$")


def valid_username(username: str) -> bool:
    return bool(_USERNAME.match(username))


def check_timezone(timezone: str) -> str:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise AccountError(f"{timezone!r} is not an IANA time zone (for example America/Sao_Paulo)") from None
    return timezone


def tenant_by_name(cursor: psycopg2.extensions.cursor, name: str) -> tuple[str, str] | None:
    """(id, timezone) of the tenant called `name`, if there is one."""
    cursor.execute("SELECT id, timezone FROM tenants WHERE name = %s", (name,))
    row = cursor.fetchone()
    return (str(row[0]), row[1]) if row else None


def create_tenant(cursor: psycopg2.extensions.cursor, name: str, timezone: str, if_missing: bool = False) -> str:
    check_timezone(timezone)
    if not name.strip():
        raise AccountError("a tenant name must not be empty")
    existing = tenant_by_name(cursor, name)
    if existing:
        if if_missing:
            return existing[0]
        raise AccountError(f"tenant {name!r} already exists")
    tenant_id = str(uuid.uuid4())
    cursor.execute("INSERT INTO tenants (id, name, timezone) VALUES (%s, %s, %s)", (tenant_id, name, timezone))
    _audit(cursor, tenant_id, "tenant.create", "tenant", tenant_id, {"name": name, "timezone": timezone})
    return tenant_id


def _audit(
    cursor: psycopg2.extensions.cursor, tenant_id: str, action: str, target_type: str, target_id: str, details: dict
) -> None:
    audit.record(cursor, None, action, target_type, target_id, details, None, None, None, tenant_id=tenant_id)


def _audit_change(cursor: psycopg2.extensions.cursor, state: AccountState, action: str, details: dict) -> None:
    cursor.execute("SELECT tenant_id, kind FROM accounts WHERE id = %s", (state.account_id,))
    tenant_id, kind = one_row(cursor)
    _audit(cursor, str(tenant_id), action, kind, state.account_id, details)


def create_account(
    cursor: psycopg2.extensions.cursor,
    tenant: str,
    kind: str,
    username: str,
    password: str,
    if_missing: bool = False,
    role: str | None = None,
) -> str:
    """A new account; a user's role is `role` (default owner), a device has none."""
    if kind not in ACCOUNT_KINDS:
        raise AccountError(f"kind must be one of {', '.join(ACCOUNT_KINDS)}")
    if kind == "device" and role is not None:
        raise AccountError("devices have no role; --role is for user accounts")
    if kind == "user":
        role = role or "owner"
        if role not in ROLE_NAMES:
            raise AccountError(f"role must be one of {', '.join(ROLE_NAMES)}")
    if not _USERNAME.match(username):
        raise AccountError(f"username {username!r}: 1 to 256 of letters, digits and . _ @ + -")
    existing = existing_account(cursor, tenant, kind, username)
    if existing:
        if if_missing:
            return existing
        raise AccountError(f"account {username!r} already exists")
    if not password:
        raise AccountError("the password must not be empty")
    cursor.execute("SELECT id FROM tenants WHERE name = %s", (tenant,))
    tenant_row = cursor.fetchone()
    if tenant_row is None:
        raise AccountError(f"tenant {tenant!r} does not exist")
    new_id = str(uuid.uuid4())
    cursor.execute(
        "INSERT INTO accounts (id, tenant_id, username, kind, password_hash, role) VALUES (%s, %s, %s, %s, %s, %s)",
        (new_id, tenant_row[0], username, kind, hash_password(password), role),
    )
    details = {"username": username, **({"role": role} if role else {})}
    _audit(cursor, str(tenant_row[0]), f"{kind}.create", kind, new_id, details)
    return new_id


def existing_account(cursor: psycopg2.extensions.cursor, tenant: str, kind: str, username: str) -> str | None:
    """The id of `username` if it exists as asked; an error if it exists in another tenant or as another kind."""
    cursor.execute(
        "SELECT a.id, t.name, a.kind FROM accounts a JOIN tenants t ON t.id = a.tenant_id WHERE a.username = %s",
        (username,),
    )
    row = cursor.fetchone()
    if row is None:
        return None
    found_id, found_tenant, found_kind = row
    if (found_tenant, found_kind) != (tenant, kind):
        raise AccountError(f"account {username!r} already exists as a {found_kind} account of tenant {found_tenant!r}")
    return str(found_id)


def set_blocked(cursor: psycopg2.extensions.cursor, username: str, blocked: bool) -> AccountState:
    """Blocks (or unblocks) an account: its tokens are refused on their next request and a block ends every
    refresh token. The caller mirrors the returned state into Redis once the transaction has committed."""
    state = _changed(username, change_account(cursor, username, blocked=blocked))
    _audit_change(cursor, state, "account.block" if blocked else "account.unblock", {"username": username})
    return state


def set_active(cursor: psycopg2.extensions.cursor, username: str, active: bool) -> AccountState:
    """Deactivates (or reactivates) an account, as set_blocked does."""
    state = _changed(username, change_account(cursor, username, active=active))
    _audit_change(cursor, state, "account.activate" if active else "account.deactivate", {"username": username})
    return state


def set_password(cursor: psycopg2.extensions.cursor, username: str, password: str) -> AccountState:
    """A new password: every token issued before it is refused from the next request on."""
    if not password:
        raise AccountError("the password must not be empty")
    state = _changed(username, change_account(cursor, username, password_hash=hash_password(password)))
    _audit_change(cursor, state, "account.password_set", {"username": username})
    return state


def _changed(username: str, state: AccountState | None) -> AccountState:
    if state is None:
        raise AccountError(f"account {username!r} does not exist")
    return state


def list_tenants(cursor: psycopg2.extensions.cursor) -> list[tuple]:
    """(name, id, timezone) of every tenant, by name."""
    cursor.execute("SELECT name, id, timezone FROM tenants ORDER BY name")
    return cursor.fetchall()


def list_accounts(cursor: psycopg2.extensions.cursor, tenant: str | None = None) -> list[tuple]:
    cursor.execute(
        "SELECT t.name, a.username, a.kind, a.active, a.blocked, a.role FROM accounts a"
        " JOIN tenants t ON t.id = a.tenant_id"
        " WHERE %s::text IS NULL OR t.name = %s ORDER BY t.name, a.username",
        (tenant, tenant),
    )
    return cursor.fetchall()
