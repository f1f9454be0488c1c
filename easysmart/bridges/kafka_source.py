"""Local kafka-source bridge with Knative KafkaSource semantics.

Runs one route per KafkaSource: claim checks from `telemetry.raw` to `process` always, and the
routes of BRIDGE_ROUTES besides (the local stack: `telemetry.stored` to alerts, `alerts.events` to
notify). Each route consumes its topic in a consumer group of its own, POSTs each record to its sink
as a binary-mode CloudEvent (keeping the producer's id, type and source), and commits a partition's
offset only after each of its records is done: answered 2xx, or dead-lettered to the route's
dead-letter topic after a permanent answer or exhausted retries. Records of one key (one device's claim
checks, one tenant's events) are delivered in order; different keys and partitions in parallel.

Run: python -m easysmart.bridges.kafka_source
"""

from __future__ import annotations

import base64
import logging
import random
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, TypeVar

import kafka
import kafka.errors
import urllib3
import urllib3.exceptions
from kafka.structs import OffsetAndMetadata, TopicPartition
from opentelemetry.trace import SpanKind

from easysmart.bridges.bridge_metrics import RouteMetrics, serve_metrics
from easysmart.clock import MonotonicClock
from easysmart.config import (
    BridgeMetricsSettings,
    ConfigError,
    KafkaBridgeSettings,
    KafkaSettings,
    LoggingSettings,
    TracingSettings,
)
from easysmart.events import (
    DLQ_ERROR_HEADERS,
    DLQ_SOURCE_HEADER,
    ERROR_CODE_HEADER,
    ERROR_DATA_HEADER,
    ERROR_DEST_HEADER,
    from_kafka,
    to_http,
)
from easysmart.observability import configure_logging
from easysmart.tracing import configure_tracing, kafka_traceparent, mark_failed, span, with_trace_headers

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Knative's delivery spec retries these; every other 4xx is permanent.
RETRIABLE_STATUSES = {404, 408, 409, 429}
# A poll hands over every record the consumer has buffered. kafka-python 3.0.12 parks the
# unreturned rest of a partition that gets paused and gives it back only when no other
# partition's records are buffered, which can stop that partition for good; with nothing
# left unreturned, nothing is parked. Claim checks are small and a fetch is bounded by
# max_partition_fetch_bytes, so this bounds memory as well.
MAX_POLL_RECORDS = 1_000_000
# The bridge is its group's only member (one process locally, one replica on OpenFaaS): no partition
# for this long means the join went wrong, not that other members hold them all.
UNASSIGNED_REJOIN_S = 30.0
# Deliveries of different keys at once, across the route's partitions. A key's records stay in order, which is all
# the order a topic promises (more partitions would split the keys further); the sink's threads bound the rest.
MAX_PARALLEL_KEYS = 8
# While deliveries are in flight the poll returns this often, so a finished partition is committed and resumed
# at once rather than after the idle poll's 200 ms.
IN_FLIGHT_POLL_MS = 20


@dataclass(frozen=True)
class Route:
    """One KafkaSource: a topic, the sink its records are POSTed to, a consumer group and a dead-letter topic."""

    topic: str
    sink_url: str
    group_id: str
    dlq_topic: str


def claim_check_route(kafka_config: KafkaSettings, settings: KafkaBridgeSettings) -> Route:
    return Route(kafka_config.kafka_topic_raw, settings.sink_url, settings.group_id, kafka_config.kafka_topic_dlq)


def extra_routes(spec: str) -> list[Route]:
    """The routes of BRIDGE_ROUTES: space-separated `topic=url`, each in the consumer group `<topic>-bridge` with
    the dead-letter topic `<topic>.dlq` (claim checks alone dead-letter to KAFKA_TOPIC_DLQ, which
    `esm dlq replay` reads)."""
    routes = []
    for entry in spec.split():
        topic, _, url = entry.partition("=")
        if not topic or not url.startswith(("http://", "https://")):
            raise ConfigError(f"BRIDGE_ROUTES: {entry!r} is not topic=http(s)://sink")
        routes.append(Route(topic, url, f"{topic}-bridge", f"{topic}.dlq"))
    topics = [route.topic for route in routes]
    if len(topics) != len(set(topics)):
        raise ConfigError("BRIDGE_ROUTES: a topic is routed twice")
    return routes


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    status: int | None
    error: str


