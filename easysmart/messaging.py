"""Kafka clients: the claim-check publisher (acks=all, bounded waits) and a health probe."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import kafka
import kafka.errors
from kafka.admin import KafkaAdminClient

from easysmart.clock import MonotonicClock
from easysmart.errors import UnavailableError
from easysmart.events import ClaimCheck, to_kafka
from easysmart.metrics import KAFKA_PUBLISH_LATENCY

logger = logging.getLogger(__name__)

# After a failed connection attempt, uploads are refused at once for this long rather than each trying again.
RECONNECT_PAUSE_S = 1.0


class PublishOutcomeUnknownError(UnavailableError):
    """The claim check was handed to Kafka but not acknowledged in time: it may or may not be stored."""


class ClaimCheckPublisher:
    """Sends claim checks and waits for the broker's acknowledgement.

    The producer is made on first use and made again after a failure, so a function that
    started while Kafka was down recovers by itself.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        timeout_s: float,
        make_producer: Callable[..., kafka.KafkaProducer] = kafka.KafkaProducer,
        clock: MonotonicClock = time.monotonic,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.timeout_s = timeout_s
        self._make_producer = make_producer
        self._clock = clock
        self._producer: kafka.KafkaProducer | None = None
        self._lock = threading.Lock()
        self._next_connect_at = 0.0

    def _get_producer(self) -> kafka.KafkaProducer:
        # Making a producer connects to the broker (bounded by the timeout). While one request makes it, the
        # others wait at most the timeout, and for a moment after it failed they are refused at once: else, in
        # an outage, each waiting request made its own attempt in turn and the last waited minutes.
        if not self._lock.acquire(timeout=self.timeout_s):
            raise UnavailableError("Kafka is unavailable: still connecting to it", retry_after_s=10)
        try:
            if self._producer is None:
                if self._clock() < self._next_connect_at:
                    raise UnavailableError("Kafka is unavailable: the last connection attempt failed", retry_after_s=10)
                timeout_ms = int(self.timeout_s * 1000)
                try:
                    self._producer = self._make_producer(
                        bootstrap_servers=self.bootstrap_servers.split(","),
                        acks="all",
                        # Retries within the delivery timeout never write a claim check twice.
                        enable_idempotence=True,
                        linger_ms=0,
                        request_timeout_ms=timeout_ms,
                        max_block_ms=timeout_ms,
                        delivery_timeout_ms=timeout_ms + 1000,
                        bootstrap_timeout_ms=timeout_ms,
                        reconnect_backoff_max_ms=1000,
                    )
                except (kafka.errors.KafkaError, OSError):
                    self._next_connect_at = self._clock() + RECONNECT_PAUSE_S
                    raise
            return self._producer
        finally:
            self._lock.release()

    def _discard(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception:  # closing a broken producer may fail in many ways; it is gone anyway
                logger.debug("closing a failed producer raised", exc_info=True)

    def publish(self, claim: ClaimCheck) -> None:
        message = to_kafka(claim)
        key = message.key.encode() if isinstance(message.key, str) else message.key
        started = time.perf_counter()
        try:
            producer = self._get_producer()
            future = producer.send(self.topic, key=key, value=message.value, headers=list(message.headers.items()))
        except (kafka.errors.KafkaError, OSError) as error:
            # Refused before it was handed over (no broker, no metadata, too large): it is not in Kafka.
            self._discard()
            raise UnavailableError(f"Kafka did not take the claim check: {error}", retry_after_s=10) from error
        try:
            future.get(timeout=self.timeout_s)
        except (kafka.errors.KafkaError, OSError) as error:
            self._discard()
            if isinstance(error, kafka.errors.KafkaError) and not error.retriable:
                raise UnavailableError(f"Kafka refused the claim check: {error}", retry_after_s=10) from error
            # A timeout or a lost connection after sending: the broker may have written it.
            raise PublishOutcomeUnknownError(
                f"Kafka did not acknowledge the claim check in time: {error}", retry_after_s=10
            ) from error
        KAFKA_PUBLISH_LATENCY.observe(time.perf_counter() - started)

    def close(self) -> None:
        self._discard()


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
