"""The transactional outbox: events that leave exactly when the transaction that caused them commits.

A producer (process after storing a batch, the alerts engine after a transition) adds a row to `event_outbox`
inside its own transaction; the outbox relay publishes unpublished rows to Kafka in id order and marks them.
A crash between commit and publish loses nothing, and a row published twice carries the same CloudEvents id,
on which consumers are idempotent. A row carries the traceparent of the span that wrote it, when tracing is on,
so the event's consumers continue that trace.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import psycopg2.extensions
from psycopg2.extras import Json

from easysmart.db import PreparedStatement, prepared
from easysmart.tracing import current_traceparent

TELEMETRY_STORED_TOPIC = "telemetry.stored"
TELEMETRY_STORED_TYPE = "com.easysmart.telemetry.stored"
ALERT_EVENTS_TOPIC = "alerts.events"
ALERT_FIRED_TYPE = "com.easysmart.alert.fired"
ALERT_ACKNOWLEDGED_TYPE = "com.easysmart.alert.acknowledged"
ALERT_RESOLVED_TYPE = "com.easysmart.alert.resolved"


@dataclass(frozen=True)
class OutboxEvent:
    topic: str
    kafka_key: str  # e.g. the tenant id: one tenant's events stay in order on one partition
    type: str
    source: str
    data: dict
    subject: str | None = None
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)


# Every stored batch adds one (see easysmart.db.PreparedStatement).
_ENQUEUE = PreparedStatement(
    "outbox_enqueue",
    "INSERT INTO event_outbox (event_id, topic, kafka_key, type, source, subject, data, traceparent)"
    " VALUES (%(event_id)s, %(topic)s, %(kafka_key)s, %(type)s, %(source)s, %(subject)s, %(data)s, %(traceparent)s)"
    " ON CONFLICT (event_id) DO NOTHING",
    event_id="uuid",
    topic="text",
    kafka_key="text",
    type="text",
    source="text",
    subject="text",
    data="jsonb",
    traceparent="text",
)


def enqueue(cursor: psycopg2.extensions.cursor, event: OutboxEvent) -> None:
    """Adds the event in the caller's transaction; it is published only if that transaction commits."""
    cursor.execute(
        prepared(cursor, _ENQUEUE),
        {
            "event_id": str(event.event_id),
            "topic": event.topic,
            "kafka_key": event.kafka_key,
            "type": event.type,
            "source": event.source,
            "subject": event.subject,
            "data": Json(event.data),
            "traceparent": current_traceparent(),
        },
    )
