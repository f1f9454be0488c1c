"""The claim check through the real Kafka broker, as ingest produces it and a KafkaSource reads it."""

import uuid

import kafka

from easysmart.events import ClaimCheck, from_cloudevent, from_kafka
from easysmart.messaging import ClaimCheckPublisher


def test_claim_check_round_trips_through_kafka_in_binary_mode(kafka_settings, new_topic):
    claim = ClaimCheck(
        str(uuid.uuid4()),
        str(uuid.uuid4()),
        str(uuid.uuid4()),
        "dev",
        "telemetry-raw",
        "raw/x.json.gz",
        10,
        20,
        "ab" * 32,
        "gzip",
        1,
        2,
        "req",
        "2026-11-20T10:00:00+00:00",
    )
    # A topic of its own: on telemetry.raw the stack's bridge would deliver this claim check
    # (of a tenant that does not exist) and dead-letter it.
    servers = kafka_settings.kafka_bootstrap_servers.split(",")
    topic = new_topic("test.raw", partitions=3)
    publisher = ClaimCheckPublisher(kafka_settings.kafka_bootstrap_servers, topic, 10)
    consumer = kafka.KafkaConsumer(
        topic,
        bootstrap_servers=servers,
        group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=15000,
    )
    try:
        publisher.publish(claim)
        for record in consumer:
            headers = dict(record.headers)
            if headers.get("ce_id") == claim.batch_id.encode():
                assert record.key == claim.partition_key.encode()
                assert headers["ce_type"] == b"com.easysmart.telemetry.batch.received.v1"
                assert from_cloudevent(from_kafka(headers, record.key, record.value)) == claim
                return
    finally:
        publisher.close()
        consumer.close()
    raise AssertionError("the claim check was not found on the topic")