def backoff_delay(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with jitter: base * 2^attempt, capped, +-20%."""
    delay = min(max_s, base_s * (2 ** min(attempt, 30)))
    return delay * random.uniform(0.8, 1.2)


def is_retriable(status: int | None) -> bool:
    return status is None or status >= 500 or status in RETRIABLE_STATUSES


class KafkaSourceBridge:
    """One route (the claim checks' unless given). `monotonic` measures how long a record's retries have gone on."""

    def __init__(
        self,
        kafka_config: KafkaSettings,
        settings: KafkaBridgeSettings,
        session: SinkClient | None = None,
        monotonic: MonotonicClock = time.monotonic,
        route: Route | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.kafka_config = kafka_config
        self.settings = settings
        self.route = route or claim_check_route(kafka_config, settings)
        self.session = session or SinkClient(MAX_PARALLEL_KEYS)
        self.monotonic = monotonic
        self.stopping = stopping or threading.Event()
        self._producer: kafka.KafkaProducer | None = None
        self.metrics = RouteMetrics(self.route.topic, self.route.dlq_topic, monotonic)
        self._keys = ThreadPoolExecutor(max_workers=MAX_PARALLEL_KEYS, thread_name_prefix="key")

    def deliver(self, record) -> Outcome:
        """POST one record until it is done, retrying retriable failures with backoff; one span, a child of the
        record's traceparent, whose context the sink gets in its traceparent header."""
        headers = {k: v for k, v in (record.headers or [])}
        with span(f"{self.route.topic} deliver", kind=SpanKind.CONSUMER, parent=kafka_traceparent(headers)) as current:
            outcome = self._deliver(record, headers)
            if outcome.status is not None:
                current.set_attribute("http.response.status_code", outcome.status)
            if not outcome.delivered:
                mark_failed(current, "undelivered")
            return outcome

    def _deliver(self, record, headers: dict) -> Outcome:
        try:
            event = from_kafka(headers, record.key, record.value)
            http_headers, body = to_http(event)
        except Exception as malformed:  # the SDK raises several types for a malformed record
            return Outcome(False, None, f"not a binary-mode CloudEvent: {malformed}")
        started = self.monotonic()
        attempt = 0
        while True:
            status, error = self._post(http_headers, body)
            if status is not None and 200 <= status < 300:
                return Outcome(True, status, "")
            elapsed = self.monotonic() - started
            if not is_retriable(status):
                return Outcome(False, status, error)
            if elapsed >= self.settings.retry_max_elapsed_s:
                return Outcome(False, status, f"retries exhausted after {elapsed:.0f} s: {error}")
            delay = backoff_delay(attempt, self.settings.backoff_base_s, self.settings.backoff_max_s)
            logger.warning(
                "delivery failed; retrying",
                extra={
                    "event_id": event["id"],
                    "status": status,
                    "error": error[:300],
                    "attempt": attempt,
                    "retry_in_s": round(delay, 2),
                },
            )
            attempt += 1
            self.metrics.retried()
            if self.stopping.wait(delay):
                raise InterruptedError("bridge stopping")

    def _post(self, headers: dict[str, str], body: bytes) -> tuple[int | None, str]:
        started = time.perf_counter()
        try:
            response = self.session.post(
                self.route.sink_url,
                headers=with_trace_headers(headers),
                data=body,
                timeout=(5, self.settings.request_timeout_s),
            )
        except OSError as error:
            self.metrics.delivered(None, time.perf_counter() - started)
            return None, f"network error: {error}"
        self.metrics.delivered(response.status_code, time.perf_counter() - started)
        return response.status_code, response.text[:2000]

    def dead_letter(self, record, outcome: Outcome) -> None:
        """Send the record to the DLQ with the error attached (Knative's extension names)."""
        headers = [(k, v) for k, v in (record.headers or []) if k not in DLQ_ERROR_HEADERS]
        headers += [
            (ERROR_CODE_HEADER, str(outcome.status or 0).encode()),
            (ERROR_DATA_HEADER, base64.b64encode(outcome.error.encode()[:4096])),
            (ERROR_DEST_HEADER, self.route.sink_url.encode()),
            (DLQ_SOURCE_HEADER, f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]

        def send() -> None:
            try:
                self._dlq_producer().send(
                    self.route.dlq_topic, key=record.key, value=record.value, headers=headers
                ).get(timeout=10)
            except kafka.errors.KafkaError:
                self._producer = None  # made again for the next attempt
                raise

        # The offset is not committed until the record is safe somewhere.
        self._until_kafka_takes(send, "dead-lettering failed", 1, 30)
        self.metrics.dead_lettered()
        logger.error(
            "record dead-lettered",
            extra={
                "partition": record.partition,
                "offset": record.offset,
                "status": outcome.status,
                "error": outcome.error[:300],
            },
        )

    def _until_kafka_takes(self, operation: Callable[[], T], failure: str, base_s: float, max_s: float) -> T:
        """operation(), retried with backoff while Kafka fails it; InterruptedError if the bridge stops first."""
        attempt = 0
        while True:
            try:
                return operation()
            except kafka.errors.KafkaError as error:
                delay = backoff_delay(attempt, base_s, max_s)
                logger.warning(f"{failure}; retrying", extra={"error": str(error), "retry_in_s": round(delay, 2)})
                attempt += 1
                if self.stopping.wait(delay):
                    raise InterruptedError("bridge stopping") from error

    def _dlq_producer(self) -> kafka.KafkaProducer:
        if self._producer is None:
            self._producer = kafka.KafkaProducer(
                bootstrap_servers=self.kafka_config.kafka_bootstrap_servers.split(","),
                acks="all",
                max_block_ms=10000,
                request_timeout_ms=10000,
            )
        return self._producer

    def handle_partition(self, records: list) -> int | None:
        """Deliver records of one partition, those of one key in order and different keys in parallel; the last
        offset up to which every record is done (a record done after one that is not is delivered again)."""
        chains: dict[object, list] = {}
        for record in records:
            chains.setdefault(record.key, []).append(record)
        if len(chains) == 1:
            finished = self._handle_in_order(records)
        else:
            futures = [self._keys.submit(self._handle_in_order, chain) for chain in chains.values()]
            finished, failure = set(), None
            for future in futures:  # every chain ends before the partition is committed or sought back
                try:
                    finished |= future.result()
                except BaseException as error:
                    failure = failure or error
            if failure is not None:
                raise failure
        done = None
        for record in records:
            if record.offset not in finished:
                break
            done = record.offset
        return done

    def _handle_in_order(self, records: list) -> set[int]:
        """Deliver records in order until the bridge stops; the offsets done."""
        finished = set()
        for record in records:
            if self.stopping.is_set():
                break
            outcome = self.deliver(record)
            if not outcome.delivered:
                self.dead_letter(record, outcome)
            finished.add(record.offset)
        return finished

    def _connect(self) -> kafka.KafkaConsumer | None:
        """The consumer, made once Kafka answers; None if the bridge is stopping first."""

        def connect() -> kafka.KafkaConsumer:
            return kafka.KafkaConsumer(
                self.route.topic,
                bootstrap_servers=self.kafka_config.kafka_bootstrap_servers.split(","),
                group_id=self.route.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=MAX_POLL_RECORDS,
                reconnect_backoff_max_ms=5000,
            )

        try:
            return self._until_kafka_takes(connect, "Kafka unavailable", 1, 10)
        except InterruptedError:
            return None

    def _commit(self, consumer: kafka.KafkaConsumer, offsets: dict) -> None:
        def commit() -> None:
            try:
                consumer.commit(offsets)
            except kafka.errors.CommitFailedError as error:
                # The partitions moved in a rebalance: their records come again (processing is idempotent).
                logger.warning("offset commit refused after a rebalance", extra={"error": str(error)})

        try:
            self._until_kafka_takes(commit, "offset commit failed", 0.5, 10)
        except InterruptedError:
            pass  # stopping: the records from the last committed offset come again

    def run(self) -> None:
        """Poll without pause; a partition whose records are being delivered is paused meanwhile.

        Polling on while a delivery retries for up to an hour keeps this member in its group
        (the broker expels a consumer that stops polling for max.poll.interval.ms).
        """
        consumer = self._connect()
        if consumer is None:
            return
        logger.info(
            "kafka-source bridge started",
            extra={"topic": self.route.topic, "sink": self.route.sink_url, "group": self.route.group_id},
        )
        in_flight: dict[TopicPartition, tuple[Future, list]] = {}
        unassigned_since: float | None = None
        try:
            with ThreadPoolExecutor(max_workers=8, thread_name_prefix="partition") as pool:
                while not self.stopping.is_set():
                    if consumer.assignment() or in_flight:
                        unassigned_since = None
                    elif unassigned_since is None:
                        unassigned_since = self.monotonic()
                    elif self.monotonic() - unassigned_since > UNASSIGNED_REJOIN_S:
                        # Seen when the bridge joined while a just-started broker had no metadata for the topic:
                        # the member kept an empty assignment and delivered nothing. A new consumer joins afresh.
                        logger.warning(
                            "no partition assigned; joining the group again",
                            extra={"topic": self.route.topic, "after_s": UNASSIGNED_REJOIN_S},
                        )
                        consumer.close()
                        unassigned_since = None
                        consumer = self._connect()
                        if consumer is None:
                            return
                        continue
                    try:
                        polled = consumer.poll(timeout_ms=IN_FLIGHT_POLL_MS if in_flight else 200)
                    except kafka.errors.KafkaError as error:
                        # The consumer reconnects by itself; keep polling.
                        logger.warning("poll failed", extra={"error": str(error)})
                        self.stopping.wait(1)
                        polled = {}
                    for tp, records in polled.items():
                        consumer.pause(tp)
                        in_flight[tp] = (pool.submit(self.handle_partition, records), records)
                    for tp in [tp for tp, (future, _) in in_flight.items() if future.done()]:
                        future, records = in_flight.pop(tp)
                        self._finish_partition(consumer, tp, future, records)
                    # A rebalance keeps a partition's paused flag; resume every one that is not in flight.
                    idle = [tp for tp in consumer.paused() if tp not in in_flight]
                    if idle:
                        consumer.resume(*idle)
                    self.metrics.refresh(consumer)
        finally:
            self._keys.shutdown()
            if consumer is not None:  # None when Kafka never answered a rejoin before stopping
                consumer.close()

    def _finish_partition(
        self, consumer: kafka.KafkaConsumer, tp: TopicPartition, future: Future, records: list
    ) -> None:
        try:
            last = future.result()
        except InterruptedError:
            last = None
        if last is not None:
            self._commit(consumer, {tp: OffsetAndMetadata(last + 1, "", -1)})
        if last is None or last < records[-1].offset:
            # Records after an interrupted one are fetched again.
            next_offset = records[0].offset if last is None else last + 1
            try:
                consumer.seek(tp, next_offset)
            except kafka.errors.KafkaError:
                pass  # no longer assigned: the new owner starts from the committed offset


@dataclass(frozen=True)
class SinkAnswer:
    status_code: int
    text: str


class SinkClient:
    """POSTs records to the sinks, keeping alive a connection for each delivery that can be in flight.

    urllib3's pools straight: requests' own work per call (environment, netrc, cookies, hooks) was half the bridge's
    CPU per record (0.73 -> 0.34 ms per POST, one at a time)."""

    MAX_ANSWER_BYTES = 64 * 1024

    def __init__(self, connections: int) -> None:
        self._pools = urllib3.PoolManager(maxsize=connections, retries=False)

    def post(self, url: str, headers: dict[str, str], data: bytes, timeout: tuple[float, float]) -> SinkAnswer:
        """The sink's status and (the start of) its answer; ConnectionError when it gave none."""
        try:
            response = self._pools.request(
                "POST",
                url,
                body=data,
                headers=headers,
                timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
                preload_content=False,
            )
            try:
                text = response.read(self.MAX_ANSWER_BYTES).decode(errors="replace")
            finally:
                if response.length_remaining == 0:
                    response.release_conn()
                else:  # an answer longer than we read: its connection is not reused mid-answer
                    response.close()
        except urllib3.exceptions.HTTPError as error:
            raise ConnectionError(str(error)) from error
        return SinkAnswer(response.status, text)


def main() -> None:
    configure_logging("kafka-source-bridge", LoggingSettings.from_env())
    configure_tracing("kafka-source-bridge", TracingSettings.from_env())
    kafka_config, settings = KafkaSettings.from_env(), KafkaBridgeSettings.from_env()
    serve_metrics(BridgeMetricsSettings.from_env())
    stopping = threading.Event()
    routes = [claim_check_route(kafka_config, settings), *extra_routes(settings.bridge_routes)]
    bridges = [KafkaSourceBridge(kafka_config, settings, route=route, stopping=stopping) for route in routes]
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    threads = [threading.Thread(target=bridge.run, name=f"route-{bridge.route.topic}") for bridge in bridges]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
