"""The alerting SQL, in one place: rules in scope, readings, open and recent alerts, upload cadence, the
processed-batch record and the lifecycle's row changes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg2.extensions

from easysmart.db import PreparedStatement, prepared

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
        "UPDATE alerts SET state = CASE WHEN state = 'firing' THEN 'acknowledged' ELSE state END,"
        " acknowledged_by = %s, acknowledged_at = %s, ack_comment = %s, updated_at = %s WHERE id = %s",
        (account_id, now, comment, now, alert_id),
    )


def mark_snoozed(cursor: psycopg2.extensions.cursor, alert_id: str, until: datetime | None, now: datetime) -> None:
    cursor.execute("UPDATE alerts SET snoozed_until = %s, updated_at = %s WHERE id = %s", (until, now, alert_id))


def alert_for_event(cursor: psycopg2.extensions.cursor, alert_id: str) -> dict:
    """The alert with what its transition event carries: names, kind, unit, the rule, the tenant's zone."""
    cursor.execute(
        "SELECT a.*, e.uuid AS equipment_uuid, s.uuid AS sensor_uuid,"
        " coalesce(e.display_name, e.name) AS equipment_name, s.name AS sensor_name, s.kind AS sensor_kind, s.unit,"
        " r.above AS rule_above, r.below AS rule_below,"
        " r.for_s AS rule_for_s, r.name AS rule_name, t.timezone"
        " FROM alerts a JOIN equipment e ON e.id = a.equipment_id LEFT JOIN sensors s ON s.id = a.sensor_id"
        " JOIN alert_rules r ON r.id = a.rule_id JOIN tenants t ON t.id = a.tenant_id WHERE a.id = %s",
        (alert_id,),
    )
    row = _dict(cursor)
    if row is None:
        raise RuntimeError(f"alert {alert_id} vanished inside its own transaction")
    return row


# --- Evaluation ----------------------------------------------------------------------------------


