"""The alerting SQL, in one place: rules in scope, readings, open and recent alerts, upload cadence, the
processed-batch record and the lifecycle's row changes."""

from __future__ import annotations

from datetime import datetime

import psycopg2.extensions

# An alert row as alert_view reads it: the alerts table's columns plus the equipment's and sensor's uuids.
ALERT_SELECT = (
    "SELECT a.*, e.uuid AS equipment_uuid, s.uuid AS sensor_uuid"
    " FROM alerts a JOIN equipment e ON e.id = a.equipment_id LEFT JOIN sensors s ON s.id = a.sensor_id"
)


def _dicts(cursor: psycopg2.extensions.cursor) -> list[dict]:
    names = [column.name for column in cursor.description or ()]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _dict(cursor: psycopg2.extensions.cursor) -> dict | None:
    rows = _dicts(cursor)
    return rows[0] if rows else None


# --- The lifecycle -------------------------------------------------------------------------------


def lock_alert(cursor: psycopg2.extensions.cursor, tenant_id: str, alert_id: str) -> dict | None:
    cursor.execute(f"{ALERT_SELECT} WHERE a.tenant_id = %s AND a.id = %s FOR UPDATE OF a", (tenant_id, alert_id))
    return _dict(cursor)


def mark_acknowledged(
    cursor: psycopg2.extensions.cursor, alert_id: str, account_id: str, comment: str | None, now: datetime
) -> None:
    cursor.execute(
        "UPDATE alerts SET state = 'acknowledged', acknowledged_by = %s, acknowledged_at = %s, ack_comment = %s,"
        " updated_at = %s WHERE id = %s",
        (account_id, now, comment, now, alert_id),
    )


def mark_snoozed(cursor: psycopg2.extensions.cursor, alert_id: str, until: datetime | None, now: datetime) -> None:
    cursor.execute("UPDATE alerts SET snoozed_until = %s, updated_at = %s WHERE id = %s", (until, now, alert_id))


def alert_for_event(cursor: psycopg2.extensions.cursor, alert_id: str) -> dict:
    """The alert with what its transition event carries: names, kind, unit, the rule, the tenant's zone."""
    cursor.execute(
        "SELECT a.*, e.uuid AS equipment_uuid, s.uuid AS sensor_uuid, e.name AS equipment_name,"
        " s.name AS sensor_name, s.kind AS sensor_kind, s.unit, r.above AS rule_above, r.below AS rule_below,"
        " r.for_s AS rule_for_s, r.name AS rule_name, t.timezone"
        " FROM alerts a JOIN equipment e ON e.id = a.equipment_id LEFT JOIN sensors s ON s.id = a.sensor_id"
        " JOIN alert_rules r ON r.id = a.rule_id JOIN tenants t ON t.id = a.tenant_id WHERE a.id = %s",
        (alert_id,),
    )
    row = _dict(cursor)
    if row is None:
        raise RuntimeError(f"alert {alert_id} vanished inside its own transaction")
    return row
