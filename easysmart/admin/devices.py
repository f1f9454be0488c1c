"""Devices: the accounts Home Assistant installations log in with, managed by a tenant's admins.

- list: every device of the tenant with its state (active, blocked, deleted), last login, last upload, newest
  reading and the last 24 hours' uploads and readings (what process records, easysmart.uploadstats); viewers
  may read it, it holds no secret;
- create: a generated password answered once, with what the integration's config flow asks for (the API URL is
  PUBLIC_BASE_URL, never the request's Host header);
- rotate: a new password answered once; the old one and every session refused at once, or, with `grace_s`, the
  old password still logs in until the grace ends and sessions end then (access tokens already issued live on for
  at most their lifetime);
- block, unblock: refused or admitted again on the next request (easysmart.accountstate);
- delete (soft): the account can no longer log in or use its tokens, its username stays taken and its uploads stay
  attributed to it.

Usernames are unique across tenants: a taken one (even by a deleted device) answers 409 without saying where.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta
from typing import Mapping, Sequence

import psycopg2.extensions

from easysmart import audit
from easysmart.accounts import valid_username
from easysmart.accountstate import AccountState, AccountStates, change_account
from easysmart.admin.bodies import BodyProblems
from easysmart.audit import Origin
from easysmart.auth import hash_password
from easysmart.authz import Role, require_role
from easysmart.clock import Clock, utc_now
from easysmart.config import AdminSettings
from easysmart.db import Database
from easysmart.errors import ConflictError, NotFoundError
from easysmart.identity import Principal
from easysmart.params import cursor_uuid, decode_cursor, encode_cursor, iso, parse_limit, path_uuid
from easysmart.uploadstats import window_start

# 24 random bytes: 32 characters a person copies once into the integration's form.
_PASSWORD_BYTES = 24
_MAX_USERNAME = 256
_DEVICE_PAGE = 100
LOGIN_PATH = "/api/v1/auth/device/login"

_LIST = (
    "SELECT a.id, a.username, a.created_at, a.active, a.blocked, a.deleted_at, a.last_login_at, a.last_upload_at,"
    " a.last_reading_at, coalesce(sum(st.uploads), 0), coalesce(sum(st.readings), 0)"
    " FROM accounts a LEFT JOIN account_upload_stats st ON st.account_id = a.id AND st.hour >= %(since)s"
    " WHERE a.tenant_id = %(tenant)s AND a.kind = 'device' AND (%(device)s::uuid IS NULL OR a.id = %(device)s::uuid)"
    " AND (a.created_at, a.id) > (%(after_time)s::timestamptz, %(after_id)s::uuid)"
    " GROUP BY a.id ORDER BY a.created_at, a.id LIMIT %(limit)s"
)


def generated_password() -> str:
    return secrets.token_urlsafe(_PASSWORD_BYTES)


def _state(active: bool, blocked: bool, deleted_at: datetime | None) -> str:
    if deleted_at is not None:
        return "deleted"
    if blocked:
        return "blocked"
    return "active" if active else "inactive"


class DevicesService:
    """`states` mirrors each change into Redis once committed (None: the copies expire on their own, within
    accountstate.STATE_TTL_S; with Redis in use every change must pass it)."""

    def __init__(
        self, db: Database, settings: AdminSettings, states: AccountStates | None = None, clock: Clock = utc_now
    ) -> None:
        self.db = db
        self.settings = settings
        self.states = states
        self.clock = clock

    def list(self, principal: Principal, args: Mapping[str, str]) -> dict:
        require_role(principal, Role.VIEWER)
        limit = parse_limit(args.get("limit"), _DEVICE_PAGE)
        after = decode_cursor(args.get("cursor"), "d", (str, str))
        with self.db.transaction() as cursor:
            rows = self._rows(cursor, principal, limit + 1, after=(after[0], cursor_uuid(after[1])) if after else None)
        page, more = rows[:limit], len(rows) > limit
        return {
            "devices": [_device(row) for row in page],
            "next_cursor": encode_cursor("d", iso(page[-1][2]), str(page[-1][0])) if more else None,
        }

    def create(self, principal: Principal, body: object, origin: Origin) -> dict:
        require_role(principal, Role.ADMIN)
        problems = BodyProblems(body, ("username",))
        username = problems.string("username", _MAX_USERNAME, required=True) or ""
        if username and not problems.problems and not valid_username(username):
            problems.add("$.username", "1 to 256 of letters, digits and . _ @ + -")
        problems.raise_if_any()
        password = generated_password()
        password_hash = hash_password(password)  # ~50 ms of scrypt, before a connection is taken
        device_id = uuid.uuid4()
        with self.db.transaction() as cursor:
            cursor.execute(
                "INSERT INTO accounts (id, tenant_id, username, kind, password_hash) VALUES (%s, %s, %s, 'device', %s)"
                " ON CONFLICT (username) DO NOTHING RETURNING id",
                (device_id, principal.tenant_id, username, password_hash),
            )
            if cursor.fetchone() is None:
                raise ConflictError(f"the username {username!r} is taken; choose another")
            _record(cursor, principal, "device.create", str(device_id), {"username": username}, origin)
        api_url = self.settings.public_base_url.rstrip("/")
        return {
            "id": str(device_id),
            "username": username,
            "password": password,
            "state": "active",
            # What the Easy Smart Monitor integration's config flow asks for, in its order.
            "config_flow": {"api_url": api_url, "username": username, "password": password},
            "login_url": api_url + LOGIN_PATH,
        }

    def rotate(self, principal: Principal, device_id: str, body: object, origin: Origin) -> dict:
        require_role(principal, Role.ADMIN)
        problems = BodyProblems({} if body is None else body, ("grace_s",))
        grace_s = problems.integer("grace_s", 0, self.settings.device_rotation_max_grace_s)
        problems.raise_if_any()
        password = generated_password()
        new_hash = hash_password(password)
        now = self.clock()
        grace_until = now + timedelta(seconds=grace_s) if grace_s else None
        device_id = path_uuid("device", device_id)
        with self.db.transaction() as cursor:
            username = self._usable_device(cursor, principal, device_id)
            if grace_until is None:
                state = change_account(cursor, account_id=device_id, password_hash=new_hash)
            else:
                # The old password and the sessions it opened keep working until the grace ends; nothing is bumped.
                cursor.execute(
                    "UPDATE accounts SET previous_password_hash = password_hash, previous_password_expires_at = %s,"
                    " password_hash = %s, updated_at = %s WHERE id = %s",
                    (grace_until, new_hash, now, device_id),
                )
                cursor.execute(
                    "UPDATE refresh_tokens SET grace_until = least(coalesce(grace_until, %s), %s)"
                    " WHERE account_id = %s AND NOT revoked",
                    (grace_until, grace_until, device_id),
                )
                state = None
            _record(cursor, principal, "device.rotate", device_id, {"username": username, "grace_s": grace_s}, origin)
        self._mirror(state)
        return {
            "id": device_id,
            "username": username,
            "password": password,
            "old_password_valid_until": iso(grace_until),
        }

    def set_blocked(self, principal: Principal, device_id: str, blocked: bool, origin: Origin) -> dict:
        require_role(principal, Role.ADMIN)
        device_id = path_uuid("device", device_id)
        with self.db.transaction() as cursor:
            username = self._usable_device(cursor, principal, device_id)
            state = change_account(cursor, account_id=device_id, blocked=blocked)
            action = "device.block" if blocked else "device.unblock"
            _record(cursor, principal, action, device_id, {"username": username}, origin)
        self._mirror(state)
        return self._one(principal, device_id)

    def delete(self, principal: Principal, device_id: str, origin: Origin) -> dict:
        require_role(principal, Role.ADMIN)
        device_id = path_uuid("device", device_id)
        with self.db.transaction() as cursor:
            username = self._usable_device(cursor, principal, device_id)
            cursor.execute(
                "UPDATE accounts SET deleted_at = %s, previous_password_hash = NULL,"
                " previous_password_expires_at = NULL WHERE id = %s",
                (self.clock(), device_id),
            )
            state = change_account(cursor, account_id=device_id, active=False)
            _record(cursor, principal, "device.delete", device_id, {"username": username}, origin)
        self._mirror(state)
        return self._one(principal, device_id)

    def _usable_device(self, cursor: psycopg2.extensions.cursor, principal: Principal, device_id: str) -> str:
        """The username of the tenant's device (locked for the change); 404 for any other id, 409 once deleted."""
        cursor.execute(
            "SELECT username, deleted_at FROM accounts WHERE id = %s AND tenant_id = %s AND kind = 'device' FOR UPDATE",
            (device_id, principal.tenant_id),
        )
        row = cursor.fetchone()
        if row is None:
            raise NotFoundError(f"device {device_id} not found")
        if row[1] is not None:
            raise ConflictError(f"device {device_id} is deleted; create a new one")
        return row[0]

    def _rows(
        self,
        cursor: psycopg2.extensions.cursor,
        principal: Principal,
        limit: int,
        after: tuple[datetime, str] | None = None,
        device_id: str | None = None,
    ) -> Sequence[tuple]:
        cursor.execute(
            _LIST,
            {
                "since": window_start(self.clock()),
                "tenant": principal.tenant_id,
                "device": device_id,
                "after_time": after[0] if after else "-infinity",
                "after_id": after[1] if after else str(uuid.UUID(int=0)),
                "limit": limit,
            },
        )
        return cursor.fetchall()

    def _one(self, principal: Principal, device_id: str) -> dict:
        with self.db.transaction() as cursor:
            return _device(self._rows(cursor, principal, 1, device_id=device_id)[0])

    def _mirror(self, state: AccountState | None) -> None:
        if state is not None and self.states is not None:
            self.states.mirror(state)


def _record(
    cursor: psycopg2.extensions.cursor, actor: Principal, action: str, device_id: str, details: dict, origin: Origin
) -> None:
    audit.record(
        cursor, actor, action, "device", device_id, details, origin.request_id, origin.client_addr, origin.user_agent
    )


def _device(row: tuple) -> dict:
    (
        device_id,
        username,
        created_at,
        active,
        blocked,
        deleted_at,
        last_login,
        last_upload,
        last_reading,
        uploads,
        readings,
    ) = row
    return {
        "id": str(device_id),
        "username": username,
        "state": _state(active, blocked, deleted_at),
        "created_at": iso(created_at),
        "deleted_at": iso(deleted_at),
        "last_login_at": iso(last_login),
        "last_upload_at": iso(last_upload),
        "last_reading_at": iso(last_reading),
        "uploads_24h": int(uploads),
        "readings_24h": int(readings),
    }
