"""The outbox relay's Kafka record: a binary-mode CloudEvent that reads back as the row it came from."""

from dataclasses import replace

from support.claims import stored_event_row

from easysmart.bridges.outbox_relay import to_kafka
from easysmart.events import from_kafka
from easysmart.tracing import kafka_traceparent


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


def test_the_trace_of_the_span_that_wrote_the_row_goes_as_the_records_ce_traceparent():
    traceparent = "00-5c2a8e0d7b1f4a3e9d6c0b1a2f3e4d5c-a1b2c3d4e5f60718-01"

    traced, untraced = to_kafka(replace(stored_event_row(), traceparent=traceparent)), to_kafka(stored_event_row())

    assert kafka_traceparent(traced.headers) == traceparent
    assert kafka_traceparent(untraced.headers) is None
