"""The outbox relay's Kafka record: a binary-mode CloudEvent that reads back as the row it came from."""

from datetime import datetime, timezone

from easysmart.bridges.outbox_relay import OutboxRow, to_kafka
from easysmart.events import from_kafka


def test_an_outbox_row_round_trips_through_its_kafka_record():
    row = OutboxRow(
        7,
        "0b6c8f5e-8a3f-5a53-9a57-2f1f0c9e4d11",
        "telemetry.stored",
        "tenant-1",
        "com.easysmart.telemetry.stored",
        "/easysmart/process",
        "tenants/tenant-1/batches/b-1",
        {"batch_id": "b-1", "sensors": [{"sensor_id": 3, "count": 2}]},
        datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc),
    )

    message = to_kafka(row)
    event = from_kafka(message.headers, message.key, message.value)

    assert message.key == "tenant-1"
    assert (event["id"], event["type"], event["source"], event["subject"]) == (
        row.event_id,
        row.type,
        row.source,
        row.subject,
    )
    assert event["time"] == "2026-12-01T10:00:00+00:00"
    assert event.get_data() == row.data
