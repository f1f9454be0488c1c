"""The alerts API: the tenant's alerts with filters and keyset pages, their acknowledgement and snooze, and the
open alerts of one equipment (the Home Assistant view). Alerts have one shape everywhere: lifecycle.alert_view.

Newest first (`started_at` descending, then id), the order of the index alerts_tenant_started. `start_date`
and `end_date` select the alerts that were open at some time in [start_date, end_date): started before its
end, and not resolved before its start. Device tokens read alerts only through the Home Assistant view: a
reading does not record which device's batch carried it, so "the equipment this device uploaded" has no cheap
answer yet.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Mapping

import psycopg2.extensions

from easysmart.admin.bodies import BodyProblems
from easysmart.alerting import lifecycle, store
from easysmart.alerting.store import ALERT_SELECT
from easysmart.authz import Role, require_role
from easysmart.clock import Clock, utc_now
from easysmart.db import Database, dict_rows
from easysmart.errors import BadRequestError, ConflictError, ForbiddenError, NotFoundError
from easysmart.identity import Principal
from easysmart.params import (
    bad_parameter,
    cursor_uuid,
    decode_cursor,
    encode_cursor,
    iso,
    newest_first_after,
    parse_limit,
    parse_window,
    path_uuid,
)

STATES = ("firing", "acknowledged", "resolved", "open")  # open: firing or acknowledged
SEVERITIES = ("warning", "critical")
DEFAULT_ALERTS_PAGE = 100
MAX_COMMENT_CHARS = 2000
MAX_ACK_BODY_BYTES = 16 * 1024
MAX_SNOOZE_BODY_BYTES = 1024
# A snooze holds back the reminders of a critical alert nobody acknowledged: a week at most, a minute at least.
MAX_SNOOZE = timedelta(days=7)
MIN_SNOOZE = timedelta(minutes=1)
# The Home Assistant view shows at most this many open alerts of an equipment, newest first.
MAX_OPEN_ALERTS_SHOWN = 100


def parse_comment(body: object) -> str | None:
    """The optional comment of an acknowledgement: {} / no body, or {"comment": "..."}."""
    if body is None:
        return None
    if not isinstance(body, dict):
        raise BadRequestError('the body must be a JSON object: {"comment": "..."} or {}', parameter="body")
    unknown = sorted(str(name)[:64] for name in body if name != "comment")
    if unknown:
        raise BadRequestError(f"{unknown[0]}: not a field of an acknowledgement (only comment)", parameter=unknown[0])
    comment = body.get("comment")
    if comment is None:
        return None
    if not isinstance(comment, str):
        raise bad_parameter("comment", "must be a string")
    comment = comment.strip()
    if len(comment) > MAX_COMMENT_CHARS:
        raise bad_parameter("comment", f"must be at most {MAX_COMMENT_CHARS} characters, not {len(comment)}")
    if "\x00" in comment:
        raise bad_parameter("comment", "must not hold NUL characters")
    return comment or None


def parse_snooze(body: object, now: datetime) -> datetime | None:
    """Until when a snooze body says: {"for_s": seconds} or {"until": "<time with offset>"}; {"until": null} lifts
    the snooze (None)."""
    check = BodyProblems(body, ("until", "for_s"))
    given = [name for name in ("until", "for_s") if name in check.body]
    if len(given) != 1 and not check.problems:
        check.add("$", "give exactly one of for_s (seconds) or until (a time; null lifts the snooze)")
    check.raise_if_any()
    if given == ["until"] and check.body["until"] is None:
        return None
    if given == ["for_s"]:
        seconds = check.integer("for_s", int(MIN_SNOOZE.total_seconds()), int(MAX_SNOOZE.total_seconds()))
        check.raise_if_any()
        return now + timedelta(seconds=seconds)  # type: ignore[arg-type]
    until = check.time("until")
    if until is not None and not now + MIN_SNOOZE <= until <= now + MAX_SNOOZE:
        check.add("$.until", f"must be between a minute and {MAX_SNOOZE.days} days from now")
    check.raise_if_any()
    return until


def open_alerts(cursor: psycopg2.extensions.cursor, equipment_id: int) -> list[dict]:
    """The open (firing or acknowledged) alerts of an equipment, newest first, in the caller's transaction."""
    cursor.execute(
        f"{ALERT_SELECT} WHERE a.equipment_id = %s AND a.state <> 'resolved' ORDER BY a.started_at DESC, a.id LIMIT %s",
        (equipment_id, MAX_OPEN_ALERTS_SHOWN),
    )
    return [lifecycle.alert_view(row) for row in dict_rows(cursor)]


