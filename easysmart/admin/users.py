"""User accounts of a tenant over HTTP: list, create, change role, block/unblock, reset password.

Owners manage every user of their tenant; admins manage viewers only (creating, changing or blocking an owner or
an admin, or making anyone one, needs the owner role). The last usable owner of a tenant cannot be demoted or
blocked: changes that could remove an owner first lock the tenant's owners (in id order, so two owners demoting
each other run one after the other and the second finds one owner left).

A new user gets no password: the answer carries a one-time set-password token (easysmart.passwordtokens) the user
redeems at POST /api/v1/auth/password/set. A reset answers a new token and stops the old password at once (it is
replaced by an unguessable one, the account's tokens are refused): a reset is what follows a forgotten or leaked
password, and a leaked one must not keep working until the new one is set.
"""

from __future__ import annotations

import re
import secrets
import uuid
from typing import Mapping

import psycopg2.extensions

from easysmart import audit, passwordtokens
from easysmart.accountstate import AccountState, AccountStates, change_account
from easysmart.audit import Origin
from easysmart.auth import hash_password
from easysmart.authz import ROLE_NAMES, Role, require_role, role_of
from easysmart.clock import Clock, utc_now
from easysmart.db import Database, one_row
from easysmart.errors import ConflictError, ForbiddenError, NotFoundError, UnprocessableError
from easysmart.identity import Principal
from easysmart.params import cursor_uuid, decode_cursor, encode_cursor, iso, parse_limit, path_uuid

MAX_USER_BODY_BYTES = 4096
DEFAULT_USERS_PAGE = 100
USERNAME = re.compile(r"^[A-Za-z0-9._@+-]{1,256}$")
_USER_SELECT = "SELECT id, username, role, blocked, active, created_at, updated_at FROM accounts"
_CREATE_FIELDS = ("username", "role")
_UPDATE_FIELDS = ("role", "blocked", "reset_password")


class UserInvalidError(UnprocessableError):
    """A users body that cannot be used: every problem with its path."""

    code = "invalid_user"

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        shown = "; ".join(f"{path}: {message}" for path, message in problems[:10])
        super().__init__(
            f"{len(problems)} problem(s) in the body: {shown}",
            paths=[path for path, _ in problems],
            errors=[{"path": path, "message": message} for path, message in problems],
        )


class LastOwnerError(ConflictError):
    code = "last_owner"


def user_view(row: tuple) -> dict:
    user_id, username, role, blocked, active, created_at, updated_at = row
    return {
        "id": str(user_id),
        "username": username,
        "role": role,
        "blocked": blocked,
        "active": active,
        "created_at": iso(created_at),
        "updated_at": iso(updated_at),
    }


def _object(body: object) -> dict:
    if not isinstance(body, dict):
        raise UserInvalidError([("$", "must be a JSON object")])
    return body


def _unknown_fields(body: dict, known: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(f"$.{name}", f"unknown field; expected {', '.join(known)}") for name in body if name not in known]


def _role_problem(value: object) -> str | None:
    if not isinstance(value, str) or value not in ROLE_NAMES:
        return f"must be one of {', '.join(ROLE_NAMES)}"
    return None


def parse_new_user(body: object) -> tuple[str, Role]:
    body = _object(body)
    problems = _unknown_fields(body, _CREATE_FIELDS)
    username, role = body.get("username"), body.get("role")
    if not isinstance(username, str) or not USERNAME.match(username):
        problems.append(("$.username", "required: 1 to 256 of letters, digits and . _ @ + -"))
    role_problem = _role_problem(role)
    if role_problem:
        problems.append(("$.role", f"required: {role_problem}"))
    if problems:
        raise UserInvalidError(problems)
    return str(username), Role[str(role).upper()]


def parse_user_change(body: object) -> dict:
    """The change a PATCH body asks for: any of role, blocked, reset_password (true)."""
    body = _object(body)
    problems = _unknown_fields(body, _UPDATE_FIELDS)
    if not any(name in body for name in _UPDATE_FIELDS):
        problems.append(("$", f"nothing to change; send one or more of {', '.join(_UPDATE_FIELDS)}"))
    if "role" in body:
        role_problem = _role_problem(body["role"])
        if role_problem:
            problems.append(("$.role", role_problem))
    if "blocked" in body and not isinstance(body["blocked"], bool):
        problems.append(("$.blocked", "must be true or false"))
    if "reset_password" in body and body["reset_password"] is not True:
        problems.append(("$.reset_password", "must be true (it answers a new set-password token)"))
    if problems:
        raise UserInvalidError(problems)
    return {name: body[name] for name in _UPDATE_FIELDS if name in body}


def _require_manager(principal: Principal) -> Role:
    if principal.kind != "user":
        raise ForbiddenError("users are managed by users; log in as a user")
    require_role(principal, Role.ADMIN)
    role = role_of(principal)
    assert role is not None
    return role


def _require_may_manage(actor: Role, *roles: Role) -> None:
    """Admins manage viewers only: a target or a new role above viewer needs the owner role."""
    if actor < Role.OWNER and any(role > Role.VIEWER for role in roles):
        raise ForbiddenError(
            "this needs the owner role in the tenant: admins manage viewers only", required_role="owner"
        )


def lock_owners(cursor: psycopg2.extensions.cursor, tenant_id: str) -> list[str]:
    """The ids of the tenant's usable owners, their rows locked (in id order, so lockers queue without deadlock)."""
    cursor.execute(
        "SELECT id FROM accounts WHERE tenant_id = %s AND kind = 'user' AND role = 'owner' AND active AND NOT blocked"
        " ORDER BY id FOR UPDATE",
        (tenant_id,),
    )
    return [str(row[0]) for row in cursor.fetchall()]


