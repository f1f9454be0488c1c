"""Local kafka-source bridge with Knative KafkaSource semantics.

Runs one route per KafkaSource: claim checks from `telemetry.raw` to `process` always, and the
routes of BRIDGE_ROUTES besides (the local stack: `telemetry.stored` to alerts, `alerts.events` to
notify). Each route consumes its topic in a consumer group of its own, POSTs each record to its sink
as a binary-mode CloudEvent (keeping the producer's id, type and source), and commits a partition's
offset only after each of its records is done: answered 2xx, or dead-lettered to the route's
dead-letter topic after a permanent answer or exhausted retries. Records of one key (one device's claim
checks, one tenant's events) are delivered in order; different keys and partitions in parallel. The consumer and
the dead-letter producer are librdkafka's (confluent-kafka), like ingest's claim-check publisher.

Run: python -m easysmart.bridges.kafka_source
"""

from __future__ import annotations

import base64
import logging
import random
import signal
import syslog
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, TypeVar

import confluent_kafka
import urllib3
import urllib3.exceptions
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
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
    NotBinaryCloudEventError,
    kafka_to_http_headers,
)
from easysmart.observability import configure_logging
from easysmart.tracing import configure_tracing, kafka_traceparent, mark_failed, span, with_trace_headers

logger = logging.getLogger(__name__)
_LIBRDKAFKA_LOGGER = logger.getChild("librdkafka")
T = TypeVar("T")

# Knative's delivery spec retries these; every other 4xx is permanent.
RETRIABLE_STATUSES = {404, 408, 409, 429}
# Records taken at once after the first one a poll waited for. Pausing a partition drops what librdkafka had
# fetched of it beyond the records handed over, and resuming fetches on from there, so no size is ever stuck;
# a large one only saves fetching again.
CONSUME_BATCH = 10_000
# The bridge is its group's only member (one process locally, one replica on OpenFaaS): no partition
# for this long means the join went wrong, not that other members hold them all.
UNASSIGNED_REJOIN_S = 30.0
# Deliveries of different keys at once, across the route's partitions. A key's records stay in order, which is all
# the order a topic promises (more partitions would split the keys further); the sink's threads bound the rest.
MAX_PARALLEL_KEYS = 8
# While deliveries are in flight the poll returns this often, so a finished partition is committed and resumed
# at once rather than after the idle poll's 200 ms (a poll returns at once when a record comes).
IN_FLIGHT_POLL_S = 0.02
IDLE_POLL_S = 0.2
# A dead letter's acknowledgement (acks=all) is awaited this long before the attempt counts as failed.
DEAD_LETTER_TIMEOUT_S = 10.0
# Commit errors that say Kafka could not take the commit now, not that the partition moved: tried again.
_COMMIT_RETRIED = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._WAIT_COORD,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    }
)


class Record(NamedTuple):
    """A consumed record, read once out of librdkafka's message (each of whose accessors is a call)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]

    @classmethod
    def of(cls, message: confluent_kafka.Message) -> Record:
        """The record of a message that is not an error (which has a topic, partition, offset and byte headers)."""
        return cls(
            message.topic(),  # type: ignore[arg-type]
            message.partition(),  # type: ignore[arg-type]
            message.offset(),  # type: ignore[arg-type]
            message.key(),
            message.value(),
            message.headers() or [],  # type: ignore[arg-type]
        )


@dataclass
class InFlight:
    """One partition's records being delivered. `owned` is False once a rebalance took the partition away (its
    offset is then not this member's to commit)."""

    future: Future
    records: list[Record]
    owned: bool = True


