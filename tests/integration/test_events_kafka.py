"""The claim check through the real Kafka broker, as ingest produces it and a KafkaSource reads it."""

import uuid

import kafka

from easysmart.events import ClaimCheck, from_cloudevent, from_kafka
from easysmart.messaging import ClaimCheckPublisher


def new_claim() -> ClaimCheck:
    return ClaimCheck(
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


def consumer_of(servers: list[str], topic: str) -> kafka.KafkaConsumer:
    return kafka.KafkaConsumer(
        topic,
        bootstrap_servers=servers,
        group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=15000,
    )


def test_claim_check_round_trips_through_kafka_in_binary_mode(kafka_settings, new_topic):
    claim = new_claim()
    # A topic of its own: on telemetry.raw the stack's bridge would deliver this claim check
    # (of a tenant that does not exist) and dead-letter it.
    servers = kafka_settings.kafka_bootstrap_servers.split(",")
    topic = new_topic("test.raw", partitions=3)
    publisher = ClaimCheckPublisher(kafka_settings.kafka_bootstrap_servers, topic, 10)
    consumer = consumer_of(servers, topic)
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


def test_a_device_s_claim_checks_share_a_partition_with_kafka_python_s_records_of_its_key(kafka_settings, new_topic):
    # dlq replay writes telemetry.raw with kafka-python: a device's records stay in order only on one partition.
    servers = kafka_settings.kafka_bootstrap_servers.split(",")
    topic = new_topic("test.raw", partitions=3)
    claims = [new_claim() for _ in range(8)]
    publisher = ClaimCheckPublisher(kafka_settings.kafka_bootstrap_servers, topic, 10)
    other_producer = kafka.KafkaProducer(bootstrap_servers=servers, acks="all")
    consumer = consumer_of(servers, topic)
    try:
        for claim in claims:
            publisher.publish(claim)
            other_producer.send(topic, key=claim.partition_key.encode(), value=b"replayed").get(timeout=10)
        partitions: dict[bytes, list[int]] = {}
        for record in consumer:
            partitions.setdefault(record.key, []).append(record.partition)
            if sum(map(len, partitions.values())) == 2 * len(claims):
                break
    finally:
        publisher.close()
        other_producer.close()
        consumer.close()
    assert sorted(partitions) == sorted(claim.partition_key.encode() for claim in claims)
    assert [key for key, chosen in partitions.items() if len(chosen) != 2 or chosen[0] != chosen[1]] == []