# The statements every stored batch runs, prepared (see easysmart.db.PreparedStatement).
_LOCK_TENANT = PreparedStatement(
    "alerts_lock_tenant", "SELECT pg_advisory_xact_lock(hashtext('esm_alerts:' || %(tenant)s))", tenant="text"
)
_CLAIM = PreparedStatement(
    "alerts_claim_batch",
    "WITH claimed AS (INSERT INTO alert_processed_batches (batch_id, tenant_id, processed_at)"
    "  VALUES (%(batch)s, %(tenant)s, %(now)s) ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id)"
    " SELECT EXISTS (SELECT 1 FROM claimed),"
    "  ARRAY(SELECT id FROM sensors WHERE tenant_id = %(tenant)s AND id = ANY(%(sensors)s)),"
    "  ARRAY(SELECT id FROM equipment WHERE tenant_id = %(tenant)s AND id = ANY(%(equipment)s) ORDER BY id)",
    batch="uuid",
    tenant="uuid",
    now="timestamptz",
    sensors="bigint[]",
    equipment="bigint[]",
)
_NOTE_LAST_UPLOAD = PreparedStatement(
    "alerts_note_last_upload",
    "INSERT INTO alert_equipment_state (equipment_id, tenant_id, last_received_at)"
    " SELECT unnest(%(ids)s::bigint[]), %(tenant)s, %(at)s ON CONFLICT (equipment_id) DO UPDATE"
    " SET last_received_at = greatest(alert_equipment_state.last_received_at, EXCLUDED.last_received_at)",
    ids="bigint[]",
    tenant="uuid",
    at="timestamptz",
)
_NOTE_UPLOAD = PreparedStatement(
    "alerts_note_upload",
    "INSERT INTO alert_equipment_uploads (equipment_id, received_at) SELECT unnest(%(ids)s::bigint[]), %(at)s"
    " ON CONFLICT DO NOTHING",
    ids="bigint[]",
    at="timestamptz",
)
_FORGET_OLD_UPLOADS = PreparedStatement(
    "alerts_forget_old_uploads",
    "DELETE FROM alert_equipment_uploads u USING ("
    "  SELECT equipment_id, received_at, row_number() OVER (PARTITION BY equipment_id ORDER BY received_at DESC) n"
    "  FROM alert_equipment_uploads WHERE equipment_id = ANY(%(ids)s)) old"
    " WHERE u.equipment_id = old.equipment_id AND u.received_at = old.received_at AND old.n > %(keep)s",
    ids="bigint[]",
    keep="integer",
)
_UPLOAD_TIMES = PreparedStatement(
    "alerts_upload_times",
    "SELECT equipment_id, received_at FROM alert_equipment_uploads WHERE equipment_id = ANY(%(ids)s)",
    ids="bigint[]",
)
_FOLLOW_UPLOAD = PreparedStatement(
    "alerts_follow_upload",
    "WITH resolved AS ("
    "  UPDATE alerts SET state = 'resolved', ended_at = %(at)s, peak_value = NULL,"
    "         transitions = greatest(transitions, 1) + 1, updated_at = %(now)s"
    "  WHERE type = 'silence' AND state <> 'resolved' AND equipment_id = ANY(%(ids)s) AND started_at < %(at)s"
    "  RETURNING id),"
    " wanted AS ("
    "  SELECT id AS equipment_id, coalesce(siren_active, false) AND siren_time_s IS NOT NULL AS active,"
    "         siren_time_s FROM equipment"
    "  WHERE tenant_id = %(tenant)s AND id = ANY(%(ids)s)"
    "    AND (siren_active OR EXISTS (SELECT 1 FROM alert_rules r WHERE r.equipment_id = equipment.id"
    "                                 AND r.origin = 'client'))),"
    " changed AS ("
    "  INSERT INTO alert_rules (id, tenant_id, type, origin, severity, name, equipment_id, sensor_kind, for_s,"
    "                           enabled, created_at, updated_at)"
    "  SELECT gen_random_uuid(), %(tenant)s, 'door_open', 'client', 'warning',"
    "         'door open (client siren)', w.equipment_id, 'door', coalesce(w.siren_time_s, 0), w.active,"
    "         %(now)s, %(now)s FROM wanted w"
    "  ON CONFLICT (equipment_id) WHERE origin = 'client' DO UPDATE"
    "  SET for_s = EXCLUDED.for_s, enabled = EXCLUDED.enabled, updated_at = EXCLUDED.updated_at"
    "  WHERE NOT alert_rules.user_edited AND alert_rules.deleted_at IS NULL"
    "    AND (alert_rules.for_s IS DISTINCT FROM EXCLUDED.for_s OR alert_rules.enabled <> EXCLUDED.enabled)"
    "  RETURNING 1)"
    " SELECT (SELECT count(*) FROM changed), ARRAY(SELECT id::text FROM resolved ORDER BY id)",
    tenant="uuid",
    ids="bigint[]",
    at="timestamptz",
    now="timestamptz",
)
# The columns evaluation reads (a prepared statement names its columns: see PreparedStatement).
_RULES_FOR = PreparedStatement(
    "alerts_rules_for",
    "SELECT id, type, severity, equipment_id, sensor_id, sensor_kind, above, below, hysteresis, for_s, resolve_for_s"
    " FROM alert_rules WHERE tenant_id = %(tenant)s AND enabled AND deleted_at IS NULL AND type <> 'silence'"
    " AND (sensor_id = ANY(%(sensors)s)"
    "      OR (sensor_id IS NULL AND (equipment_id IS NULL OR equipment_id = ANY(%(equipment)s))))",
    tenant="uuid",
    sensors="bigint[]",
    equipment="bigint[]",
)


def id_by_uuid(cursor: psycopg2.extensions.cursor, table: str, tenant_id: str, uuid: str) -> int | None:
    """The id of the tenant's equipment or sensor (`table`: "equipment" or "sensors") with that uuid, if any."""
    if table not in ("equipment", "sensors"):
        raise ValueError(f"not a table of uuids: {table}")
    cursor.execute(f"SELECT id FROM {table} WHERE tenant_id = %s AND uuid = %s", (tenant_id, uuid))
    row = cursor.fetchone()
    return None if row is None else row[0]


def lock_tenant(cursor: psycopg2.extensions.cursor, tenant_id: str) -> None:
    """One evaluation per tenant at a time (arrivals and the tick): each sees the alerts the other wrote."""
    cursor.execute(prepared(cursor, _LOCK_TENANT), {"tenant": tenant_id})


@dataclass(frozen=True)
class Arrival:
    """What an arriving batch may touch: whether it is new, and which of its sensors and equipment the tenant owns."""

    new: bool
    sensors: set[int]
    equipment: list[int]


def claim_batch(
    cursor: psycopg2.extensions.cursor,
    tenant_id: str,
    batch_id: str,
    now: datetime,
    sensor_ids: list[int],
    equipment_ids: list[int],
) -> Arrival:
    """Locks the tenant and records the batch as evaluated (not new when it already was: a redelivered event), in
    one round trip that also reads which of the event's sensors and equipment are the tenant's."""
    cursor.execute(
        prepared(cursor, _LOCK_TENANT, _CLAIM),
        {"tenant": tenant_id, "batch": batch_id, "now": now, "sensors": sensor_ids, "equipment": equipment_ids},
    )
    new, sensors, equipment = cursor.fetchone()  # type: ignore[misc]
    return Arrival(new, set(sensors), list(equipment))


