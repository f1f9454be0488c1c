"""The kafka-source bridge's metrics: what each delivery counts, the lag and dead-letter depth read from Kafka,
and the HTTP server of its own that /metrics is served on (the bridge is one process, not a function).

The lag of a route's partition is its end offset minus the group's committed offset: the records the bridge has
not finished (delivered or dead-lettered). The poll loop asks Kafka for both at most every LAG_REFRESH_S, and for
the dead-letter topic's depth (end minus beginning offsets) at most every DLQ_REFRESH_S, so a few small requests
every few seconds is all the reading costs; deliveries run on their own threads meanwhile. The committed offsets
come from the consumer (its coordinator's connection); the end and beginning offsets and the dead-letter topic's
partitions from an admin client of its own: on the consumer's broker connection each request waits behind the
fetch the broker holds open (up to fetch.wait.max.ms, 500 ms), which stalled the poll loop ~2 s every refresh.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

import confluent_kafka
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client import CollectorRegistry, start_http_server

from easysmart.clock import MonotonicClock
from easysmart.config import BridgeMetricsSettings
from easysmart.metrics import (
    BRIDGE_CONSUMER_LAG,
    BRIDGE_DEAD_LETTERS,
    BRIDGE_DELIVERIES,
    BRIDGE_DELIVERY_LATENCY,
    BRIDGE_DLQ_DEPTH,
    BRIDGE_RETRIES,
)

logger = logging.getLogger(__name__)

LAG_REFRESH_S = 5.0
DLQ_REFRESH_S = 30.0
# Each offset request of a refresh waits at most this long: the poll loop must not stall behind a slow broker.
OFFSETS_TIMEOUT_S = 2.0


def status_class(status: int | None) -> str:
    """The label of a delivery's answer: 2xx, 4xx, 5xx (any class), or error when there was no answer."""
    return "error" if status is None else f"{status // 100}xx"


class RouteMetrics:
    """One route's metrics; `monotonic` paces the offset reads of `refresh`, `make_admin` makes the admin client
    they use (on the first refresh)."""

    def __init__(
        self, topic: str, dlq_topic: str, monotonic: MonotonicClock, make_admin: Callable[[], AdminClient]
    ) -> None:
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.monotonic = monotonic
        self._make_admin = make_admin
        self._admin: AdminClient | None = None
        self._lag_read_at: float | None = None
        self._dlq_read_at: float | None = None
        self._lag_partitions: set[int] = set()

    def delivered(self, status: int | None, seconds: float) -> None:
        BRIDGE_DELIVERIES.labels(self.topic, status_class(status)).inc()
        BRIDGE_DELIVERY_LATENCY.labels(self.topic).observe(seconds)

    def retried(self) -> None:
        BRIDGE_RETRIES.labels(self.topic).inc()

    def dead_lettered(self) -> None:
        BRIDGE_DEAD_LETTERS.labels(self.topic).inc()

    def refresh(self, consumer: confluent_kafka.Consumer) -> None:
        """Reads the lag and the dead-letter depth when they are due; a failed read keeps the last values."""
        now = self.monotonic()
        if self._lag_read_at is None or now - self._lag_read_at >= LAG_REFRESH_S:
            self._lag_read_at = now
            try:
                self._read_lag(consumer)
            except Exception as error:  # a metric never stops deliveries: the next refresh tries again
                logger.warning("consumer lag not read", extra={"topic": self.topic, "error": str(error)})
        if self._dlq_read_at is None or now - self._dlq_read_at >= DLQ_REFRESH_S:
            self._dlq_read_at = now
            try:
                self._read_dlq_depth(consumer)
            except Exception as error:
                logger.warning("dead-letter topic depth not read", extra={"topic": self.dlq_topic, "error": str(error)})

    def _read_lag(self, consumer: confluent_kafka.Consumer) -> None:
        assigned = [TopicPartition(tp.topic, tp.partition) for tp in consumer.assignment() if tp.topic == self.topic]
        committed = consumer.committed(assigned, timeout=OFFSETS_TIMEOUT_S) if assigned else []
        ends = self._offsets(assigned, OffsetSpec.latest())
        # Never committed (a negative logical offset): the group starts at the earliest record.
        never_committed = [TopicPartition(tp.topic, tp.partition) for tp in committed if tp.offset < 0]
        beginnings = self._offsets(never_committed, OffsetSpec.earliest())
        self._set_lag(
            {
                tp.partition: max(0, ends[tp.partition] - (tp.offset if tp.offset >= 0 else beginnings[tp.partition]))
                for tp in committed
            }
        )

    def _offsets(self, partitions: list[TopicPartition], spec: OffsetSpec) -> dict[int, int]:
        """Each partition's offset at `spec` (latest: the end, earliest: the beginning), in one request."""
        if not partitions:
            return {}
        if self._admin is None:
            self._admin = self._make_admin()
        answers = self._admin.list_offsets({tp: spec for tp in partitions}, request_timeout=OFFSETS_TIMEOUT_S)
        return {tp.partition: answer.result().offset for tp, answer in answers.items()}

    def _set_lag(self, lag: dict[int, int]) -> None:
        # A partition another member took (or that a rejoin moved) is no longer this bridge's to report.
        for partition in self._lag_partitions - lag.keys():
            BRIDGE_CONSUMER_LAG.remove(self.topic, str(partition))
        for partition, records in lag.items():
            BRIDGE_CONSUMER_LAG.labels(self.topic, str(partition)).set(records)
        self._lag_partitions = set(lag)

    def _read_dlq_depth(self, consumer: confluent_kafka.Consumer) -> None:
        if self._admin is None:
            self._admin = self._make_admin()
        topic = self._admin.list_topics(self.dlq_topic, timeout=OFFSETS_TIMEOUT_S).topics.get(self.dlq_topic)
        if topic is None or topic.error is not None or not topic.partitions:
            return  # no such topic (yet): nothing to report
        partitions = [TopicPartition(self.dlq_topic, partition) for partition in sorted(topic.partitions)]
        ends = self._offsets(partitions, OffsetSpec.latest())
        beginnings = self._offsets(partitions, OffsetSpec.earliest())
        BRIDGE_DLQ_DEPTH.labels(self.topic).set(sum(ends[p] - beginnings[p] for p in ends))


BRIDGE_METRICS = (
    BRIDGE_CONSUMER_LAG,
    BRIDGE_DELIVERIES,
    BRIDGE_RETRIES,
    BRIDGE_DEAD_LETTERS,
    BRIDGE_DLQ_DEPTH,
    BRIDGE_DELIVERY_LATENCY,
)


def bridge_registry(metrics: Iterable = BRIDGE_METRICS) -> CollectorRegistry:
    """The bridge's metrics alone: the process imports the whole catalogue, whose other metrics are not its own."""
    registry = CollectorRegistry()
    for metric in metrics:
        registry.register(metric)
    return registry


def serve_metrics(settings: BridgeMetricsSettings) -> None:
    """/metrics on KAFKA_BRIDGE_METRICS_HOST:KAFKA_BRIDGE_METRICS_PORT, in a daemon thread (port 0: not served)."""
    if settings.port == 0:
        return
    start_http_server(settings.port, settings.host, registry=bridge_registry())
    logger.info("bridge metrics served", extra={"host": settings.host, "port": settings.port})
