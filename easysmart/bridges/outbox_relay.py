"""The outbox relay: publishes committed `event_outbox` rows to Kafka, in id order, and marks them published.

Each cycle is one transaction: take the relay's advisory lock, read the oldest unpublished rows, publish them as
binary-mode CloudEvents (idempotent producer, acks=all) and wait for every acknowledgement, then mark them
`published_at` and commit. A crash or an outage anywhere before the commit leaves the rows unpublished, so they
are published again with the same CloudEvents id (consumers are idempotent on it): nothing is lost, duplicates
are possible. A row Kafka refuses for what it is (too large for the topic, an invalid record), also when sent
alone, is marked `refused_at` and skipped: retried forever, it would hold every later row, every tenant's.
The advisory lock makes one relay active at a time; a second one waits as a standby, so rows leave in id order
and one tenant's events (one key, one partition) stay in order. The relay polls (OUTBOX_RELAY_POLL_S) rather than
LISTENing: producers write no NOTIFY, and the poll is one query on a partial index.
It also deletes published rows older than OUTBOX_KEEP_PUBLISHED_H, and refused ones after KEEP_REFUSED.

Run: python -m easysmart.bridges.outbox_relay
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, NoReturn

import kafka
import kafka.errors
import orjson
import psycopg2.errors
from cloudevents.http import CloudEvent
from cloudevents.kafka import KafkaMessage
from cloudevents.kafka import to_binary as _to_kafka_binary

from easysmart.bridges.kafka_source import backoff_delay
from easysmart.clock import Clock, MonotonicClock, utc_now
from easysmart.config import DatabaseSettings, KafkaSettings, LoggingSettings, OutboxRelaySettings
from easysmart.db import Database, one_row
from easysmart.errors import EasySmartError, UnavailableError
from easysmart.observability import configure_logging

logger = logging.getLogger(__name__)

# pg_try_advisory_xact_lock key of the active relay ("esm-outbox" as an integer).
RELAY_LOCK_KEY = 0x65736D2D6F7574
# A telemetry.stored event of a batch touching tens of thousands of sensors is a few MB (easysmart.process).
MAX_EVENT_BYTES = 16 * 1024 * 1024
# Pruning runs this often, in slices, so it never holds the table for long.
PRUNE_INTERVAL_S = 600.0
_PRUNE_SLICE = 10_000
# Refused rows stay this long for an operator to look at (esm_outbox_events_refused counts them).
KEEP_REFUSED = timedelta(days=7)
# Kafka's answers about the record itself: sending it again cannot succeed. Anything else (a broker down, a
# timeout, a missing topic or permission) is the cluster's state, and the row waits for it to change.
_REFUSALS = (
    kafka.errors.MessageSizeTooLargeError,
    kafka.errors.RecordListTooLargeError,
    kafka.errors.InvalidRecordError,
    kafka.errors.CorruptRecordError,
    kafka.errors.InvalidTimestampError,
    kafka.errors.InvalidTopicError,
)
_MAX_REFUSAL_CHARS = 500


@dataclass(frozen=True)
class OutboxRow:
    id: int
    event_id: str
    topic: str
    kafka_key: str
    type: str
    source: str
    subject: str | None
    data: dict
    created_at: datetime
    traceparent: str | None = None


def to_kafka(row: OutboxRow) -> KafkaMessage:
    """The row as a binary-mode CloudEvent Kafka record, keyed by its kafka_key."""
    attributes = {
        "id": row.event_id,
        "type": row.type,
        "source": row.source,
        "datacontenttype": "application/json",
        "time": row.created_at.astimezone(timezone.utc).isoformat(),
        "partitionkey": row.kafka_key,
    }
    if row.subject:
        attributes["subject"] = row.subject
    if row.traceparent:
        attributes["traceparent"] = row.traceparent  # the distributed-tracing extension: ce_traceparent
    return _to_kafka_binary(CloudEvent(attributes, row.data), data_marshaller=orjson.dumps)


def _log_refused(rows: list[OutboxRow], refused: dict[int, str]) -> None:
    for row in rows:
        logger.error(
            "outbox event refused by Kafka; skipped",
            extra={
                "outbox_id": row.id,
                "event_id": row.event_id,
                "topic": row.topic,
                "type": row.type,
                "kafka_key": row.kafka_key,
                "refusal": refused[row.id],
            },
        )


class RelayError(EasySmartError):
    """Kafka did not take a row; the cycle's transaction is rolled back and retried."""


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        bootstrap_servers: str,
        settings: OutboxRelaySettings,
        make_producer: Callable[..., kafka.KafkaProducer] = kafka.KafkaProducer,
        monotonic: MonotonicClock = time.monotonic,
        clock: Clock = utc_now,
    ) -> None:
        self.db = db
        self.bootstrap_servers = bootstrap_servers
        self.settings = settings
        self._make_producer = make_producer
        self.monotonic = monotonic
        self.clock = clock
        self.stopping = threading.Event()
        self._producer: kafka.KafkaProducer | None = None
        self._last_prune = float("-inf")

    def _get_producer(self) -> kafka.KafkaProducer:
        if self._producer is None:
            timeout_ms = int(self.settings.outbox_relay_timeout_s * 1000)
            self._producer = self._make_producer(
                bootstrap_servers=self.bootstrap_servers.split(","),
                acks="all",
                enable_idempotence=True,
                max_request_size=MAX_EVENT_BYTES,
                request_timeout_ms=timeout_ms,
                max_block_ms=timeout_ms,
                delivery_timeout_ms=timeout_ms + 1000,
                reconnect_backoff_max_ms=5000,
            )
        return self._producer

    def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=1)
            except Exception:  # a broken producer may fail to close; it is dropped either way
                logger.debug("closing the producer failed", exc_info=True)

    def publish(self, rows: list[OutboxRow]) -> dict[int, str]:
        """Sends every row and waits for each acknowledgement; the rows Kafka refused for good (id: why), each
        refused again when sent alone. RelayError if Kafka did not take a row for any other reason."""
        failed = self._send(rows)
        if not any(isinstance(error, _REFUSALS) for error in failed.values()):
            if failed:
                self._fail(next(iter(failed.values())))
            return {}
        # A refused record fails the records batched or queued with it and leaves the idempotent producer in a
        # fatal state: each row not acknowledged is sent again alone, on a fresh producer after a refusal.
        refused: dict[int, str] = {}
        self._drop_producer()
        for row in rows:
            if row.id not in failed:
                continue
            error = self._send([row]).get(row.id)
            if error is None:
                continue
            if not isinstance(error, _REFUSALS):
                self._fail(error)
            refused[row.id] = f"{type(error).__name__}: {error}"[:_MAX_REFUSAL_CHARS]
            self._drop_producer()
        return refused

    def _send(self, rows: list[OutboxRow]) -> dict[int, kafka.errors.KafkaError]:
        """Sends the rows and waits for their acknowledgements: the error of each row not acknowledged."""
        failed: dict[int, kafka.errors.KafkaError] = {}
        try:
            producer = self._get_producer()
            sent = []
            for row in rows:
                message = to_kafka(row)
                headers = list(message.headers.items())
                try:
                    future = producer.send(row.topic, key=row.kafka_key.encode(), value=message.value, headers=headers)
                except _REFUSALS as error:  # too large for the producer: refused before it is sent
                    failed[row.id] = error
                    continue
                sent.append((row, future))
        except kafka.errors.KafkaError as error:
            self._fail(error)
        try:
            producer.flush(timeout=self.settings.outbox_relay_timeout_s)
        except kafka.errors.KafkaTimeoutError as error:
            self._fail(error)
        except kafka.errors.KafkaError:
            logger.debug("a batch was aborted; its records' futures say why", exc_info=True)
        for row, future in sent:
            try:
                future.get(timeout=self.settings.outbox_relay_timeout_s)
            except kafka.errors.KafkaError as error:
                failed[row.id] = error
        return failed

    def _fail(self, error: kafka.errors.KafkaError) -> NoReturn:
        self._drop_producer()  # made again for the next attempt, once Kafka is back
        raise RelayError(f"Kafka did not take the events: {error}") from error

    def relay_once(self) -> int:
        """One cycle: how many rows it took, published or refused (0 when none waits or another relay is active)."""
        with self.db.connection() as conn:
            try:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", (RELAY_LOCK_KEY,))
                    if not one_row(cursor)[0]:
                        conn.rollback()
                        return 0
                    cursor.execute(
                        "SELECT id, event_id::text, topic, kafka_key, type, source, subject, data, created_at,"
                        " traceparent"
                        " FROM event_outbox WHERE published_at IS NULL AND refused_at IS NULL ORDER BY id LIMIT %s",
                        (self.settings.outbox_relay_batch,),
                    )
                    rows = [OutboxRow(*row) for row in cursor.fetchall()]
                    refused = self.publish(rows) if rows else {}
                    if rows:
                        cursor.execute(
                            "UPDATE event_outbox SET published_at = clock_timestamp() WHERE id = ANY(%s)",
                            ([row.id for row in rows if row.id not in refused],),
                        )
                    if refused:
                        cursor.execute(
                            "UPDATE event_outbox SET refused_at = clock_timestamp(), refusal = r.refusal"
                            " FROM unnest(%s::bigint[], %s::text[]) AS r(id, refusal) WHERE event_outbox.id = r.id",
                            (list(refused), list(refused.values())),
                        )
                    if self.monotonic() - self._last_prune >= PRUNE_INTERVAL_S:
                        self._prune(cursor)
                conn.commit()
            except BaseException:
                if not conn.closed:
                    conn.rollback()
                raise
        if refused:
            _log_refused([row for row in rows if row.id in refused], refused)
        if rows:
            logger.info(
                "outbox events published",
                extra={"events": len(rows) - len(refused), "refused": len(refused), "last_id": rows[-1].id},
            )
        return len(rows)

    def _prune(self, cursor) -> None:
        now = self.clock()
        cursor.execute(
            "DELETE FROM event_outbox WHERE id IN (SELECT id FROM event_outbox"
            " WHERE published_at < %s OR refused_at < %s ORDER BY id LIMIT %s)",
            (now - timedelta(hours=self.settings.outbox_keep_published_h), now - KEEP_REFUSED, _PRUNE_SLICE),
        )
        if cursor.rowcount < _PRUNE_SLICE:
            self._last_prune = self.monotonic()
        if cursor.rowcount:
            logger.info("published outbox events pruned", extra={"events": cursor.rowcount})

    def run(self) -> None:
        """Relays until stopped; an outage of Kafka or PostgreSQL is retried with backoff, losing nothing."""
        logger.info("outbox relay started")
        attempt = 0
        while not self.stopping.is_set():
            try:
                published = self.relay_once()
            except psycopg2.errors.UndefinedTable as error:
                # A fresh stack starts the relay before `esm migrate` made event_outbox.
                logger.info("waiting for the migrations", extra={"error": str(error).strip()})
                self.stopping.wait(2)
                continue
            except (RelayError, UnavailableError) as error:
                delay = backoff_delay(attempt, 0.5, 30)
                logger.warning(
                    "relay cycle failed; retrying", extra={"error": str(error), "retry_in_s": round(delay, 2)}
                )
                attempt += 1
                self.stopping.wait(delay)
                continue
            attempt = 0
            if published < self.settings.outbox_relay_batch:
                self.stopping.wait(self.settings.outbox_relay_poll_s)
        self._drop_producer()


def main() -> None:
    configure_logging("outbox-relay", LoggingSettings.from_env())
    database = DatabaseSettings.from_env()
    relay = OutboxRelay(
        Database(database.database_url, max_connections=2),
        KafkaSettings.from_env().kafka_bootstrap_servers,
        OutboxRelaySettings.from_env(),
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: relay.stopping.set())
    relay.run()


if __name__ == "__main__":
    main()
