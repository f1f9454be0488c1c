"""The claim-check publisher (through a fake librdkafka producer) and the Kafka health probe: an upload is answered
only after Kafka acknowledged its claim check, and while Kafka is down an upload or a health check gives up within
the backend timeout."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import REGISTRY
from support.claims import CLAIM
from support.fakes import FakeKafkaProducer

from easysmart import messaging
from easysmart.errors import UnavailableError
from easysmart.events import to_kafka
from easysmart.messaging import ClaimCheckPublisher, KafkaProbe, PublishOutcomeUnknownError

TIMED_OUT = KafkaError(KafkaError._MSG_TIMED_OUT)


@pytest.fixture
def publisher_on():
    """publisher_on(producer, timeout_s=5.0) -> a ClaimCheckPublisher on the fake producer, closed afterwards."""
    publishers: list[ClaimCheckPublisher] = []

    def make(producer: FakeKafkaProducer, timeout_s: float = 5.0) -> ClaimCheckPublisher:
        publishers.append(ClaimCheckPublisher("127.0.0.1:1", "telemetry.raw", timeout_s, make_producer=producer))
        return publishers[-1]

    yield make
    for publisher in publishers:
        publisher.close()


def published_count() -> float:
    return REGISTRY.get_sample_value("esm_kafka_publish_seconds_count") or 0.0


def pollers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "kafka-delivery-reports"]


def test_a_delivered_claim_check_returns_and_is_timed(publisher_on):
    producer = FakeKafkaProducer()
    before = published_count()

    publisher_on(producer).publish(CLAIM)

    message = to_kafka(CLAIM)
    assert producer.records == [
        {
            "topic": "telemetry.raw",
            "key": CLAIM.partition_key,
            "value": message.value,
            "headers": list(message.headers.items()),
        }
    ]
    assert published_count() - before == 1


def test_the_producer_waits_for_every_replica_writes_once_and_gives_up_within_the_backend_timeout(publisher_on):
    producer = FakeKafkaProducer()
    publisher_on(producer, timeout_s=5.0).publish(CLAIM)
    (config,) = producer.configs
    assert config["bootstrap.servers"] == "127.0.0.1:1"
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True
    # The partition kafka-python and the Java client choose for the key (tests/integration/test_events_kafka.py).
    assert config["partitioner"] == "murmur2_random"
    assert config["message.timeout.ms"] == config["request.timeout.ms"] == config["socket.timeout.ms"] == 5000


def test_a_delivery_error_leaves_the_outcome_unknown_and_is_not_timed(publisher_on):
    before = published_count()
    with pytest.raises(PublishOutcomeUnknownError, match="did not acknowledge") as caught:
        publisher_on(FakeKafkaProducer(outcome=TIMED_OUT)).publish(CLAIM)
    assert caught.value.retry_after_s == 10
    assert published_count() == before


def test_no_delivery_report_in_time_leaves_the_outcome_unknown(publisher_on, monkeypatch):
    monkeypatch.setattr(messaging, "DELIVERY_REPORT_GRACE_S", 0.0)
    producer = FakeKafkaProducer()
    producer.holding = True
    started = time.monotonic()
    with pytest.raises(PublishOutcomeUnknownError, match="did not acknowledge"):
        publisher_on(producer, timeout_s=0.05).publish(CLAIM)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "refusal", [BufferError("Local: Queue full"), KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC))]
)
def test_a_claim_check_kafka_did_not_take_is_not_in_kafka(publisher_on, refusal):
    with pytest.raises(UnavailableError, match="did not take") as caught:
        publisher_on(FakeKafkaProducer(refusal=refusal)).publish(CLAIM)
    assert not isinstance(caught.value, PublishOutcomeUnknownError)  # ingest deletes its blob


def test_a_claim_check_the_broker_refused_is_not_in_kafka(publisher_on):
    refused = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(UnavailableError, match="refused") as caught:
        publisher_on(FakeKafkaProducer(outcome=refused)).publish(CLAIM)
    assert not isinstance(caught.value, PublishOutcomeUnknownError)


def test_while_kafka_is_down_one_request_probes_and_the_others_are_refused_at_once(publisher_on):
    producer = FakeKafkaProducer(outcome=TIMED_OUT)
    publisher = publisher_on(producer)
    with pytest.raises(PublishOutcomeUnknownError):
        publisher.publish(CLAIM)
    producer.outcome, producer.holding = None, True

    with ThreadPoolExecutor(max_workers=1) as pool:
        probing = pool.submit(publisher.publish, CLAIM)
        assert producer.produced.wait(5)
        with pytest.raises(UnavailableError, match="Kafka is unavailable") as refused:
            publisher.publish(CLAIM)
        producer.held.pop()(None, None)
        probing.result(timeout=5)

    assert not isinstance(refused.value, PublishOutcomeUnknownError)  # never handed over: its blob goes
    assert refused.value.retry_after_s == 10
    assert len(producer.records) == 2  # the first claim check and the probe


def test_a_delivered_probe_ends_the_outage(publisher_on):
    producer = FakeKafkaProducer(outcome=TIMED_OUT)
    publisher = publisher_on(producer)
    with pytest.raises(PublishOutcomeUnknownError):
        publisher.publish(CLAIM)
    producer.outcome = None
    publisher.publish(CLAIM)  # the probe

    producer.holding = True
    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(publisher.publish, CLAIM)
        assert producer.produced.wait(5)
        producer.holding = False
        publisher.publish(CLAIM)  # not refused though a request is in flight
        producer.held.pop()(None, None)
        in_flight.result(timeout=5)
    assert len(producer.records) == 4


def test_a_probe_kafka_does_not_acknowledge_lets_the_next_request_probe(publisher_on):
    producer = FakeKafkaProducer(outcome=TIMED_OUT)
    publisher = publisher_on(producer)
    for _ in range(2):
        with pytest.raises(PublishOutcomeUnknownError):
            publisher.publish(CLAIM)
    producer.refusal = BufferError("Local: Queue full")
    with pytest.raises(UnavailableError, match="did not take"):
        publisher.publish(CLAIM)  # a probe Kafka did not take frees the way too
    producer.refusal, producer.outcome = None, None
    publisher.publish(CLAIM)
    assert len(producer.records) == 3


@pytest.mark.parametrize(
    "broken",
    [
        {"outcome": KafkaError(KafkaError._FATAL)},
        {"refusal": KafkaException(KafkaError(KafkaError._FATAL))},
    ],
)
def test_a_producer_a_fatal_error_broke_is_replaced(publisher_on, broken):
    producer = FakeKafkaProducer(**broken)
    publisher = publisher_on(producer)
    with pytest.raises(UnavailableError):
        publisher.publish(CLAIM)
    producer.outcome = producer.refusal = None
    publisher.publish(CLAIM)
    assert len(producer.configs) == 2


def test_the_producer_and_its_poller_are_made_on_first_use_and_close_stops_them(publisher_on):
    producer = FakeKafkaProducer()
    publisher = publisher_on(producer)
    assert producer.configs == [] and pollers() == []  # gunicorn forks workers after import
    publisher.publish(CLAIM)
    assert len(pollers()) == 1
    publisher.close()
    assert pollers() == []
    assert producer.flushes == [messaging.CLOSE_FLUSH_S]


def test_concurrent_requests_share_one_producer(publisher_on):
    producer = FakeKafkaProducer()
    publisher = publisher_on(producer)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: publisher.publish(CLAIM), range(40)))
    assert len(producer.configs) == 1 and len(producer.records) == 40


def test_the_kafka_health_probe_gives_up_within_its_timeout():
    probe = KafkaProbe("127.0.0.1:1", "telemetry.raw", 0.5)  # nothing listens on port 1
    started = time.monotonic()
    with pytest.raises(UnavailableError):
        probe.ping()
    assert time.monotonic() - started < 10  # the client library's own bootstrap wait is 30 s
