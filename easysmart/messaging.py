"""Kafka clients: the claim-check publisher (librdkafka; acks=all, bounded waits) and a health probe."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import confluent_kafka
import kafka.errors
from confluent_kafka import KafkaError, KafkaException
from kafka.admin import KafkaAdminClient

from easysmart.errors import UnavailableError
from easysmart.events import ClaimCheck, to_kafka
from easysmart.metrics import KAFKA_PUBLISH_LATENCY

logger = logging.getLogger(__name__)
_LIBRDKAFKA_LOGGER = logger.getChild("librdkafka")

# librdkafka reports a message's delivery timeout from a scan that runs about once a second.
DELIVERY_REPORT_GRACE_S = 1.0
# How soon the poller notices close(); delivery reports wake it at once.
POLL_INTERVAL_S = 0.5
CLOSE_FLUSH_S = 1.0

# Delivery errors that say the broker did not write the record (librdkafka marks no delivery error retriable, so
# the codes are named). Any other error after the record was handed over leaves the outcome unknown.
_NOT_WRITTEN = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._PURGE_QUEUE,  # dropped before it was sent, as a fatal error drops what is queued
    }
)


class PublishOutcomeUnknownError(UnavailableError):
    """The claim check was handed to Kafka but not acknowledged in time: it may or may not be stored."""


class _Delivery:
    """One record's delivery report, set by the poller thread and awaited by the publishing one."""

    __slots__ = ("reported", "error")

    def __init__(self) -> None:
        self.reported = threading.Event()
        self.error: KafkaError | None = None

    def report(self, error: KafkaError | None, _message: object) -> None:
        self.error = error
        self.reported.set()


class _Poller:
    """A daemon thread serving a producer's delivery reports (and librdkafka's logs) until stopped."""

    def __init__(self, producer: confluent_kafka.Producer) -> None:
        self._producer = producer
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kafka-delivery-reports", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                self._producer.poll(POLL_INTERVAL_S)
            except Exception:  # a dead poller would leave every later publish without its report
                logger.exception("serving Kafka delivery reports failed")

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(POLL_INTERVAL_S * 2)