def record_uploads(
    cursor: psycopg2.extensions.cursor, tenant_id: str, equipment_ids: list[int], received_at: datetime, keep: int
) -> dict[int, list[datetime]]:
    """Notes an upload of each equipment and keeps its `keep` most recent upload times; returns those times (the
    upload cadence), in one round trip."""
    if not equipment_ids:
        return {}
    cursor.execute(
        prepared(cursor, _NOTE_LAST_UPLOAD, _NOTE_UPLOAD, _FORGET_OLD_UPLOADS, _UPLOAD_TIMES),
        {"ids": equipment_ids, "tenant": tenant_id, "at": received_at, "keep": keep},
    )
    return _times_by_equipment(cursor)


def upload_times(cursor: psycopg2.extensions.cursor, equipment_ids: list[int]) -> dict[int, list[datetime]]:
    cursor.execute(prepared(cursor, _UPLOAD_TIMES), {"ids": equipment_ids})
    return _times_by_equipment(cursor)


def _times_by_equipment(cursor: psycopg2.extensions.cursor) -> dict[int, list[datetime]]:
    times: dict[int, list[datetime]] = {}
    for equipment_id, received_at in cursor.fetchall():
        times.setdefault(equipment_id, []).append(received_at)
    return times


def follow_upload(
    cursor: psycopg2.extensions.cursor, tenant_id: str, equipment_ids: list[int], received_at: datetime, now: datetime
) -> tuple[int, list[str]]:
    """What an upload settles by itself, in one statement: the equipment's open silence alerts that began before
    it are resolved at its arrival, and each equipment's client door rule follows its siren settings (created when
    the siren is on, its duration the client's, disabled when the client turns it off; a rule a user edited or
    deleted is left as it is). Returns (client rules created or changed, silence alerts resolved)."""
    cursor.execute(
        prepared(cursor, _FOLLOW_UPLOAD), {"tenant": tenant_id, "ids": equipment_ids, "at": received_at, "now": now}
    )
    changed, resolved = cursor.fetchone()  # type: ignore[misc]
    return int(changed), list(resolved)


def rules_for(
    cursor: psycopg2.extensions.cursor, tenant_id: str, sensor_ids: list[int], equipment_ids: list[int]
) -> list[dict]:
    """The tenant's enabled rules that may watch these sensors: theirs, their equipment's, the tenant's."""
    cursor.execute(
        prepared(cursor, _RULES_FOR), {"tenant": tenant_id, "sensors": sensor_ids, "equipment": equipment_ids}
    )
    return _dicts(cursor)


def readings(
    cursor: psycopg2.extensions.cursor,
    sensor_id: int,
    column: str,
    start: datetime,
    end: datetime,
    with_previous: bool = False,
) -> list[tuple[datetime, float]]:
    """(ts, value) of the sensor's readings in [start, end] that carry the column (value or battery_pct), and
    with_previous the last one before start (a held state, such as a door's, began with it)."""
    if column not in ("value", "battery_pct"):
        raise ValueError(f"not a watched column: {column}")
    cursor.execute(
        f"SELECT ts, {column} FROM telemetry_data WHERE sensor_id = %s AND ts BETWEEN %s AND %s"
        f" AND {column} IS NOT NULL ORDER BY ts",
        (sensor_id, start, end),
    )
    found = [(ts, float(value)) for ts, value in cursor.fetchall()]
    if with_previous:
        cursor.execute(
            f"SELECT ts, {column} FROM telemetry_data WHERE sensor_id = %s AND ts < %s AND {column} IS NOT NULL"
            " ORDER BY ts DESC LIMIT 1",
            (sensor_id, start),
        )
        found[:0] = [(ts, float(value)) for ts, value in cursor.fetchall()]
    return found


def alerts_near(
    cursor: psycopg2.extensions.cursor,
    rule_id: str,
    equipment_id: int,
    sensor_id: int | None,
    start: datetime,
    end: datetime,
) -> list[dict]:
    """The rule's alerts of this sensor (or equipment) that are open or overlap [start, end], oldest first."""
    cursor.execute(
        "SELECT * FROM alerts WHERE rule_id = %s AND equipment_id = %s AND sensor_id IS NOT DISTINCT FROM %s"
        " AND (state <> 'resolved' OR (started_at <= %s AND ended_at >= %s)) ORDER BY started_at FOR UPDATE",
        (rule_id, equipment_id, sensor_id, end, start),
    )
    return _dicts(cursor)


