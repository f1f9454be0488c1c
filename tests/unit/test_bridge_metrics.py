"""The kafka-source bridge's metrics: lag per assigned partition, dead-letter depth, deliveries by answer class;
the offsets are read at most every few seconds of the injected clock."""

from __future__ import annotations

import uuid
from collections import namedtuple
from types import SimpleNamespace

import requests
from confluent_kafka import OFFSET_INVALID, TopicPartition
from confluent_kafka.admin import OffsetSpec
from prometheus_client import REGISTRY, generate_latest
from support.claims import CLAIM
from support.clock import SetClock
from support.fakes import AcknowledgingProducer

from easysmart.bridges.bridge_metrics import DLQ_REFRESH_S, LAG_REFRESH_S, RouteMetrics, bridge_registry, status_class
from easysmart.bridges.kafka_source import KafkaSourceBridge, Route
from easysmart.config import KafkaBridgeSettings, KafkaSettings
from easysmart.events import to_kafka

Record = namedtuple("Record", "topic partition offset key value headers")


class OffsetsConsumer:
    """The offset calls of librdkafka's consumer (assignment, committed) and admin client (list_offsets,
    list_topics), answered from dicts the test sets; counts its offset requests."""

    def __init__(self, topic: str, dlq: str) -> None:
        self.topic, self.dlq = topic, dlq
        self.assigned = {TopicPartition(topic, 0), TopicPartition(topic, 1)}
        self.ends = {TopicPartition(topic, 0): 10, TopicPartition(topic, 1): 5, TopicPartition(dlq, 0): 7}
        self.beginnings = {TopicPartition(topic, 0): 0, TopicPartition(topic, 1): 2, TopicPartition(dlq, 0): 3}
        self.commits: dict[TopicPartition, int] = {TopicPartition(topic, 0): 4}
        self.calls = 0
        self.broken = False

    def assignment(self):
        return list(self.assigned)

    def list_offsets(self, specs, request_timeout):
        self.calls += 1
        if self.broken:
            raise RuntimeError("broker gone")
        answers = {}
        for tp, spec in specs.items():
            offsets = self.ends if spec == OffsetSpec.latest() else self.beginnings
            answers[tp] = SimpleNamespace(result=lambda tp=tp, offsets=offsets: SimpleNamespace(offset=offsets[tp]))
        return answers

    def committed(self, partitions, timeout):
        return [TopicPartition(tp.topic, tp.partition, self.commits.get(tp, OFFSET_INVALID)) for tp in partitions]

    def list_topics(self, topic, timeout):
        partitions = {0: object()} if topic == self.dlq else {}
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None, partitions=partitions)})


def lag(topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value("esm_bridge_consumer_lag_messages", {"topic": topic, "partition": str(partition)})


def route() -> tuple[str, OffsetsConsumer, SetClock, RouteMetrics]:
    """A route's topic, the consumer and admin client it reads offsets with, its clock and its metrics."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    clock = SetClock()
    kafka = OffsetsConsumer(topic, f"{topic}.dlq")
    return topic, kafka, clock, RouteMetrics(topic, f"{topic}.dlq", clock.monotonic, lambda: kafka)


def test_lag_is_the_end_offset_minus_the_committed_one_or_the_beginning_when_nothing_was_committed():
    topic, consumer, _, metrics = route()

    metrics.refresh(consumer)

    assert lag(topic, 0) == 10 - 4
    assert lag(topic, 1) == 5 - 2
    assert REGISTRY.get_sample_value("esm_bridge_dead_letter_topic_messages", {"topic": topic}) == 7 - 3


def test_offsets_are_read_at_most_every_few_seconds_and_a_failed_read_keeps_the_last_lag():
    topic, consumer, clock, metrics = route()
    metrics.refresh(consumer)
    reads = consumer.calls

    consumer.commits[TopicPartition(topic, 0)] = 10
    clock.advance(LAG_REFRESH_S - 0.1)
    metrics.refresh(consumer)
    assert consumer.calls == reads and lag(topic, 0) == 6

    clock.advance(0.1)
    metrics.refresh(consumer)
    assert lag(topic, 0) == 0

    consumer.broken = True
    consumer.ends[TopicPartition(topic, 0)] = 50
    clock.advance(max(LAG_REFRESH_S, DLQ_REFRESH_S))
    metrics.refresh(consumer)
    assert lag(topic, 0) == 0


def test_a_partition_no_longer_assigned_is_no_longer_reported():
    topic, consumer, clock, metrics = route()
    metrics.refresh(consumer)

    consumer.assigned = {TopicPartition(topic, 0)}
    clock.advance(LAG_REFRESH_S)
    metrics.refresh(consumer)

    assert lag(topic, 0) == 6
    assert lag(topic, 1) is None


def test_deliveries_are_counted_by_answer_class():
    topic, _, _, metrics = route()
    for status in (200, 202, 503, None, 400):
        metrics.delivered(status, 0.01)
    metrics.retried()
    metrics.dead_lettered()

    def count(status: str) -> float | None:
        return REGISTRY.get_sample_value("esm_bridge_deliveries_total", {"topic": topic, "status": status})

    assert (count("2xx"), count("5xx"), count("4xx"), count("error")) == (2, 1, 1, 1)
    assert REGISTRY.get_sample_value("esm_bridge_delivery_retries_total", {"topic": topic}) == 1
    assert REGISTRY.get_sample_value("esm_bridge_dead_letters_total", {"topic": topic}) == 1
    assert REGISTRY.get_sample_value("esm_bridge_delivery_seconds_count", {"topic": topic}) == 5
    assert status_class(None) == "error" and status_class(302) == "3xx"


def test_the_bridge_serves_its_own_metrics_only():
    served = generate_latest(bridge_registry()).decode()

    assert "esm_bridge_consumer_lag_messages" in served
    assert "esm_http_requests_total" not in served
    assert "esm_db_raw_bytes" not in served


class AnsweringSession:
    """Answers POSTs with the given statuses in turn (None: a network error)."""

    def __init__(self, statuses: list[int | None]) -> None:
        self.statuses = statuses

    def post(self, url, headers, data, timeout):
        status = self.statuses.pop(0)
        if status is None:
            raise requests.ConnectionError("refused")
        response = requests.Response()
        response.status_code = status
        response._content = b"{}"
        return response


def test_the_bridge_counts_each_attempt_its_retries_and_its_dead_letters(monkeypatch):
    topic = f"t-{uuid.uuid4().hex[:8]}"
    settings = KafkaBridgeSettings(backoff_base_s=0.001, backoff_max_s=0.002, retry_max_elapsed_s=60)
    route = Route(topic, "http://sink/", "g", f"{topic}.dlq")
    subject = KafkaSourceBridge(
        KafkaSettings(kafka_bootstrap_servers="k:1"), settings, AnsweringSession([503, None, 200, 400]), route=route
    )
    monkeypatch.setattr(subject, "_dlq_producer", AcknowledgingProducer)
    message = to_kafka(CLAIM)
    headers = list(message.headers.items())
    records = [Record(topic, 0, offset, message.key.encode(), message.value, headers) for offset in (0, 1)]

    assert subject.handle_partition(records) == 1

    def count(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"topic": topic, **labels})

    assert [count("esm_bridge_deliveries_total", status=s) for s in ("5xx", "error", "2xx", "4xx")] == [1, 1, 1, 1]
    assert count("esm_bridge_delivery_retries_total") == 2
    assert count("esm_bridge_dead_letters_total") == 1
