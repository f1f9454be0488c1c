"""Kafka clients while Kafka is down: an upload or a health check gives up within the backend timeout."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import kafka.errors
import pytest
from support.claims import CLAIM

from easysmart.errors import UnavailableError
from easysmart.messaging import RECONNECT_PAUSE_S, ClaimCheckPublisher, KafkaProbe


class UnreachableBroker:
    """Stands in for kafka.KafkaProducer when no broker answers: making one fails (after `hold` is set)."""

    def __init__(self) -> None:
        self.attempts: list[dict] = []
        self.entered = threading.Event()
        self.hold = threading.Event()
        self.hold.set()

    def __call__(self, **config: object) -> None:
        self.attempts.append(config)
        self.entered.set()
        self.hold.wait(10)
        raise kafka.errors.KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:1']")


def test_connecting_is_bounded_by_the_backend_timeout():
    broker = UnreachableBroker()
    publisher = ClaimCheckPublisher("127.0.0.1:1", "telemetry.raw", 5.0, make_producer=broker)
    with pytest.raises(UnavailableError):
        publisher.publish(CLAIM)
    assert broker.attempts[0]["bootstrap_timeout_ms"] == 5000  # the library's default is 30 s
    assert broker.attempts[0]["max_block_ms"] == 5000


def test_after_a_failed_connection_uploads_are_refused_at_once_for_a_moment():
    now = [100.0]
    broker = UnreachableBroker()
    publisher = ClaimCheckPublisher("127.0.0.1:1", "telemetry.raw", 5.0, make_producer=broker, clock=lambda: now[0])
    with pytest.raises(UnavailableError):
        publisher.publish(CLAIM)
    with pytest.raises(UnavailableError, match="last connection attempt failed"):
        publisher.publish(CLAIM)
    assert len(broker.attempts) == 1
    now[0] += RECONNECT_PAUSE_S
    with pytest.raises(UnavailableError):
        publisher.publish(CLAIM)
    assert len(broker.attempts) == 2


def test_a_request_does_not_queue_behind_another_ones_connection_attempt():
    broker = UnreachableBroker()
    broker.hold.clear()
    publisher = ClaimCheckPublisher("127.0.0.1:1", "telemetry.raw", 0.2, make_producer=broker)
    with ThreadPoolExecutor(max_workers=1) as pool:
        connecting = pool.submit(publisher.publish, CLAIM)
        assert broker.entered.wait(5)
        try:
            with pytest.raises(UnavailableError, match="still connecting"):
                publisher.publish(CLAIM)
        finally:
            broker.hold.set()
        with pytest.raises(UnavailableError):
            connecting.result()
    assert len(broker.attempts) == 1


def test_the_kafka_health_probe_gives_up_within_its_timeout():
    probe = KafkaProbe("127.0.0.1:1", "telemetry.raw", 0.5)  # nothing listens on port 1
    started = time.monotonic()
    with pytest.raises(UnavailableError):
        probe.ping()
    assert time.monotonic() - started < 10  # the client library's own bootstrap wait is 30 s
