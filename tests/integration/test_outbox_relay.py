"""The outbox relay against the real PostgreSQL and Kafka: what commits is published, in order, with stable ids."""

from __future__ import annotations

import uuid
from datetime import timedelta

import kafka
import kafka.errors
import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from support.claims import TEST_KEYRING, stage
from support.clock import SetClock
from support.samples import recent_sample

from easysmart import outbox
from easysmart.bridges.outbox_relay import OutboxRelay, RelayError
from easysmart.config import OutboxRelaySettings, ProcessSettings, RetentionSettings, UploadLimits
from easysmart.events import from_kafka
from easysmart.outbox import ALERT_EVENTS_TOPIC, TELEMETRY_STORED_TOPIC, OutboxEvent
from easysmart.process import STORED_EVENT_NAMESPACE, BatchProcessor


@pytest.fixture(scope="module", autouse=True)
def outbox_topics(kafka_settings):
    """The relay publishes every unpublished row, other tests' too: their topics must exist."""
    admin = KafkaAdminClient(bootstrap_servers=kafka_settings.kafka_bootstrap_servers.split(","))
    try:
        missing = set([TELEMETRY_STORED_TOPIC, ALERT_EVENTS_TOPIC]) - set(admin.list_topics())
        if missing:
            try:
                admin.create_topics([NewTopic(name, 3, 1) for name in missing])
            except kafka.errors.TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


@pytest.fixture
def relay(database, kafka_settings):
    made = OutboxRelay(database, kafka_settings.kafka_bootstrap_servers, OutboxRelaySettings())
    yield made
    made._drop_producer()


@pytest.fixture
def topic(new_topic, database):
    """A topic of the test's own; its rows leave the outbox with it (a row whose topic is gone would hold the
    relay until the topic came back)."""
    name = new_topic("test.outbox")
    yield name
    with database.transaction() as cursor:
        cursor.execute("DELETE FROM event_outbox WHERE topic = %s", (name,))


def relay_all(relay: OutboxRelay) -> None:
    while relay.relay_once() == relay.settings.outbox_relay_batch:
        pass


class TopicTail:
    """The records a topic receives from now on."""

    def __init__(self, kafka_settings, topic: str) -> None:
        self.consumer = kafka.KafkaConsumer(bootstrap_servers=kafka_settings.kafka_bootstrap_servers.split(","))
        partitions = [kafka.TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic)]
        self.consumer.assign(partitions)
        self.consumer.seek_to_end(*partitions)
        for partition in partitions:
            self.consumer.position(partition)
        self.seen: list = []

    def records_with_id(self, event_id: str, at_least: int = 1, polls: int = 30) -> list:
        """Every record with that CloudEvents id seen so far, polling until at_least of them came."""
        for _ in range(polls):
            if len(self._with_id(event_id)) >= at_least:
                break
            for records in self.consumer.poll(timeout_ms=500).values():
                self.seen += records
        return self._with_id(event_id)

    def _with_id(self, event_id: str) -> list:
        return [r for r in self.seen if dict(r.headers).get("ce_id") == event_id.encode()]

    def close(self) -> None:
        self.consumer.close()


def refusal(database, event_id: str) -> tuple[bool, str | None]:
    """Whether the row was published, and why Kafka refused it (None when it did not)."""
    with database.transaction() as cursor:
        cursor.execute("SELECT published_at IS NOT NULL, refusal FROM event_outbox WHERE event_id = %s", (event_id,))
        return cursor.fetchone()


def unpublished(database, event_id: str) -> bool | None:
    """Whether the row waits to be published; None when there is no row."""
    with database.transaction() as cursor:
        cursor.execute("SELECT published_at IS NULL FROM event_outbox WHERE event_id = %s", (event_id,))
        row = cursor.fetchone()
    return None if row is None else row[0]


def test_a_committed_batch_event_appears_on_telemetry_stored(relay, database, blobs, kafka_settings, make_account):
    account = make_account()
    processor = BatchProcessor(
        ProcessSettings(), UploadLimits(), RetentionSettings(), database, blobs, keyring=TEST_KEYRING
    )
    claim = stage(blobs, account, recent_sample("ha-bulk-small.json"))
    event_id = str(uuid.uuid5(STORED_EVENT_NAMESPACE, claim.batch_id))
    tail = TopicTail(kafka_settings, TELEMETRY_STORED_TOPIC)
    try:
        processor.process(claim)
        relay_all(relay)
        [record] = tail.records_with_id(event_id)
    finally:
        tail.close()
    event = from_kafka(dict(record.headers), record.key, record.value)
    assert record.key == account.tenant_id.encode()
    assert (event["type"], event["source"]) == ("com.easysmart.telemetry.stored", "/easysmart/process")
    assert event.get_data()["batch_id"] == claim.batch_id
    assert sum(s["count"] for s in event.get_data()["sensors"]) == 40
    assert unpublished(database, event_id) is False


def test_a_rolled_back_transaction_publishes_nothing(relay, database, kafka_settings, topic):
    event = OutboxEvent(topic, "tenant", "com.easysmart.test", "/test", {"n": 1})
    tail = TopicTail(kafka_settings, topic)
    try:
        with pytest.raises(ZeroDivisionError):
            with database.transaction() as cursor:
                outbox.enqueue(cursor, event)
                raise ZeroDivisionError  # anything that aborts the producer's transaction
        relay_all(relay)
        assert tail.records_with_id(str(event.event_id), polls=4) == []
    finally:
        tail.close()
    assert unpublished(database, str(event.event_id)) is None


class KilledAfterPublishing(OutboxRelay):
    """Stops dead after Kafka acknowledged, before the rows are marked (as a SIGKILL would)."""

    def publish(self, rows) -> None:
        super().publish(rows)
        raise SystemExit("killed")


