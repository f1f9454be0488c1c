import threading
from collections import namedtuple

import pytest
import requests
from confluent_kafka import KafkaError
from support.claims import CLAIM
from support.clock import SetClock
from support.fakes import AcknowledgingProducer

from easysmart.bridges.kafka_source import (
    KafkaErrorLog,
    KafkaSourceBridge,
    Outcome,
    Route,
    backoff_delay,
    claim_check_route,
    extra_routes,
    is_retriable,
)
from easysmart.config import ConfigError, KafkaBridgeSettings, KafkaSettings
from easysmart.dlq import dead_letter_topic
from easysmart.events import to_kafka

Record = namedtuple("Record", "topic partition offset key value headers")


class FakeSession:
    """Answers POSTs with the given statuses in turn (None = network error) and records them; each POST
    moves `clock` on by `takes_s`."""

    def __init__(self, statuses, clock: SetClock | None = None, takes_s: float = 0):
        self.statuses = list(statuses)
        self.posts = []
        self.urls = []
        self.clock = clock or SetClock()
        self.takes_s = takes_s

    def post(self, url, headers, data, timeout):
        self.posts.append(headers)
        self.urls.append(url)
        self.clock.advance(self.takes_s)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if status is None:
            raise requests.ConnectionError("refused")
        response = requests.Response()
        response.status_code = status
        response._content = b'{"error": "x"}'
        return response


def bridge(statuses, max_elapsed=5.0, post_takes_s=0.0) -> KafkaSourceBridge:
    settings = KafkaBridgeSettings(
        sink_url="http://process/",
        group_id="g",
        backoff_base_s=0.001,
        backoff_max_s=0.002,
        retry_max_elapsed_s=max_elapsed,
        request_timeout_s=1,
    )
    clock = SetClock()
    return KafkaSourceBridge(
        KafkaSettings(kafka_bootstrap_servers="k:1"),
        settings,
        FakeSession(statuses, clock, post_takes_s),
        monotonic=clock.monotonic,
    )


def record(offset=0) -> Record:
    message = to_kafka(CLAIM)
    return Record("telemetry.raw", 0, offset, message.key.encode(), message.value, list(message.headers.items()))


@pytest.mark.parametrize(
    "status, retried",
    [
        (500, True),
        (503, True),
        (429, True),
        (408, True),
        (409, True),
        (404, True),
        (None, True),
        (400, False),
        (401, False),
        (422, False),
    ],
)
def test_retriable_answers_follow_knative_delivery(status, retried):
    assert is_retriable(status) is retried


def test_backoff_grows_exponentially_up_to_its_cap():
    delays = [backoff_delay(n, 1, 30) for n in range(8)]
    assert 0.8 <= delays[0] <= 1.2 and 6.4 <= delays[3] <= 9.6 and all(d <= 36 for d in delays)


def test_a_binary_mode_cloudevent_keeps_the_producer_id_type_and_source():
    b = bridge([200])
    assert b.deliver(record()).delivered
    headers = b.session.posts[0]
    assert (headers["ce-id"], headers["ce-type"], headers["ce-source"]) == (
        CLAIM.batch_id,
        "com.easysmart.telemetry.batch.received.v1",
        "/easysmart/ingest",
    )


def test_transient_failures_are_retried_until_success():
    b = bridge([None, 503, 429, 200])
    outcome = b.deliver(record())
    assert outcome.delivered and len(b.session.posts) == 4


def test_a_permanent_answer_is_not_retried():
    b = bridge([422])
    outcome = b.deliver(record())
    assert (outcome.delivered, outcome.status, len(b.session.posts)) == (False, 422, 1)


def test_retries_stop_when_the_retry_window_is_exhausted():
    b = bridge([503], max_elapsed=300, post_takes_s=100)

    outcome = b.deliver(record())

    assert (outcome.delivered, outcome.status, len(b.session.posts)) == (False, 503, 3)
    assert outcome.error.startswith("retries exhausted after 300 s")


def test_undelivered_records_are_dead_lettered_before_their_offset_counts():
    b = bridge([400])
    dead = []
    b.dead_letter = lambda rec, outcome: dead.append((rec.offset, outcome.status))
    assert b.handle_partition([record(7), record(8)]) == 8
    assert dead == [(7, 400), (8, 400)]


def keyed(offset: int, key: bytes) -> Record:
    return record(offset)._replace(key=key)


def test_records_of_different_keys_are_delivered_in_parallel_and_each_key_in_order():
    b = bridge([200])
    delivered, other_key_done = [], threading.Event()

    def deliver(rec):
        if rec.offset == 1:
            # Device a's first batch finishes only once device b's has been delivered meanwhile.
            assert other_key_done.wait(5), "the other key waited for this one"
        delivered.append((rec.key, rec.offset))
        if rec.key == b"b":
            other_key_done.set()
        return Outcome(True, 200, "")

    b.deliver = deliver
    assert b.handle_partition([keyed(1, b"a"), keyed(2, b"b"), keyed(3, b"a"), keyed(4, b"b")]) == 4
    assert [offset for key, offset in delivered if key == b"a"] == [1, 3]
    assert [offset for key, offset in delivered if key == b"b"] == [2, 4]