def maintenance_windows(
    cursor: psycopg2.extensions.cursor, equipment_id: int, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    cursor.execute(
        "SELECT starts_at, ends_at FROM maintenance_windows WHERE equipment_id = %s AND ends_at > %s"
        " AND starts_at <= %s",
        (equipment_id, start, end),
    )
    return [(row[0], row[1]) for row in cursor.fetchall()]


def insert_alert(cursor: psycopg2.extensions.cursor, alert: dict) -> bool:
    """Adds the alert; False when it exists already (same id) or its rule and sensor have one open already."""
    columns = ", ".join(alert)
    cursor.execute(
        f"INSERT INTO alerts ({columns}) VALUES ({', '.join(['%s'] * len(alert))}) ON CONFLICT DO NOTHING RETURNING id",
        tuple(alert.values()),
    )
    return cursor.fetchone() is not None


def resolve_alert(
    cursor: psycopg2.extensions.cursor,
    alert_id: str,
    ended_at: datetime,
    peak_value: float | None,
    folded: int,
    now: datetime,
) -> None:
    """`folded`: the transitions folded into the alert that this evaluation saw. Consecutive evaluations read
    overlapping readings, so `transitions` keeps the largest count seen rather than a sum (never one twice)."""
    cursor.execute(
        "UPDATE alerts SET state = 'resolved', ended_at = %s, peak_value = %s,"
        " transitions = greatest(transitions, 1 + %s) + 1, updated_at = %s WHERE id = %s",
        (ended_at, peak_value, folded, now, alert_id),
    )


def update_open_alert(
    cursor: psycopg2.extensions.cursor, alert_id: str, peak_value: float | None, folded: int, now: datetime
) -> None:
    cursor.execute(
        "UPDATE alerts SET peak_value = %s, transitions = greatest(transitions, 1 + %s), updated_at = %s WHERE id = %s",
        (peak_value, folded, now, alert_id),
    )


# --- Silence -------------------------------------------------------------------------------------


def processing_lag_s(cursor: psycopg2.extensions.cursor, now: datetime, since: datetime) -> float:
    """How far behind the backend is (seconds): the oldest of what arrived since `since` and still waits, a batch
    to be processed, a stored event to be published, a published one to be evaluated."""
    cursor.execute(
        "SELECT least("
        " (SELECT min(received_at) FROM batches"
        "   WHERE status IN ('accepted', 'processing') AND received_at > %(since)s),"
        " (SELECT min(created_at) FROM event_outbox"
        "   WHERE topic = 'telemetry.stored' AND published_at IS NULL AND refused_at IS NULL"
        "   AND created_at > %(since)s),"
        " (SELECT min(o.created_at) FROM event_outbox o WHERE o.topic = 'telemetry.stored'"
        "   AND o.published_at IS NOT NULL AND o.created_at > %(since)s"
        "   AND NOT EXISTS (SELECT 1 FROM alert_processed_batches p WHERE p.batch_id::text = o.data->>'batch_id')))",
        {"since": since},
    )
    oldest = cursor.fetchone()[0]  # type: ignore[index]
    return max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0


def tenants_with_silence_rules(cursor: psycopg2.extensions.cursor) -> list[str]:
    cursor.execute(
        "SELECT DISTINCT tenant_id::text FROM alert_rules WHERE type = 'silence' AND enabled AND deleted_at IS NULL"
    )
    return [row[0] for row in cursor.fetchall()]


def silence_rules(cursor: psycopg2.extensions.cursor, tenant_id: str) -> list[dict]:
    cursor.execute(
        "SELECT * FROM alert_rules WHERE tenant_id = %s AND type = 'silence' AND enabled AND deleted_at IS NULL",
        (tenant_id,),
    )
    return _dicts(cursor)


def equipment_last_uploads(cursor: psycopg2.extensions.cursor, tenant_id: str) -> dict[int, datetime]:
    """Of the tenant's equipment that is not retired: silence rules never watch a retired one."""
    cursor.execute(
        "SELECT s.equipment_id, s.last_received_at FROM alert_equipment_state s"
        " JOIN equipment e ON e.id = s.equipment_id WHERE s.tenant_id = %s AND e.retired_at IS NULL",
        (tenant_id,),
    )
    return dict(cursor.fetchall())


# --- Retention -----------------------------------------------------------------------------------


def prune(cursor: psycopg2.extensions.cursor, resolved_before: datetime, evaluated_before: datetime) -> int:
    cursor.execute("DELETE FROM alerts WHERE state = 'resolved' AND ended_at < %s", (resolved_before,))
    pruned = cursor.rowcount
    cursor.execute("DELETE FROM alert_processed_batches WHERE processed_at < %s", (evaluated_before,))
    return pruned