def _unusable_password_hash() -> str:
    # A hash like any other (so a login on the account costs the same) of a password nobody knows.
    return hash_password(secrets.token_urlsafe(32))


class UsersService:
    def __init__(self, db: Database, states: AccountStates | None = None, clock: Clock = utc_now) -> None:
        self.db = db
        self.states = states
        self.clock = clock

    def _mirror(self, state: AccountState | None) -> None:
        if state is not None and self.states is not None:
            self.states.mirror(state)

    def list(self, principal: Principal, args: Mapping[str, str]) -> dict:
        """The tenant's users, oldest first, in keyset pages."""
        _require_manager(principal)
        limit = parse_limit(args.get("limit"), DEFAULT_USERS_PAGE)
        after = decode_cursor(args.get("cursor"), "users", (str, str))
        params: dict = {"tenant": principal.tenant_id, "limit": limit + 1}
        where = "tenant_id = %(tenant)s AND kind = 'user'"
        if after:
            where += " AND (created_at, id) > (%(after_time)s, %(after_id)s::uuid)"
            params.update(after_time=after[0], after_id=cursor_uuid(after[1]))
        with self.db.transaction() as cursor:
            cursor.execute(f"{_USER_SELECT} WHERE {where} ORDER BY created_at, id LIMIT %(limit)s", params)
            rows = cursor.fetchall()
        page, more = rows[:limit], len(rows) > limit
        return {
            "users": [user_view(row) for row in page],
            "next_cursor": encode_cursor("users", iso(page[-1][5]), str(page[-1][0])) if more else None,
        }

    def create(self, principal: Principal, body: object, origin: Origin) -> dict:
        actor = _require_manager(principal)
        username, role = parse_new_user(body)
        _require_may_manage(actor, role)
        now = self.clock()
        user_id = str(uuid.uuid4())
        password_hash = _unusable_password_hash()
        with self.db.transaction() as cursor:
            cursor.execute(
                "INSERT INTO accounts (id, tenant_id, username, kind, password_hash, role)"
                " VALUES (%s, %s, %s, 'user', %s, %s) ON CONFLICT (username) DO NOTHING RETURNING id",
                (user_id, principal.tenant_id, username, password_hash, role.name.lower()),
            )
            if cursor.fetchone() is None:
                # Usernames are unique across tenants; where it is taken is not said.
                raise ConflictError(f"the username {username!r} is taken; choose another", path="$.username")
            token, expires_at = passwordtokens.issue(cursor, user_id, now)
            details = {"username": username, "role": role.name.lower()}
            audit.record(cursor, principal, "user.create", "user", user_id, details, *_origin_fields(origin))
            cursor.execute(f"{_USER_SELECT} WHERE id = %s", (user_id,))
            view = user_view(one_row(cursor))
        return {**view, "set_password_token": token, "set_password_expires_at": iso(expires_at)}

    def update(self, principal: Principal, user_id: str, body: object, origin: Origin) -> dict:
        actor = _require_manager(principal)
        change = parse_user_change(body)
        user_id = path_uuid("user", user_id)
        new_role = Role[change["role"].upper()] if "role" in change else None
        answer: dict = {}
        with self.db.transaction() as cursor:
            # Owners first (id order), then the target: every change of a tenant's users locks in that order.
            owners = lock_owners(cursor, principal.tenant_id)
            cursor.execute(
                "SELECT role, blocked FROM accounts WHERE id = %s AND tenant_id = %s AND kind = 'user' FOR UPDATE",
                (user_id, principal.tenant_id),
            )
            row = cursor.fetchone()
            if row is None:
                raise NotFoundError(f"user {user_id} not found")
            current = Role[row[0].upper()]
            _require_may_manage(actor, current, *([new_role] if new_role else []))
            loses_owner = user_id in owners and (
                (new_role is not None and new_role != Role.OWNER) or change.get("blocked") is True
            )
            if loses_owner and len(owners) == 1:
                raise LastOwnerError(
                    "this is the tenant's last owner: make another user owner first, then demote or block this one"
                )
            password_hash = _unusable_password_hash() if change.get("reset_password") else None
            state = change_account(
                cursor,
                account_id=user_id,
                blocked=change.get("blocked"),
                role=new_role.name.lower() if new_role else None,
                password_hash=password_hash,
            )
            if password_hash is not None:
                token, expires_at = passwordtokens.issue(cursor, user_id, self.clock())
                answer = {"set_password_token": token, "set_password_expires_at": iso(expires_at)}
            for action, details in _actions(change, current):
                audit.record(cursor, principal, action, "user", user_id, details, *_origin_fields(origin))
            cursor.execute(f"{_USER_SELECT} WHERE id = %s", (user_id,))
            view = user_view(one_row(cursor))
        self._mirror(state)
        return {**view, **answer}


def _actions(change: dict, current: Role) -> list[tuple[str, dict]]:
    actions: list[tuple[str, dict]] = []
    if "role" in change:
        actions.append(("user.role", {"from": current.name.lower(), "to": change["role"]}))
    if "blocked" in change:
        actions.append(("user.block" if change["blocked"] else "user.unblock", {}))
    if change.get("reset_password"):
        actions.append(("user.password_reset", {}))
    return actions


def _origin_fields(origin: Origin) -> tuple[str | None, str | None, str | None]:
    return origin.request_id, origin.client_addr, origin.user_agent