def test_the_offset_done_stops_before_the_first_record_not_delivered():
    b = bridge([200])
    other_key_done = threading.Event()

    def deliver(rec):
        if rec.offset == 1:
            assert other_key_done.wait(5)
            b.stopping.set()  # the bridge stops: device a's second batch is not delivered
        if rec.key == b"b":
            other_key_done.set()
        return Outcome(True, 200, "")

    b.deliver = deliver
    # Offset 3 is not done, so neither is 4 counted (done, it is delivered again: processing is idempotent).
    assert b.handle_partition([keyed(1, b"a"), keyed(2, b"b"), keyed(3, b"a"), keyed(4, b"b")]) == 2


def test_without_bridge_routes_the_bridge_runs_the_claim_check_route_alone():
    kafka_config = KafkaSettings(kafka_bootstrap_servers="k:1")
    settings = KafkaBridgeSettings()

    assert claim_check_route(kafka_config, settings) == Route(
        "telemetry.raw", "http://127.0.0.1:8083/", "process-bridge", "telemetry.dlq"
    )
    assert extra_routes(settings.bridge_routes) == []


def test_each_extra_route_has_its_own_group_and_dead_letter_topic():
    routes = extra_routes("telemetry.stored=http://127.0.0.1:8086/  alerts.events=http://127.0.0.1:8087/")

    assert routes == [
        Route("telemetry.stored", "http://127.0.0.1:8086/", "telemetry.stored-bridge", "telemetry.stored.dlq"),
        Route("alerts.events", "http://127.0.0.1:8087/", "alerts.events-bridge", "alerts.events.dlq"),
    ]


@pytest.mark.parametrize("spec", ["telemetry.stored", "=http://x/", "t=ftp://x/", "t=http://a/ t=http://b/"])
def test_a_route_that_cannot_be_read_is_refused_at_start(spec):
    with pytest.raises(ConfigError, match="BRIDGE_ROUTES"):
        extra_routes(spec)


def test_a_route_posts_to_its_sink_and_dead_letters_to_its_own_topic():
    route = Route("alerts.events", "http://notify/", "alerts.events-bridge", "alerts.events.dlq")
    routed = KafkaSourceBridge(
        KafkaSettings(kafka_bootstrap_servers="k:1"), KafkaBridgeSettings(), FakeSession([400], SetClock()), route=route
    )
    sent = []
    routed._dlq_producer = lambda: AcknowledgingProducer(sent)

    outcome = routed.deliver(record())
    routed.dead_letter(record(), outcome)

    assert routed.session.urls == ["http://notify/"]
    assert sent[0][0] == "alerts.events.dlq"
    assert dict(sent[0][1])["ce_knativeerrordest"] == b"http://notify/"


def test_esm_dlq_replay_reads_the_dead_letters_where_the_bridge_puts_them():
    kafka_config = KafkaSettings(kafka_bootstrap_servers="k:1")
    [stored] = extra_routes("telemetry.stored=http://alerts/")
    claim_checks = claim_check_route(kafka_config, KafkaBridgeSettings())

    for route in (stored, claim_checks):
        assert (
            dead_letter_topic(route.topic, kafka_config.kafka_topic_raw, kafka_config.kafka_topic_dlq)
            == route.dlq_topic
        )


class UnassignedConsumer:
    """A consumer whose group join left it without partitions; each poll moves the clock on by 5 s."""

    def __init__(self, clock: SetClock, bridge: KafkaSourceBridge) -> None:
        self.clock, self.bridge, self.closed, self.polls = clock, bridge, False, 0

    def subscribe(self, topics, on_assign, on_revoke, on_lost):
        pass  # never assigned anything

    def assignment(self):
        return []

    def poll(self, timeout):
        self.polls += 1
        assert self.polls < 20, "kept polling without partitions for 100 s"
        self.clock.advance(5)
        return None

    def close(self):
        self.closed = True


def test_a_consumer_left_without_partitions_joins_again_after_a_while(monkeypatch):
    clock = SetClock()
    subject = KafkaSourceBridge(
        KafkaSettings(kafka_bootstrap_servers="k:1"), KafkaBridgeSettings(), FakeSession([200]), clock.monotonic
    )
    subject.metrics.refresh = lambda consumer: None  # no offsets to read here
    consumers: list[UnassignedConsumer] = []

    def connect():
        if len(consumers) == 2:  # the second join is enough for the test: stop the bridge
            subject.stopping.set()
        consumers.append(UnassignedConsumer(clock, subject))
        return consumers[-1]

    monkeypatch.setattr(subject, "_connect", connect)
    subject.run()

    assert len(consumers) == 3
    assert consumers[0].closed and consumers[1].closed


def test_a_kafka_error_repeating_while_kafka_is_down_is_logged_once_per_interval_with_its_count(caplog):
    clock = SetClock()
    errors = KafkaErrorLog(clock.monotonic, interval_s=30)
    refused, down = KafkaError(KafkaError._TRANSPORT), KafkaError(KafkaError._ALL_BROKERS_DOWN)

    for _ in range(20):  # librdkafka reconnects every ~50 ms
        errors.warning("Kafka client error", refused, "telemetry.raw")
        clock.advance(0.05)
    errors.warning("Kafka client error", down, "telemetry.raw")  # another kind: logged at once
    clock.advance(30)
    errors.warning("Kafka client error", refused, "telemetry.raw")

    logged = [(r.error, r.repeated_since_last_logged) for r in caplog.records if r.message == "Kafka client error"]
    assert logged == [(str(refused), 0), (str(down), 0), (str(refused), 19)]
