"""The audit log: who did what to which target, when, from where (docs/architecture.md §8).

Every administrative action (users, devices, equipment, tenant settings; by the API and by `esm`), every failed
login and each account's first successful login of a (UTC) day is a row of `audit_log`, written in the
transaction of the change it records, so a change and its record commit together. Rows are bounded (each text
field and the details are cut to a size) and never carry a secret: details whose key names a password, token or
secret are replaced by "[redacted]". Rows older than AUDIT_RETENTION_DAYS are pruned by the retention function.

Repeated events share one row through `aggregate_key`: failed logins count per (username, client address, minute)
and a first login of the day is written once, so an attacker's guesses cannot turn into one write each.
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Mapping

import orjson
import psycopg2.extensions
from psycopg2.extras import Json

from easysmart.authz import Role, require_role
from easysmart.db import Database
from easysmart.errors import ForbiddenError
from easysmart.identity import Principal
from easysmart.params import decode_cursor, encode_cursor, iso, parse_limit, parse_window

DEFAULT_AUDIT_PAGE = 100
MAX_DETAILS_BYTES = 4096
_MAX_TEXT = {"action": 64, "target_type": 32, "target_id": 256, "actor_name": 256, "request_id": 128}
_MAX_CLIENT_ADDR = 64
_MAX_USER_AGENT = 256
_SECRET_KEY = re.compile(r"password|token|secret", re.IGNORECASE)
_AUDIT_SELECT = (
    "SELECT id, at, actor_id, actor_name, action, target_type, target_id, details, request_id, client_addr,"
    " user_agent FROM audit_log"
)


@dataclass(frozen=True)
class Origin:
    """Where a request came from, as the audit log records it."""

    request_id: str | None
    client_addr: str | None = None
    user_agent: str | None = None


def operator_name() -> str:
    """The actor of an `esm` command: the operator's OS user."""
    try:
        return f"esm:{getpass.getuser()}"
    except (KeyError, OSError):
        return "esm"


def _cut(value: str | None, limit: int) -> str | None:
    return None if value is None else value[:limit]


def _redacted(details: object) -> object:
    if isinstance(details, dict):
        return {
            str(key): "[redacted]" if _SECRET_KEY.search(str(key)) else _redacted(value)
            for key, value in details.items()
        }
    if isinstance(details, list):
        return [_redacted(value) for value in details]
    return details


def _bounded(details: dict) -> dict:
    clean = _redacted(details)
    encoded = orjson.dumps(clean, default=str)
    if len(encoded) > MAX_DETAILS_BYTES:
        return {"truncated": True, "keys": sorted(str(key) for key in details)[:32]}
    return orjson.loads(encoded)


def record(
    cursor: psycopg2.extensions.cursor,
    actor: Principal | None,
    action: str,
    target_type: str,
    target_id: str | None,
    details: dict,
    request_id: str | None,
    client_addr: str | None,
    user_agent: str | None,
    *,
    tenant_id: str | None = None,
    actor_name: str | None = None,
    at: datetime | None = None,
    aggregate_key: str | None = None,
) -> None:
    """Writes one audit row in the caller's transaction.

    The tenant is the actor's unless `tenant_id` is given (an `esm` action: actor None, `actor_name` defaults to the
    operator). With `aggregate_key`, a row already written under that key is counted (details.count) instead of a
    new one being written."""
    tenant = tenant_id if tenant_id is not None else (actor.tenant_id if actor is not None else None)
    name = actor_name or (actor.username if actor is not None else operator_name())
    values = {
        "tenant": tenant,
        "at": at,
        "actor_id": actor.account_id if actor is not None else None,
        "actor_name": _cut(name, _MAX_TEXT["actor_name"]),
        "action": _cut(action, _MAX_TEXT["action"]),
        "target_type": _cut(target_type, _MAX_TEXT["target_type"]),
        "target_id": _cut(target_id, _MAX_TEXT["target_id"]),
        "details": Json(_bounded(details)),
        "request_id": _cut(request_id, _MAX_TEXT["request_id"]),
        "client_addr": _cut(client_addr, _MAX_CLIENT_ADDR),
        "user_agent": _cut(user_agent, _MAX_USER_AGENT),
        "key": aggregate_key,
    }
    cursor.execute(
        "INSERT INTO audit_log (tenant_id, at, actor_id, actor_name, action, target_type, target_id, details,"
        " request_id, client_addr, user_agent, aggregate_key) VALUES (%(tenant)s, coalesce(%(at)s, now()),"
        " %(actor_id)s, %(actor_name)s, %(action)s, %(target_type)s, %(target_id)s, %(details)s, %(request_id)s,"
        " %(client_addr)s, %(user_agent)s, %(key)s)"
        " ON CONFLICT (aggregate_key) DO UPDATE SET details = jsonb_set(audit_log.details, '{count}',"
        " to_jsonb(coalesce((audit_log.details->>'count')::int, 1) + 1))",
        values,
    )


def entry_view(row: tuple) -> dict:
    entry_id, at, actor_id, actor_name, action, target_type, target_id, details, request_id, addr, agent = row
    return {
        "id": entry_id,
        "at": iso(at),
        "actor": {"id": str(actor_id) if actor_id else None, "name": actor_name},
        "action": action,
        "target": {"type": target_type, "id": target_id},
        "details": details,
        "request_id": request_id,
        "client_addr": addr,
        "user_agent": agent,
    }


def list_entries(db: Database, principal: Principal, args: Mapping[str, str]) -> dict:
    """The tenant's audit rows, newest first, in keyset pages. Filters: actor (a username or an account id),
    action, target_type, target_id, start_date/end_date."""
    if principal.kind != "user":
        raise ForbiddenError("the audit log is read by users; log in as a user")
    require_role(principal, Role.ADMIN)
    limit = parse_limit(args.get("limit"), DEFAULT_AUDIT_PAGE)
    after = decode_cursor(args.get("cursor"), "audit", (str, int))
    params: dict = {"tenant": principal.tenant_id, "limit": limit + 1}
    where = ["tenant_id = %(tenant)s"]
    actor = args.get("actor")
    if actor:
        where.append("(actor_name = %(actor)s OR actor_id::text = %(actor)s)")
        params["actor"] = actor[:256]
    for name in ("action", "target_type", "target_id"):
        if args.get(name):
            where.append(f"{name} = %({name})s")
            params[name] = args[name][:256]
    start, end = parse_window(args)
    if start is not None:
        where.append("at >= %(start)s")
        params["start"] = start
    if end is not None:
        where.append("at < %(end)s")
        params["end"] = end
    if after:
        where.append("(at, id) < (%(after_time)s, %(after_id)s)")
        params.update(after_time=after[0], after_id=after[1])
    with db.transaction() as cursor:
        cursor.execute(f"{_AUDIT_SELECT} WHERE {' AND '.join(where)} ORDER BY at DESC, id DESC LIMIT %(limit)s", params)
        rows = cursor.fetchall()
    page, more = rows[:limit], len(rows) > limit
    return {
        "entries": [entry_view(row) for row in page],
        "next_cursor": encode_cursor("audit", iso(page[-1][1]), page[-1][0]) if more else None,
    }


def prune(db: Database, now: datetime, retention_days: int) -> dict:
    """Deletes audit rows older than the retention."""
    with db.transaction() as cursor:
        cursor.execute("DELETE FROM audit_log WHERE at < %s", (now - timedelta(days=retention_days),))
        return {"audit_rows_pruned": cursor.rowcount}
