"""Maintenance windows over the API: a defrost or a cleaning during which no rule fires for an equipment.

The engine reads them (store.maintenance_windows): an excursion that fires inside a window and ends before it
does is never alerted, silence is not alerted inside one, and an excursion that outlasts the window fires once its
readings pass the window's end. A window may lie in the past (up to MAX_PAST): a defrost that ran while the shop
was offline still keeps the late upload's readings from alerting. A window does not end an alert already open.
Viewers list them; admins and owners create and delete them.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Mapping

import psycopg2.extensions

from easysmart.admin.bodies import BodyProblems
from easysmart.alerting import store
from easysmart.authz import Role, require_role
from easysmart.clock import Clock, utc_now
from easysmart.db import Database, dict_rows, one_row
from easysmart.errors import NotFoundError, UnprocessableError
from easysmart.identity import Principal
from easysmart.params import (
    cursor_uuid,
    decode_cursor,
    encode_cursor,
    iso,
    newest_first_after,
    parse_limit,
    parse_window,
    path_uuid,
)

MAX_WINDOW = timedelta(days=7)
# How far back a window may start, and how far ahead it may be planned.
MAX_PAST = timedelta(days=7)
MAX_AHEAD = timedelta(days=366)
# Windows of one equipment not yet ended: enough for a year of weekly defrosts.
MAX_PENDING_PER_EQUIPMENT = 100
MAX_REASON_CHARS = 500
MAX_UUID_CHARS = 128
MAX_WINDOW_BODY_BYTES = 16 * 1024
DEFAULT_WINDOWS_PAGE = 100
_FIELDS = ("equipment_uuid", "starts_at", "ends_at", "reason")

_WINDOW_SELECT = (
    "SELECT w.id, w.starts_at, w.ends_at, w.reason, w.created_at, w.created_by, e.uuid AS equipment_uuid"
    " FROM maintenance_windows w JOIN equipment e ON e.id = w.equipment_id"
)


def window_view(row: Mapping) -> dict:
    return {
        "id": str(row["id"]),
        "equipment_uuid": row["equipment_uuid"],
        "starts_at": iso(row["starts_at"]),
        "ends_at": iso(row["ends_at"]),
        "reason": row["reason"],
        "created_at": iso(row["created_at"]),
        "created_by": str(row["created_by"]) if row["created_by"] is not None else None,
    }


def parse_window_body(body: object, now: datetime) -> tuple[str, datetime, datetime, str | None]:
    """(equipment_uuid, starts_at, ends_at, reason) of a body, or a 422 naming every problem."""
    check = BodyProblems(body, _FIELDS)
    equipment_uuid = check.string("equipment_uuid", MAX_UUID_CHARS, required=True)
    starts_at = check.time("starts_at", required=True)
    ends_at = check.time("ends_at", required=True)
    reason = check.string("reason", MAX_REASON_CHARS, nullable=True)
    if reason is not None and "\x00" in reason:
        check.add("$.reason", "must not hold NUL characters")
    if starts_at is not None and ends_at is not None:
        if ends_at <= starts_at:
            check.add("$.ends_at", "must be after starts_at")
        elif ends_at - starts_at > MAX_WINDOW:
            check.add("$.ends_at", f"a window lasts at most {MAX_WINDOW.days} days")
    if starts_at is not None and starts_at < now - MAX_PAST:
        check.add("$.starts_at", f"must be at most {MAX_PAST.days} days ago")
    if starts_at is not None and starts_at > now + MAX_AHEAD:
        check.add("$.starts_at", f"must be at most {MAX_AHEAD.days} days ahead")
    check.raise_if_any()
    return equipment_uuid, starts_at, ends_at, reason  # type: ignore[return-value]


class MaintenanceWindows:
    def __init__(self, db: Database, clock: Clock = utc_now) -> None:
        self.db = db
        self.clock = clock

    def list(self, principal: Principal, args: Mapping[str, str]) -> dict:
        """The tenant's windows, latest start first, by keyset pages; `equipment_uuid` filters, and `start_date` /
        `end_date` select the windows that overlap [start_date, end_date)."""
        require_role(principal, Role.VIEWER)
        limit = parse_limit(args.get("limit"), DEFAULT_WINDOWS_PAGE)
        after = decode_cursor(args.get("cursor"), "maintenance", (str, str))
        params: dict = {"tenant": principal.tenant_id, "limit": limit + 1}
        where = ["w.tenant_id = %(tenant)s"]
        start, end = parse_window(args)
        if start is not None:
            where.append("w.ends_at > %(start)s")
            params["start"] = start
        if end is not None:
            where.append("w.starts_at < %(end)s")
            params["end"] = end
        if args.get("equipment_uuid"):
            where.append("e.uuid = %(equipment)s")
            params["equipment"] = args["equipment_uuid"][:MAX_UUID_CHARS]
        if after:
            where.append(newest_first_after("w.starts_at", "w.id"))
            params.update(after_time=after[0], after_id=cursor_uuid(after[1]))
        with self.db.transaction() as cursor:
            cursor.execute(
                f"{_WINDOW_SELECT} WHERE {' AND '.join(where)} ORDER BY w.starts_at DESC, w.id LIMIT %(limit)s", params
            )
            rows = dict_rows(cursor)
        page, more = rows[:limit], len(rows) > limit
        return {
            "windows": [window_view(row) for row in page],
            "next_cursor": encode_cursor("maintenance", iso(page[-1]["starts_at"]), str(page[-1]["id"]))
            if more
            else None,
        }

    def create(self, principal: Principal, body: object) -> dict:
        require_role(principal, Role.ADMIN)
        now = self.clock()
        equipment_uuid, starts_at, ends_at, reason = parse_window_body(body, now)
        window_id = str(uuid.uuid4())
        with self.db.transaction() as cursor:
            # One writer at a time per tenant (the engine's lock), so concurrent creations cannot pass the bound.
            store.lock_tenant(cursor, principal.tenant_id)
            equipment_id = _equipment_id(cursor, principal.tenant_id, equipment_uuid)
            cursor.execute(
                "SELECT count(*) FROM maintenance_windows WHERE equipment_id = %s AND ends_at > %s", (equipment_id, now)
            )
            if one_row(cursor)[0] >= MAX_PENDING_PER_EQUIPMENT:
                raise UnprocessableError(
                    f"the equipment has {MAX_PENDING_PER_EQUIPMENT} maintenance windows not yet ended, the most it"
                    " may have; delete some first",
                    paths=["$"],
                )
            cursor.execute(
                "INSERT INTO maintenance_windows (id, tenant_id, equipment_id, starts_at, ends_at, reason, created_at,"
                " created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (window_id, principal.tenant_id, equipment_id, starts_at, ends_at, reason, now, principal.account_id),
            )
            return window_view(_row(cursor, principal.tenant_id, window_id))

    def delete(self, principal: Principal, window_id: str) -> None:
        """Rules fire again from then on for what the window held, including late readings of its time."""
        require_role(principal, Role.ADMIN)
        window_id = path_uuid("maintenance window", window_id)
        with self.db.transaction() as cursor:
            store.lock_tenant(cursor, principal.tenant_id)
            cursor.execute(
                "DELETE FROM maintenance_windows WHERE tenant_id = %s AND id = %s", (principal.tenant_id, window_id)
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"maintenance window {window_id} not found")


def _equipment_id(cursor: psycopg2.extensions.cursor, tenant_id: str, equipment_uuid: str) -> int:
    equipment_id = store.id_by_uuid(cursor, "equipment", tenant_id, equipment_uuid)
    if equipment_id is None:
        raise UnprocessableError(
            f"$.equipment_uuid: the tenant has no equipment {equipment_uuid!r}", paths=["$.equipment_uuid"]
        )
    return equipment_id


def _row(cursor: psycopg2.extensions.cursor, tenant_id: str, window_id: str) -> dict:
    cursor.execute(f"{_WINDOW_SELECT} WHERE w.tenant_id = %s AND w.id = %s", (tenant_id, window_id))
    [row] = dict_rows(cursor)
    return row