class ClaimCheckPublisher:
    """Sends claim checks through librdkafka and waits for the broker's acknowledgement.

    The producer and its poller thread are made on first use (gunicorn forks workers after import). After a claim
    check Kafka did not acknowledge, Kafka counts as down: one request at a time goes through as a probe and the
    others are refused at once, until a delivery succeeds. Only delivery outcomes count: librdkafka also reports
    all brokers down when the broker closes idle connections.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        timeout_s: float,
        make_producer: Callable[[dict[str, object]], confluent_kafka.Producer] = confluent_kafka.Producer,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.timeout_s = timeout_s
        self._make_producer = make_producer
        self._lock = threading.Lock()
        self._producer: confluent_kafka.Producer | None = None
        self._poller: _Poller | None = None
        self._kafka_down = False
        self._probing = False

    def _config(self) -> dict[str, object]:
        timeout_ms = int(self.timeout_s * 1000)
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "acks": "all",
            # Retries within the delivery timeout never write a claim check twice.
            "enable.idempotence": True,
            # The partition kafka-python and the Java client choose for a key (librdkafka's default differs):
            # other producers write telemetry.raw too.
            "partitioner": "murmur2_random",
            # Concurrent uploads' claim checks share a produce request: the broker's CPU per upload fell from 1.2 to
            # 0.5 ms at concurrency 8 (bench/ingest_floor.py), for at most 2 ms more before the 201.
            "linger.ms": 2,
            "message.timeout.ms": timeout_ms,
            "request.timeout.ms": timeout_ms,
            "socket.timeout.ms": timeout_ms,
            "socket.connection.setup.timeout.ms": max(timeout_ms, 1000),  # librdkafka's minimum
            "reconnect.backoff.max.ms": 1000,
            # The broker closes idle connections (connections.max.idle.ms); librdkafka reconnects when it needs to.
            "log.connection.close": False,
            "logger": _LIBRDKAFKA_LOGGER,  # served by the poller, as structured logs rather than stderr lines
        }

    def _get_producer(self) -> confluent_kafka.Producer:
        with self._lock:
            if self._producer is None:
                self._producer = self._make_producer(self._config())
                self._poller = _Poller(self._producer)
            return self._producer

    def _admit(self) -> bool:
        """Whether this request is the probe; UnavailableError while Kafka is down and another request probes."""
        with self._lock:
            if not self._kafka_down:
                return False
            if self._probing:
                raise UnavailableError(
                    "Kafka is unavailable: it did not acknowledge the last claim check", retry_after_s=10
                )
            self._probing = True
            return True

    def _settle(self, probe: bool, kafka_down: bool | None) -> None:
        """Ends a request: its probe slot freed, and Kafka marked down or up when the delivery said which."""
        with self._lock:
            if probe:
                self._probing = False
            if kafka_down is not None:
                self._kafka_down = kafka_down

    def _discard(self, producer: confluent_kafka.Producer) -> None:
        """Drops a producer a fatal error left unusable (an idempotent producer's sequence broken: every later
        produce() raises _FATAL); the next request makes a new one. Another request may have replaced it already."""
        with self._lock:
            if self._producer is not producer:
                return
            poller, self._poller, self._producer = self._poller, None, None
        if poller is not None:
            poller.stop()

    def publish(self, claim: ClaimCheck) -> None:
        message = to_kafka(claim)
        started = time.perf_counter()
        probe = self._admit()
        kafka_down: bool | None = None
        try:
            delivery = _Delivery()
            producer = self._get_producer()
            try:
                producer.produce(
                    self.topic,
                    value=message.value,
                    key=message.key,
                    headers=list(message.headers.items()),
                    on_delivery=delivery.report,
                )
            except (BufferError, KafkaException) as error:
                # Refused before it was handed over (queue full, too large, unusable producer): it is not in Kafka.
                if isinstance(error, KafkaException) and error.args[0].code() == KafkaError._FATAL:
                    self._discard(producer)
                raise UnavailableError(f"Kafka did not take the claim check: {error}", retry_after_s=10) from error
            kafka_down = True
            if not delivery.reported.wait(self.timeout_s + DELIVERY_REPORT_GRACE_S):
                raise PublishOutcomeUnknownError(
                    "Kafka did not acknowledge the claim check in time: no delivery report", retry_after_s=10
                )
            if delivery.error is not None:
                if delivery.error.code() == KafkaError._FATAL:
                    self._discard(producer)
                if delivery.error.code() in _NOT_WRITTEN:
                    raise UnavailableError(f"Kafka refused the claim check: {delivery.error}", retry_after_s=10)
                # A timeout or a lost connection after sending: the broker may have written it.
                raise PublishOutcomeUnknownError(
                    f"Kafka did not acknowledge the claim check in time: {delivery.error}", retry_after_s=10
                )
            kafka_down = False
        finally:
            self._settle(probe, kafka_down)
        KAFKA_PUBLISH_LATENCY.observe(time.perf_counter() - started)

    def close(self) -> None:
        with self._lock:
            producer, poller, self._producer, self._poller = self._producer, self._poller, None, None
        if poller is not None:
            poller.stop()
        if producer is not None:
            producer.flush(CLOSE_FLUSH_S)


class KafkaProbe:
    """A real round trip to the broker for health checks."""

    def __init__(self, bootstrap_servers: str, topic: str, timeout_s: float) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.timeout_ms = int(timeout_s * 1000)
        self._admin: KafkaAdminClient | None = None

    def ping(self) -> float:
        started = time.perf_counter()
        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap_servers.split(","),
                    request_timeout_ms=self.timeout_ms,
                    bootstrap_timeout_ms=self.timeout_ms,  # the library's default is 30 s
                )
            topics = self._admin.describe_topics([self.topic])
        except (kafka.errors.KafkaError, OSError) as error:
            admin, self._admin = self._admin, None
            if admin is not None:
                admin.close()
            raise UnavailableError(f"Kafka is unavailable: {error}") from error
        if not topics or topics[0].get("error_code"):
            raise UnavailableError(f"Kafka topic {self.topic} is unavailable")
        return time.perf_counter() - started