class AlertsService:
    def __init__(self, db: Database, clock: Clock = utc_now) -> None:
        self.db = db
        self.clock = clock

    def list(self, principal: Principal, args: Mapping[str, str]) -> dict:
        if principal.kind != "user":
            raise ForbiddenError(
                "device tokens read open alerts through /api/v1/analytics/home-assistant/{uuid}; log in as a user"
            )
        require_role(principal, Role.VIEWER)
        limit = parse_limit(args.get("limit"), DEFAULT_ALERTS_PAGE)
        after = decode_cursor(args.get("cursor"), "alerts", (str, str))
        params: dict = {"tenant": principal.tenant_id, "limit": limit + 1}
        where = ["a.tenant_id = %(tenant)s"]
        state = args.get("state")
        if state:
            if state not in STATES:
                raise bad_parameter("state", f"must be one of {', '.join(STATES)}, not {state[:32]!r}")
            where.append("a.state <> 'resolved'" if state == "open" else "a.state = %(state)s")
            params["state"] = state
        severity = args.get("severity")
        if severity:
            if severity not in SEVERITIES:
                raise bad_parameter("severity", f"must be one of {', '.join(SEVERITIES)}, not {severity[:32]!r}")
            where.append("a.severity = %(severity)s")
            params["severity"] = severity
        start, end = parse_window(args)
        if start is not None:
            where.append("(a.ended_at IS NULL OR a.ended_at >= %(start)s)")
            params["start"] = start
        if end is not None:
            where.append("a.started_at < %(end)s")
            params["end"] = end
        if after:
            where.append(newest_first_after("a.started_at", "a.id"))
            params.update(after_time=after[0], after_id=cursor_uuid(after[1]))
        with self.db.transaction() as cursor:
            for name, table in (("equipment_uuid", "equipment"), ("sensor_uuid", "sensors")):
                if args.get(name):
                    params[name] = _id_of(cursor, table, principal.tenant_id, name, args[name])
                    where.append(f"a.{name.replace('_uuid', '_id')} = %({name})s")
            cursor.execute(
                f"{ALERT_SELECT} WHERE {' AND '.join(where)} ORDER BY a.started_at DESC, a.id LIMIT %(limit)s", params
            )
            rows = dict_rows(cursor)
        page, more = rows[:limit], len(rows) > limit
        return {
            "alerts": [lifecycle.alert_view(row) for row in page],
            "next_cursor": encode_cursor("alerts", iso(page[-1]["started_at"]), str(page[-1]["id"])) if more else None,
        }

    def acknowledge(self, principal: Principal, alert_id: str, body: object) -> dict:
        """Viewers may acknowledge: the person on duty who saw it and acted."""
        require_role(principal, Role.VIEWER)
        comment = parse_comment(body)
        alert_id = path_uuid("alert", alert_id)
        view = lifecycle.acknowledge(
            self.db, principal.tenant_id, alert_id, principal.account_id, comment, self.clock()
        )
        if view is None:
            raise NotFoundError(f"alert {alert_id} not found")
        return view

    def snooze(self, principal: Principal, alert_id: str, body: object) -> dict:
        """Viewers may snooze, as they may acknowledge: no reminder of the alert is sent until the snooze ends.
        The alert stays open and still resolves; 409 for a resolved one."""
        require_role(principal, Role.VIEWER)
        now = self.clock()
        until = parse_snooze(body, now)
        alert_id = path_uuid("alert", alert_id)
        view = lifecycle.snooze(self.db, principal.tenant_id, alert_id, until, now)
        if view is None:
            raise NotFoundError(f"alert {alert_id} not found")
        if view["state"] == "resolved":
            raise ConflictError(f"alert {alert_id} is resolved: there is nothing to snooze")
        return view


def _id_of(cursor: psycopg2.extensions.cursor, table: str, tenant_id: str, parameter: str, raw: str) -> int:
    """The id of the tenant's equipment or sensor a filter names; 404 for one it does not have."""
    found = store.id_by_uuid(cursor, table, tenant_id, raw)
    if found is None:
        raise NotFoundError(f"{parameter}: the tenant has no {table.rstrip('s')} {raw[:64]!r}", parameter=parameter)
    return found