def test_a_relay_killed_between_publish_and_mark_publishes_again_with_the_same_id(
    relay, database, kafka_settings, topic
):
    events = [OutboxEvent(topic, "tenant-a", "com.easysmart.test", "/test", {"n": n}) for n in range(3)]
    with database.transaction() as cursor:
        for event in events:
            outbox.enqueue(cursor, event)
    tail = TopicTail(kafka_settings, topic)
    killed = KilledAfterPublishing(database, kafka_settings.kafka_bootstrap_servers, OutboxRelaySettings())
    try:
        with pytest.raises(SystemExit):
            killed.relay_once()
        assert unpublished(database, str(events[0].event_id)) is True
        relay_all(relay)
        for event in events:
            assert len(tail.records_with_id(str(event.event_id), at_least=2)) == 2
            assert unpublished(database, str(event.event_id)) is False
        # One key, one partition: the three events arrive in the order they were written, twice.
        order = [r.value for r in tail.seen if r.key == b"tenant-a"]
        assert order == [b'{"n":0}', b'{"n":1}', b'{"n":2}'] * 2
    finally:
        killed._drop_producer()
        tail.close()


class NoBroker:
    def __init__(self, **config) -> None:
        raise kafka.errors.BrokerNotAvailableError()


def test_a_kafka_outage_leaves_the_rows_unpublished_for_the_next_cycle(database, kafka_settings, topic, relay):
    event = OutboxEvent(topic, "tenant", "com.easysmart.test", "/test", {"n": 1})
    with database.transaction() as cursor:
        outbox.enqueue(cursor, event)
    down = OutboxRelay(database, kafka_settings.kafka_bootstrap_servers, OutboxRelaySettings(), make_producer=NoBroker)

    with pytest.raises(RelayError):
        down.relay_once()

    assert unpublished(database, str(event.event_id)) is True
    relay_all(relay)
    assert unpublished(database, str(event.event_id)) is False


def test_a_second_relay_stands_by_while_one_is_active(database, kafka_settings, relay):
    with database.transaction() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (0x65736D2D6F7574,))
        # The lock is held by this transaction, as an active relay holds it during its cycle.
        assert relay.relay_once() == 0


def enqueue_all(database, events: list[OutboxEvent]) -> None:
    with database.transaction() as cursor:
        for event in events:
            outbox.enqueue(cursor, event)


@pytest.fixture
def small_topic(new_topic, database):
    """A topic of the test's own taking records of at most 2 KiB; its rows leave the outbox with it."""
    name = new_topic("test.outbox.small", configs={"max.message.bytes": "2048"})
    yield name
    with database.transaction() as cursor:
        cursor.execute("DELETE FROM event_outbox WHERE topic = %s", (name,))


def test_an_event_the_topic_refuses_is_skipped_and_the_events_after_it_are_published(
    relay, database, kafka_settings, small_topic
):
    fits, too_large, after = (
        OutboxEvent(small_topic, "tenant-a", "com.easysmart.test", "/test", {"n": n, "pad": "x" * size})
        for n, size in ((0, 10), (1, 4096), (2, 10))
    )
    enqueue_all(database, [fits, too_large, after])
    tail = TopicTail(kafka_settings, small_topic)
    try:
        relay_all(relay)
        taken_again = relay.relay_once()
        delivered = [len(tail.records_with_id(str(event.event_id))) for event in (fits, after)]
        refused_delivered = tail.records_with_id(str(too_large.event_id), polls=2)
    finally:
        tail.close()

    assert taken_again == 0
    assert delivered == [1, 1] and refused_delivered == []
    assert refusal(database, str(fits.event_id)) == refusal(database, str(after.event_id)) == (True, None)
    published, why = refusal(database, str(too_large.event_id))
    assert not published and why.startswith("MessageSizeTooLargeError")


def test_an_event_too_large_for_the_producer_is_refused_with_why_and_the_next_is_published(
    database, kafka_settings, topic
):
    events = [
        OutboxEvent(topic, "tenant-a", "com.easysmart.test", "/test", {"n": n, "pad": "x" * size})
        for n, size in ((0, 4096), (1, 10))
    ]
    enqueue_all(database, events)
    small_requests = OutboxRelay(
        database,
        kafka_settings.kafka_bootstrap_servers,
        OutboxRelaySettings(),
        make_producer=lambda **config: kafka.KafkaProducer(**{**config, "max_request_size": 1024}),
    )
    try:
        relay_all(small_requests)
    finally:
        small_requests._drop_producer()

    published, why = refusal(database, str(events[0].event_id))
    assert not published and why.startswith("MessageSizeTooLargeError")
    assert refusal(database, str(events[1].event_id)) == (True, None)


def test_refused_rows_are_deleted_after_a_week(database, kafka_settings, topic):
    event = OutboxEvent(topic, "tenant-a", "com.easysmart.test", "/test", {"pad": "x" * 4096})
    enqueue_all(database, [event])
    clock = SetClock()
    small_requests = OutboxRelay(
        database,
        kafka_settings.kafka_bootstrap_servers,
        OutboxRelaySettings(),
        make_producer=lambda **config: kafka.KafkaProducer(**{**config, "max_request_size": 1024}),
        monotonic=clock.monotonic,
        clock=clock,
    )
    try:
        relay_all(small_requests)  # refuses it, and prunes nothing younger than a week
        assert refusal(database, str(event.event_id))[1] is not None
        clock.advance(timedelta(days=7, minutes=1).total_seconds())  # the next prune is due, a week later
        small_requests.relay_once()
    finally:
        small_requests._drop_producer()

    assert refusal(database, str(event.event_id)) is None
