"""The alert lifecycle: firing → acknowledged → resolved, snoozes, and the shape alerts have in the API and in
their transition events.

Every transition is enqueued on the outbox in the transaction that changes the alert's row, with a CloudEvents
id derived from (alert, transition, sequence): a transition written twice (a redelivered event evaluated again)
carries the same id, so the outbox keeps one.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Mapping

import psycopg2.extensions

from easysmart.alerting import store
from easysmart.db import Database
from easysmart.outbox import (
    ALERT_ACKNOWLEDGED_TYPE,
    ALERT_EVENTS_TOPIC,
    ALERT_FIRED_TYPE,
    ALERT_RESOLVED_TYPE,
    OutboxEvent,
    enqueue,
)

EVENT_SOURCE = "/easysmart/alerts"
# The namespace of the transition events' ids.
EVENT_NAMESPACE = uuid.UUID("5d0c1f59-7a53-4d39-9b43-2a64c6f1e0a9")
# Each transition happens at most once per alert (an alert is never reopened: flapping keeps it open instead).
_SEQUENCE = {"fired": 1, "acknowledged": 2, "resolved": 3}
_TYPES = {"fired": ALERT_FIRED_TYPE, "acknowledged": ALERT_ACKNOWLEDGED_TYPE, "resolved": ALERT_RESOLVED_TYPE}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def alert_view(row: Mapping) -> dict:
    """An alert as the API answers it. `row` maps the alerts table's columns plus `equipment_uuid` and
    `sensor_uuid` (store.ALERT_SELECT selects exactly that)."""
    started, ended = row["started_at"], row["ended_at"]
    return {
        "id": str(row["id"]),
        "rule_id": str(row["rule_id"]),
        "type": row["type"],
        "severity": row["severity"],
        "state": row["state"],
        "equipment_uuid": row["equipment_uuid"],
        "sensor_uuid": row["sensor_uuid"],
        "started_at": _iso(started),
        "ended_at": _iso(ended),
        "duration_s": (ended - started).total_seconds() if ended is not None else None,
        "trigger_value": row["trigger_value"],
        "peak_value": row["peak_value"],
        "late": row["late"],
        "learnt_at": _iso(row["learnt_at"]),
        "acknowledged_by": str(row["acknowledged_by"]) if row["acknowledged_by"] is not None else None,
        "acknowledged_at": _iso(row["acknowledged_at"]),
        "ack_comment": row["ack_comment"],
        "snoozed_until": _iso(row["snoozed_until"]),
        "transitions": row["transitions"],
    }


def emit(cursor: psycopg2.extensions.cursor, alert_id: str, transition: str) -> None:
    """Enqueues the alert's transition, with the alert as it now is, in the caller's transaction."""
    row = store.alert_for_event(cursor, alert_id)
    data = {
        "tenant_id": str(row["tenant_id"]),
        "timezone": row["timezone"],
        "transition": transition,
        "sequence": _SEQUENCE[transition],
        "alert": {
            **alert_view(row),
            "equipment_name": row["equipment_name"],
            "sensor_name": row["sensor_name"],
            "sensor_kind": row["sensor_kind"],
            "unit": row["unit"],
            "rule": {
                "above": row["rule_above"],
                "below": row["rule_below"],
                "for_s": row["rule_for_s"],
                "name": row["rule_name"],
            },
        },
    }
    enqueue(
        cursor,
        OutboxEvent(
            topic=ALERT_EVENTS_TOPIC,
            kafka_key=str(row["tenant_id"]),
            type=_TYPES[transition],
            source=EVENT_SOURCE,
            subject=str(alert_id),
            data=data,
            event_id=uuid.uuid5(EVENT_NAMESPACE, f"{alert_id}:{transition}:{_SEQUENCE[transition]}"),
        ),
    )


def acknowledge(
    db: Database, tenant_id: str, alert_id: str, account_id: str, comment: str | None, now: datetime
) -> dict | None:
    """Acknowledges a firing alert (who, when, the comment kept as the corrective-action record) and emits the
    transition. A resolved alert nobody acknowledged (a late one, say) records the acknowledgment and stays
    resolved, nothing emitted; an acknowledged one is answered as it is. None when the tenant has no such
    alert."""
    with db.transaction() as cursor:
        row = store.lock_alert(cursor, tenant_id, alert_id)
        if row is None:
            return None
        if row["acknowledged_at"] is None:
            store.mark_acknowledged(cursor, alert_id, account_id, comment, now)
            if row["state"] == "firing":
                emit(cursor, alert_id, "acknowledged")
            row = store.lock_alert(cursor, tenant_id, alert_id)
    return alert_view(row) if row is not None else None


def snooze(db: Database, tenant_id: str, alert_id: str, until: datetime | None, now: datetime) -> dict | None:
    """Silences re-notification of an open alert until `until` (None lifts the snooze); the alert stays tracked
    and still resolves. No transition is emitted: notify reads `snoozed_until` before re-notifying. None when
    the tenant has no such alert."""
    with db.transaction() as cursor:
        row = store.lock_alert(cursor, tenant_id, alert_id)
        if row is None:
            return None
        if row["state"] != "resolved":
            store.mark_snoozed(cursor, alert_id, until, now)
            row = store.lock_alert(cursor, tenant_id, alert_id)
    return alert_view(row) if row is not None else None
