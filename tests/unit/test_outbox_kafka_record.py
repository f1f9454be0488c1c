"""The outbox relay's Kafka record: a binary-mode CloudEvent that reads back as the row it came from."""

from support.claims import stored_event_row

from easysmart.bridges.outbox_relay import to_kafka
from easysmart.events import from_kafka


def test_an_outbox_row_round_trips_through_its_kafka_record():
    row = stored_event_row()

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
