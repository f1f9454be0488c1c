"""esm dlq replay: dead-lettered claim checks go back to the raw topic without their error headers."""

import kafka
from support.claims import TEST_KEYRING, stage
from support.samples import recent_sample

from easysmart.config import ProcessSettings, RetentionSettings, UploadLimits
from easysmart.dlq import replay
from easysmart.events import from_cloudevent, from_kafka, to_kafka
from easysmart.process import BatchProcessor


def test_replay_moves_records_back_without_error_headers_and_commits(kafka_settings, new_topic):
    servers = kafka_settings.kafka_bootstrap_servers.split(",")
    dlq, raw = new_topic("test.dlq"), new_topic("test.raw")
    producer = kafka.KafkaProducer(bootstrap_servers=servers, acks="all")
    for n in range(3):
        producer.send(
            dlq,
            key=b"t:a",
            value=b'{"n": %d}' % n,
            headers=[
                ("ce_id", f"id-{n}".encode()),
                ("ce_knativeerrorcode", b"422"),
                ("ce_knativeerrordata", b"eA=="),
                ("ce_knativeerrordest", b"http://process/"),
                ("dlq_source", b"telemetry.raw/0/7"),
            ],
        ).get(timeout=10)
    producer.close()
    report = replay(kafka_settings.kafka_bootstrap_servers, dlq, raw, say=lambda *_: None, idle_timeout_ms=3000)
    assert report.replayed == 3
    again = replay(kafka_settings.kafka_bootstrap_servers, dlq, raw, say=lambda *_: None, idle_timeout_ms=2000)
    assert again.replayed == 0  # offsets were committed
    consumer = kafka.KafkaConsumer(
        raw, bootstrap_servers=servers, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    records = list(consumer)
    consumer.close()
    assert [r.value for r in records] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    assert all(dict(r.headers).keys() == {"ce_id"} for r in records)


def test_a_replayed_signed_claim_check_still_verifies_and_is_processed(
    kafka_settings, new_topic, blobs, database, make_account
):
    servers = kafka_settings.kafka_bootstrap_servers.split(",")
    dlq, raw = new_topic("test.dlq"), new_topic("test.raw")
    claim = stage(blobs, make_account(), recent_sample("ha-bulk-small.json"))
    message = to_kafka(claim)
    producer = kafka.KafkaProducer(bootstrap_servers=servers, acks="all")
    producer.send(
        dlq,
        key=message.key.encode(),
        value=message.value,
        headers=[*message.headers.items(), ("ce_knativeerrorcode", b"503"), ("dlq_source", b"telemetry.raw/0/7")],
    ).get(timeout=10)
    producer.close()

    # limit=1: the replay ends with the record; the idle time only bounds a slow group join on a busy broker.
    report = replay(
        kafka_settings.kafka_bootstrap_servers, dlq, raw, limit=1, say=lambda *_: None, idle_timeout_ms=20000
    )
    assert report.replayed == 1

    consumer = kafka.KafkaConsumer(
        raw, bootstrap_servers=servers, auto_offset_reset="earliest", consumer_timeout_ms=20000
    )
    record = next(iter(consumer))
    consumer.close()
    replayed = from_cloudevent(from_kafka(dict(record.headers), record.key, record.value))
    assert replayed == claim
    processor = BatchProcessor(
        ProcessSettings(), UploadLimits(), RetentionSettings(), database, blobs, keyring=TEST_KEYRING
    )
    assert processor.process(replayed).stored == 40