class KafkaErrorLog:
    """Logs a kind of Kafka error (what failed, the error's code) when it first comes, then at most once every
    interval_s with how many were left out: while Kafka is down librdkafka reports a failed connection every
    ~50 ms, and goes on reconnecting by itself."""

    def __init__(self, monotonic: MonotonicClock, interval_s: float = 30.0) -> None:
        self.monotonic = monotonic
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._logged_at: dict[tuple[str, int], float] = {}
        self._left_out: dict[tuple[str, int], int] = {}

    def warning(self, what: str, error: KafkaError, topic: str) -> None:
        kind, now = (what, error.code()), self.monotonic()
        with self._lock:
            logged_at = self._logged_at.get(kind)
            if logged_at is not None and now - logged_at < self.interval_s:
                self._left_out[kind] = self._left_out.get(kind, 0) + 1
                return
            self._logged_at[kind] = now
            left_out = self._left_out.pop(kind, 0)
        logger.warning(what, extra={"topic": topic, "error": str(error), "repeated_since_last_logged": left_out})


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
        self._producer: confluent_kafka.Producer | None = None
        self._producer_lock = threading.Lock()
        self.metrics = RouteMetrics(self.route.topic, self.route.dlq_topic, monotonic, self._admin)
        self._keys = ThreadPoolExecutor(max_workers=MAX_PARALLEL_KEYS, thread_name_prefix="key")
        # Touched by the poll loop and the rebalance callbacks it runs, on one thread.
        self._in_flight: dict[int, InFlight] = {}
        self._assigned: set[int] = set()
        self._errors = KafkaErrorLog(monotonic)

    def deliver(self, record: Record) -> Outcome:
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

    def _deliver(self, record: Record, headers: dict) -> Outcome:
        try:
            http_headers = kafka_to_http_headers(record.headers, record.key, record.value)
        except NotBinaryCloudEventError as malformed:
            return Outcome(False, None, str(malformed))
        body: bytes = record.value  # type: ignore[assignment]  # JSON, checked above
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
                    "event_id": http_headers["ce-id"],
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

    def dead_letter(self, record: Record, outcome: Outcome) -> None:
        """Send the record to the DLQ with the error attached (Knative's extension names)."""
        headers: list[tuple[str, str | bytes | None]] = [
            (k, v) for k, v in record.headers if k not in DLQ_ERROR_HEADERS
        ]
        headers += [
            (ERROR_CODE_HEADER, str(outcome.status or 0).encode()),
            (ERROR_DATA_HEADER, base64.b64encode(outcome.error.encode()[:4096])),
            (ERROR_DEST_HEADER, self.route.sink_url.encode()),
            (DLQ_SOURCE_HEADER, f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]

        def send() -> None:
            reports: list[KafkaError | None] = []
            producer = self._dlq_producer()
            producer.produce(
                self.route.dlq_topic,
                key=record.key,
                value=record.value,
                headers=headers,
                on_delivery=lambda error, _message: reports.append(error),
            )
            producer.flush(DEAD_LETTER_TIMEOUT_S + 1)  # librdkafka reports a timeout from a scan once a second
            if not reports:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "no delivery report for the dead letter"))
            if reports[0] is not None:
                raise KafkaException(reports[0])

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
            except (KafkaException, BufferError) as error:
                delay = backoff_delay(attempt, base_s, max_s)
                logger.warning(f"{failure}; retrying", extra={"error": str(error), "retry_in_s": round(delay, 2)})
                attempt += 1
                if self.stopping.wait(delay):
                    raise InterruptedError("bridge stopping") from error

    def _dlq_producer(self) -> confluent_kafka.Producer:
        with self._producer_lock:  # key threads dead-letter at once
            if self._producer is None:
                self._producer = confluent_kafka.Producer(
                    {
                        **self._client_config(),
                        "acks": "all",
                        # The partition kafka-python and the Java client choose for a key, as ingest's publisher does.
                        "partitioner": "murmur2_random",
                        "message.timeout.ms": int(DEAD_LETTER_TIMEOUT_S * 1000),
                    }
                )
            return self._producer

    def _client_config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.kafka_config.kafka_bootstrap_servers,
            "reconnect.backoff.max.ms": 5000,
            # The broker closes idle connections (connections.max.idle.ms); librdkafka reconnects when it needs to.
            "log.connection.close": False,
            "logger": _LIBRDKAFKA_LOGGER,  # as structured logs rather than stderr lines
            # Errors come to error_cb, logged there without their repeats; librdkafka's own log of each (FAIL at
            # ERR level) would repeat them every ~50 ms while Kafka is down.
            "log_level": syslog.LOG_CRIT,
            "error_cb": self._kafka_error,
        }

    def _admin(self) -> AdminClient:
        # Made for reading offsets only: never creates the dead-letter topic by asking for it.
        return AdminClient({**self._client_config(), "allow.auto.create.topics": False})

    def _kafka_error(self, error: KafkaError) -> None:
        # librdkafka reconnects by itself (Kafka down, a broker restarting): said, never fatal to the bridge.
        self._errors.warning("Kafka client error", error, self.route.topic)

    def handle_partition(self, records: list[Record]) -> int | None:
        """Deliver records of one partition, those of one key in order and different keys in parallel; the last
        offset up to which every record is done (a record done after one that is not is delivered again)."""
        chains: dict[bytes | None, list[Record]] = {}
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

    def _handle_in_order(self, records: list[Record]) -> set[int]:
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

    def _connect(self) -> confluent_kafka.Consumer:
        """A consumer subscribed to the route's topic; it joins the group, and reconnects, within its polls."""
        consumer = confluent_kafka.Consumer(
            {
                **self._client_config(),
                "group.id": self.route.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # kafka-python's 10 s rather than librdkafka's 45 s: after Kafka was down longer than this the
                # consumer rejoins under a new member id, and the group waits for the old one's session to end on
                # the broker (so does a bridge restarted after a crash): 10 s, not 45, without deliveries.
                "session.timeout.ms": 10000,
            }
        )
        self._assigned = set()
        consumer.subscribe(
            [self.route.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        return consumer

    def _on_assign(self, consumer: confluent_kafka.Consumer, partitions: list[TopicPartition]) -> None:
        """A partition given back to this member while its records are still being delivered stays paused until
        they are done (fetched again meanwhile, they would be delivered twice at once, out of order)."""
        consumer.assign(partitions)
        self._assigned = {tp.partition for tp in partitions}
        held, free = [], []
        for tp in partitions:
            entry = self._in_flight.get(tp.partition)
            if entry is None:
                free.append(tp)
            else:
                entry.owned = True
                held.append(tp)
        if held:
            consumer.pause(held)
        if free:  # a partition revoked while paused may keep the flag
            consumer.resume(free)

    def _on_revoke(self, consumer: confluent_kafka.Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions leave this member (a rebalance, close): what is done of them is committed while they are still
        owned; the deliveries still going on finish without committing."""
        self._finish_done(consumer)
        self._on_lost(consumer, partitions)

    def _on_lost(self, consumer: confluent_kafka.Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions this member no longer owns (its session ended, Kafka down longer than the session timeout):
        nothing of them is committed, their records come again."""
        for tp in partitions:
            self._assigned.discard(tp.partition)
            entry = self._in_flight.get(tp.partition)
            if entry is not None:
                entry.owned = False

    def _commit(self, consumer: confluent_kafka.Consumer, partition: int, offset: int) -> None:
        def commit() -> None:
            try:
                consumer.commit(offsets=[TopicPartition(self.route.topic, partition, offset)], asynchronous=False)
            except KafkaException as error:
                if error.args[0].code() in _COMMIT_RETRIED:
                    raise
                # The partition moved in a rebalance: its records come again (processing is idempotent).
                logger.warning(
                    "offset commit refused",
                    extra={"topic": self.route.topic, "partition": partition, "error": str(error)},
                )

        try:
            self._until_kafka_takes(commit, "offset commit failed", 0.5, 10)
        except InterruptedError:
            pass  # stopping: the records from the last committed offset come again

    def _consume(self, consumer: confluent_kafka.Consumer, timeout_s: float) -> list[Record]:
        """The records a poll waited for at most timeout_s, with every one already fetched behind the first."""
        try:
            first = consumer.poll(timeout_s)
            messages = [] if first is None else [first, *consumer.consume(CONSUME_BATCH, 0)]
        except KafkaException as error:
            self._errors.warning("poll failed", error.args[0], self.route.topic)
            self.stopping.wait(1)
            return []
        records = []
        for message in messages:
            failure = message.error()
            if failure is None:
                records.append(Record.of(message))
            else:  # librdkafka goes on by itself (a topic not created yet, a broker gone)
                self._errors.warning("poll error", failure, self.route.topic)
        return records

    def run(self) -> None:
        """Poll without pause; a partition whose records are being delivered is paused meanwhile.

        Polling on while a delivery retries for up to an hour keeps this member in its group
        (the broker expels a consumer that stops polling for max.poll.interval.ms).
        """
        consumer = self._connect()
        logger.info(
            "kafka-source bridge started",
            extra={"topic": self.route.topic, "sink": self.route.sink_url, "group": self.route.group_id},
        )
        unassigned_since: float | None = None
        try:
            with ThreadPoolExecutor(max_workers=8, thread_name_prefix="partition") as pool:
                while not self.stopping.is_set():
                    if self._assigned or self._in_flight:
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
                        continue
                    records = self._consume(consumer, IN_FLIGHT_POLL_S if self._in_flight else IDLE_POLL_S)
                    self._start(consumer, pool, records)
                    self._finish_done(consumer)
                    self.metrics.refresh(consumer)
        finally:
            self._keys.shutdown()
            consumer.close()  # leaves the group; its revocation commits what finished meanwhile

    def _start(self, consumer: confluent_kafka.Consumer, pool: ThreadPoolExecutor, records: list[Record]) -> None:
        by_partition: dict[int, list[Record]] = {}
        for record in records:
            by_partition.setdefault(record.partition, []).append(record)
        for partition, batch in by_partition.items():
            if partition in self._in_flight:
                continue  # fetched before its pause took hold: fetched again from where its delivery ends

            consumer.pause([TopicPartition(self.route.topic, partition)])
            self._in_flight[partition] = InFlight(pool.submit(self.handle_partition, batch), batch)

    def _finish_done(self, consumer: confluent_kafka.Consumer) -> None:
        for partition in [p for p, entry in self._in_flight.items() if entry.future.done()]:
            self._finish_partition(consumer, partition, self._in_flight.pop(partition))

    def _finish_partition(self, consumer: confluent_kafka.Consumer, partition: int, entry: InFlight) -> None:
        try:
            last = entry.future.result()
        except InterruptedError:
            last = None
        if not entry.owned:
            return  # revoked: whoever owns it now starts from the committed offset
        if last is not None:
            self._commit(consumer, partition, last + 1)
        # Fetching goes on after the records done: records after an interrupted one come again, and so do those
        # fetched before the pause took hold, or from the committed offset when the partition was assigned again.
        # Resumed alone, librdkafka fetches a partition again only at its next 1 s tick (500 ms more per record at
        # the median, measured); a seek starts the fetch at once.
        consumer.resume([TopicPartition(self.route.topic, partition)])
        next_offset = entry.records[0].offset if last is None else last + 1
        try:
            consumer.seek(TopicPartition(self.route.topic, partition, next_offset))
        except KafkaException as error:  # not fetching yet: it starts from the committed offset
            logger.warning(
                "seek failed", extra={"topic": self.route.topic, "partition": partition, "error": str(error)}
            )


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
