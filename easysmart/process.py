"""Process: turn one claim-checked upload into rows of telemetry_data, exactly once.

The blob is read and parsed on this thread while a writer thread COPYs finished chunks into
a staging table and moves them into telemetry_data (ON CONFLICT DO NOTHING): parsing and the
database's work overlap across two cores (a small upload is written on this thread: a thread's start and
hand-offs would cost it more). Everything, ledger included, commits in one
transaction, so a redelivered claim check or a re-upload stores nothing twice.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Iterator, TypeVar, cast

import orjson
import psycopg2
import psycopg2.extensions

from easysmart import outbox
from easysmart.batchbuilder import BatchBuilder
from easysmart.claimsig import ClaimKeyring, ClaimNotAuthenticError, blob_metadata
from easysmart.compression import BoundedGunzip, CorruptGzipError
from easysmart.config import ProcessSettings, RetentionSettings, UploadLimits
from easysmart.copywriter import CopyWriter
from easysmart.db import Database, PreparedStatement, prepared
from easysmart.errors import (
    DatabaseTimeoutError,
    EasySmartError,
    PayloadTooLargeError,
    UnavailableError,
    UnprocessableError,
)
from easysmart.events import ClaimCheck
from easysmart.jsonstream import (
    MalformedJsonError,
    WhitespaceRunGuard,
    events_from_items,
    iter_upload_text,
    text_reader,
)
from easysmart.ledger import BatchCounts, BatchLedger, BatchStatus
from easysmart.metrics import (
    PROCESS_BATCH_BYTES,
    PROCESS_BATCH_DURATION,
    PROCESS_BATCH_READINGS,
    PROCESS_BATCHES,
    PROCESS_DEAD_LETTERED,
    PROCESS_END_TO_END,
    PROCESS_READINGS,
    PROCESS_REDELIVERIES,
)
from easysmart.observability import batch_id_var, tenant_id_var
from easysmart.outbox import TELEMETRY_STORED_TOPIC, TELEMETRY_STORED_TYPE, OutboxEvent
from easysmart.payload import ReadingNormaliser
from easysmart.ratelimit import DecompressionBudget
from easysmart.storage import BlobMetadataMismatchError, BlobMissingError, BlobStore
from easysmart.tracing import span
from easysmart.uploadstats import record_upload

logger = logging.getLogger(__name__)

# Python objects of an upload parsed in one go take about this many times its JSON text.
ONE_GO_MEMORY_FACTOR = 5

# A batch that fails this many times with an unexpected error (a bug, a statement or lock timeout) is failed
# and dead-lettered, so no batch holds its partition for the whole retry window.
MAX_UNEXPECTED_FAILURES = 5
# Serialization failures and deadlocks are retried here this many times before the source retries.
_LOCAL_RETRIES = 3
_RETRYABLE_CODES = {"40001", "40P01"}
_LOG_AGGREGATE_RANGE = PreparedStatement(
    "process_log_aggregate_range",
    "INSERT INTO aggregate_touched (lo, hi) VALUES (%(lo)s, %(hi)s)",
    lo="timestamptz",
    hi="timestamptz",
)
# SQLSTATE classes the database raises for what a batch holds, not for its own state: no retry helps.
_PERMANENT_CLASSES = {"22": "data exception", "23": "integrity violation", "54": "program limit exceeded"}

STORED_EVENT_SOURCE = "/easysmart/process"
# A batch's telemetry.stored event id is uuid5(this, batch id): a batch is done once, and the same id
# whatever enqueues it again, so consumers' idempotence on the id covers it.
STORED_EVENT_NAMESPACE = uuid.UUID("6f3b0c1e-5d2a-4b8e-9c47-1a2e3f4b5c6d")

# Uploads up to this size (decompressed, as ingest measured it) are written on the parsing thread: a writer thread's
# start and hand-offs cost more than the overlap gains on a few hundred readings.
INLINE_WRITE_MAX_BYTES = 256 * 1024

# Makes the writer of one load from its cursor and the tenant id (threaded: on a thread of its own).
WriterFactory = Callable[..., CopyWriter]


class BatchFailedError(UnprocessableError):
    """The batch can never be processed (blob missing or corrupt, not JSON, over a limit)."""

    code = "batch_failed"

    def __init__(self, message: str, dead_letter_reason: str = "invalid_upload", **details: object) -> None:
        super().__init__(message, **details)
        self.dead_letter_reason = dead_letter_reason  # its esm_process_dead_lettered_total reason


class UnknownTenantError(BatchFailedError):
    """The claim check names a tenant that does not exist: nothing can be recorded of the batch."""


@dataclass
class ProcessResult:
    batch_id: str
    status: BatchStatus
    stored: int = 0
    duplicate: int = 0
    skipped: int = 0
    rejected: int = 0
    readings: int = 0
    redelivery: bool = False

    @classmethod
    def done(cls, batch_id: str, counts: BatchCounts, redelivery: bool = False) -> ProcessResult:
        return cls(
            batch_id,
            BatchStatus.DONE,
            counts.stored,
            counts.duplicate,
            counts.skipped,
            counts.rejected,
            counts.readings,
            redelivery,
        )

    def body(self) -> dict:
        return dict(vars(self))


class MemoryBudget:
    """Reserves memory for uploads parsed in one go; those that do not fit are streamed."""

    def __init__(self, total_bytes: int) -> None:
        self.available = total_bytes
        self._lock = threading.Lock()

    def try_reserve(self, amount: int) -> bool:
        with self._lock:
            if amount > self.available:
                return False
            self.available -= amount
            return True

    def release(self, amount: int) -> None:
        with self._lock:
            self.available += amount


class BatchProcessor:
    def __init__(
        self,
        settings: ProcessSettings,
        limits: UploadLimits,
        retention: RetentionSettings,
        db: Database,
        blobs: BlobStore,
        ledger: BatchLedger | None = None,
        writer_factory: WriterFactory = CopyWriter,
        max_unexpected_failures: int = MAX_UNEXPECTED_FAILURES,
        *,
        keyring: ClaimKeyring,
        budget: DecompressionBudget | None = None,
    ) -> None:
        self.settings = settings
        self.limits = limits
        self.retention = retention
        self.db = db
        self.blobs = blobs
        self.ledger = ledger or BatchLedger(db)
        self.writer_factory = writer_factory
        self.max_unexpected_failures = max_unexpected_failures
        self.keyring = keyring
        self.budget = budget
        self.memory = MemoryBudget(settings.process_max_memory_bytes)
        self._partition_days: set = set()

    def process(self, claim: ClaimCheck, now: datetime | None = None) -> ProcessResult:
        # A child of the delivery's request span, or else of the claim check's traceparent.
        with span("process batch", parent=claim.traceparent):
            return self._process(claim, now)

    def _process(self, claim: ClaimCheck, now: datetime | None) -> ProcessResult:
        started = time.perf_counter()
        batch_id_var.set(claim.batch_id)
        tenant_id_var.set(claim.tenant_id)
        self._authenticate(claim)
        now = now or datetime.now(timezone.utc)
        # A small batch is opened in the transaction that loads it (one round trip, no transaction of its own);
        # a large one is opened apart first, so that it shows `processing` while it loads.
        small = claim.decompressed_bytes is not None and claim.decompressed_bytes <= INLINE_WRITE_MAX_BYTES
        zone = None
        if not small:
            zone, status = self._open(claim)
            if status == BatchStatus.DONE:
                return self._redelivered(claim.batch_id)
        try:
            # The normaliser's window (ReadingNormaliser.time_window), known before the tenant's zone is.
            self._ensure_partitions(
                now - timedelta(days=self.retention.raw_retention_days),
                now + timedelta(seconds=self.settings.future_tolerance_s),
            )
            result = self._load_with_retries(claim, now, zone, small)
        except UnknownTenantError:
            raise
        except Exception as error:
            if zone is None and self._open_after_failure(claim) == BatchStatus.DONE:
                return self._redelivered(claim.batch_id)  # a concurrent attempt finished it
            reason = self._permanent_reason(claim, error)
            if reason is None:
                raise
            self._mark_failed(claim, reason)
            raise BatchFailedError(
                f"batch {claim.batch_id} failed: {reason}", _dead_letter_reason(error), batch_id=claim.batch_id
            ) from error
        if result.redelivery:
            return result
        received_at = datetime.fromisoformat(claim.received_at)
        received_at = received_at.replace(tzinfo=received_at.tzinfo or timezone.utc)
        PROCESS_END_TO_END.observe((datetime.now(timezone.utc) - received_at).total_seconds())
        PROCESS_BATCH_DURATION.observe(time.perf_counter() - started)
        PROCESS_BATCH_READINGS.observe(result.readings)
        if self.settings.process_delete_blob_after_commit:
            self.blobs.delete(claim.key)
        PROCESS_READINGS.labels("stored").inc(result.stored)
        PROCESS_READINGS.labels("duplicate").inc(result.duplicate)
        PROCESS_READINGS.labels("skipped").inc(result.skipped)
        PROCESS_READINGS.labels("rejected").inc(result.rejected)
        logger.info("batch processed", extra={k: v for k, v in result.body().items() if k != "batch_id"})
        return result

    def _authenticate(self, claim: ClaimCheck) -> None:
        """Before anything is written: a claim check ingest did not sign leaves no trace but a log line."""
        try:
            self.keyring.verify(claim)
        except ClaimNotAuthenticError as error:
            logger.warning("claim check refused", extra={"reason": error.message})
            raise

    def _permanent_reason(self, claim: ClaimCheck, error: Exception) -> str | None:
        """Why the batch fails for good, or None when the source should retry it (an outage, or an
        unexpected error below the cap). Unexpected errors are counted in the ledger; outages are not."""
        if isinstance(
            error,
            (
                BlobMissingError,
                BlobMetadataMismatchError,
                BatchFailedError,
                CorruptGzipError,
                PayloadTooLargeError,
                MalformedJsonError,
            ),
        ):
            return error.message if isinstance(error, EasySmartError) else str(error)
        sqlstate = (error.pgcode or "") if isinstance(error, psycopg2.Error) else ""
        if sqlstate[:2] in _PERMANENT_CLASSES:
            kind = _PERMANENT_CLASSES[sqlstate[:2]]
            logger.warning("the database refused the batch", extra={"sqlstate": sqlstate, "error": str(error)[:500]})
            return f"the database cannot store this batch ({kind}, SQLSTATE {sqlstate})"
        if isinstance(error, UnavailableError) and not isinstance(error, DatabaseTimeoutError):
            return None  # an outage: the source retries for as long as it lasts
        logger.exception("unexpected error processing the batch")
        failures = self.ledger.count_unexpected_failure(claim.batch_id)
        if failures < self.max_unexpected_failures:
            return None
        return f"failed {failures} times with an unexpected error ({type(error).__name__}); replay it once fixed"

    def _load_with_retries(self, claim: ClaimCheck, now: datetime, zone: str | None, small: bool) -> ProcessResult:
        attempt = 1
        while True:
            try:
                return self._load(claim, now, zone, small)
            except psycopg2.Error as error:
                if error.pgcode not in _RETRYABLE_CODES:
                    raise
                if attempt == _LOCAL_RETRIES:
                    raise UnavailableError("the database kept aborting the batch's transaction") from error
                logger.info("transaction aborted; retrying", extra={"sqlstate": error.pgcode, "attempt": attempt})
                attempt += 1

    def _open(self, claim: ClaimCheck) -> tuple[str, BatchStatus]:
        """The tenant's time zone, and the batch's status once opened for processing."""
        with self.db.transaction() as cursor:
            cursor.execute("SELECT timezone FROM tenants WHERE id = %s", (claim.tenant_id,))
            row = cursor.fetchone()
            if row is None:
                raise UnknownTenantError(f"tenant {claim.tenant_id} does not exist")
            return row[0], self.ledger.open_for_processing(cursor, claim)

    def _open_after_failure(self, claim: ClaimCheck) -> BatchStatus:
        """A batch opened in its load's transaction, which rolled back, is opened apart: the attempt shows, as
        `processing`, and its row exists for the failure to be counted or recorded on."""
        with self.db.transaction() as cursor:
            return self.ledger.open_for_processing(cursor, claim)

    def _redelivered(self, batch_id: str) -> ProcessResult:
        PROCESS_REDELIVERIES.inc()
        return ProcessResult.done(batch_id, self.ledger.counts_of(batch_id), redelivery=True)

    def _ensure_partitions(self, oldest: datetime, newest: datetime) -> None:
        """A fallback: retention keeps the day partitions of the whole window made (easysmart.partitions), and a
        day that exists costs a catalog lookup and no lock on telemetry_data; one that is truly missing (a fresh
        stack) is made here, attached without stopping readers."""
        days = {oldest.date(), newest.date()}
        if days <= self._partition_days and (newest.date() - oldest.date()).days < 40:
            return
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT esm_ensure_telemetry_partition(d::date)"
                " FROM generate_series(%s::date, %s::date, interval '1 day') d",
                (oldest.date(), newest.date()),
            )
        self._partition_days |= days

    def _events(self, claim: ClaimCheck, digest) -> tuple[Iterator, Callable[[], int]]:
        """Upload events, parsed in one go when memory allows, else streamed; and a release() that
        also charges what was decompressed to the device's budget, and answers how much that was."""
        limits = self.limits
        inflater = BoundedGunzip(
            limits.ingest_max_decompressed_bytes, limits.ingest_max_decompression_ratio, limits.ingest_ratio_floor_bytes
        )
        whitespace = WhitespaceRunGuard(limits.ingest_max_whitespace_run_bytes)
        chunks = self.blobs.iter_chunks(claim.key, blob_metadata(claim))
        texts = whitespace.checked(inflater.inflate(_hashed(chunks, digest)))

        def charge() -> int:
            self._charge_decompressed(claim, inflater.total)
            return inflater.total

        # The size is known when ingest saw the whole upload; unknown sizes are streamed.
        one_go_size = claim.decompressed_bytes
        reserve = (one_go_size or 0) * ONE_GO_MEMORY_FACTOR
        if (
            one_go_size is not None
            and one_go_size <= self.settings.process_parse_in_one_go_bytes
            and self.memory.try_reserve(reserve)
        ):

            def release() -> int:
                self.memory.release(reserve)
                return charge()

            try:
                with span("download blob"):
                    text = b"".join(texts)
                with span("parse upload"):
                    items = orjson.loads(text)
            except orjson.JSONDecodeError as error:
                release()
                raise MalformedJsonError(f"the upload is not valid JSON: {error}") from None
            except BaseException:
                release()
                raise
            del text
            if not isinstance(items, list):
                release()
                raise MalformedJsonError("the upload is not a JSON array of equipment objects")
            return events_from_items(items), release
        return iter_upload_text(text_reader(texts)), charge

    def _charge_decompressed(self, claim: ClaimCheck, decompressed: int) -> None:
        """Charges the device what ingest did not: ingest decompressed the whole upload when it knew
        its size, else its window. Each decompression here is charged, a retried one too."""
        if self.budget is None or claim.decompressed_bytes is not None:
            return
        rest = decompressed - self.limits.ingest_sync_window_bytes
        if rest > 0:
            self.budget.charge(claim.account_id, rest)

    def _load(self, claim: ClaimCheck, now: datetime, zone: str | None, small: bool) -> ProcessResult:
        """Loads the batch in one transaction; opens it there too when `zone` is None (not opened apart)."""
        digest = hashlib.sha256()
        with self.db.connection() as conn:
            with conn.cursor() as cursor:
                try:
                    if zone is None:
                        opened = self.ledger.open_for_load(cursor, claim)
                        if opened is None:
                            raise UnknownTenantError(f"tenant {claim.tenant_id} does not exist")
                        zone, status = opened
                    else:
                        status = self.ledger.lock_for_load(cursor, claim.batch_id)
                    if status == BatchStatus.DONE:
                        conn.rollback()
                        return self._redelivered(claim.batch_id)
                    normaliser = ReadingNormaliser(
                        zone, now, self.retention.raw_retention_days, self.settings.future_tolerance_s
                    )
                    events, release = self._events(claim, digest)
                    writer = self.writer_factory(cursor, claim.tenant_id, threaded=not small)
                    builder = BatchBuilder(normaliser, writer, self.settings.process_chunk_readings)
                    try:
                        # COPY overlaps on the writer thread; a streamed upload is downloaded and parsed here too.
                        with span("normalise and COPY"):
                            builder.consume(events)
                    finally:
                        decompressed = release()
                        writer.close()
                    if builder.violations:
                        raise BatchFailedError(
                            "equipment item(s) cannot be used: " + "; ".join(builder.violations[:20])
                        )
                    if digest.hexdigest() != claim.sha256:
                        raise BatchFailedError("the blob's sha256 does not match the claim check", "blob_mismatch")
                    self._check_breadth(writer)
                    tally = builder.tally
                    counts = BatchCounts(
                        tally.readings, writer.stored, tally.valid - writer.stored, tally.skipped, tally.rejected
                    )
                    # The closing statements read no answer: they go to the server in one round trip.
                    closing = DeferredStatements(cursor)
                    if counts.stored:
                        # Logged in this transaction, so no refresh of the aggregates can miss the range.
                        with span("log aggregate range"):
                            closing.execute(
                                prepared(cursor, _LOG_AGGREGATE_RANGE), {"lo": builder.oldest, "hi": builder.newest}
                            )
                    with span("ledger"):
                        self.ledger.mark_done(
                            closing.as_cursor(),
                            claim.batch_id,
                            builder.items,
                            counts,
                            tally.reasons,
                            tally.reason_counts,
                        )
                        outbox.enqueue(closing.as_cursor(), stored_event(claim, writer, datetime.now(timezone.utc)))
                        record_upload(
                            closing.as_cursor(),
                            claim.account_id,
                            datetime.fromisoformat(claim.received_at),
                            tally.readings,
                            builder.newest,
                        )
                        closing.flush()
                    with span("commit"):
                        conn.commit()
                    PROCESS_BATCH_BYTES.observe(decompressed)
                    return ProcessResult.done(claim.batch_id, counts)
                except BaseException:
                    if not conn.closed:
                        conn.rollback()
                    raise

    def _check_breadth(self, writer: CopyWriter) -> None:
        """Fails a batch carrying more equipment or sensors than one upload may (UPLOAD_MAX_EQUIPMENT,
        UPLOAD_MAX_SENSORS): its stored event, which names each, must stay far under what Kafka takes."""
        equipment, sensors = len(writer.equipment), len(writer.stored_spans)
        if equipment > self.limits.upload_max_equipment or sensors > self.limits.upload_max_sensors:
            raise BatchFailedError(
                f"the upload carries {equipment} equipment items and {sensors} sensors with readings;"
                f" one upload may carry at most {self.limits.upload_max_equipment} and"
                f" {self.limits.upload_max_sensors}"
            )

    def _mark_failed(self, claim: ClaimCheck, reason: str) -> None:
        logger.warning("batch failed", extra={"reason": reason})
        try:
            self.ledger.mark_failed(claim.batch_id, reason)
        except UnavailableError:
            logger.warning("could not record the failure; the batch will be retried")
            raise


def stored_event(claim: ClaimCheck, writer: CopyWriter, stored_at: datetime) -> OutboxEvent:
    """The batch's telemetry.stored event: every equipment the upload carried (even one whose readings were all
    duplicates: silence is measured from the last upload that carried it), and per sensor the time range and count
    of the readings this batch stored. One entry per sensor touched, about 200 bytes each: a batch of 10,000 sensors
    makes a 2 MB event, which jsonb holds and the relay's producer and the topic allow (docs/architecture.md)."""
    sensors = []
    for sensor_uuid, (first, last, count) in writer.stored_spans.items():
        sensor_id, equipment_id, kind = writer.sensors[sensor_uuid]
        sensors.append(
            {
                "sensor_id": sensor_id,
                "sensor_uuid": sensor_uuid,
                "equipment_id": equipment_id,
                "kind": kind,
                "first_ts": first,
                "last_ts": last,
                "count": count,
            }
        )
    return OutboxEvent(
        topic=TELEMETRY_STORED_TOPIC,
        kafka_key=claim.tenant_id,
        type=TELEMETRY_STORED_TYPE,
        source=STORED_EVENT_SOURCE,
        subject=f"tenants/{claim.tenant_id}/batches/{claim.batch_id}",
        event_id=uuid.uuid5(STORED_EVENT_NAMESPACE, claim.batch_id),
        data={
            "tenant_id": claim.tenant_id,
            "batch_id": claim.batch_id,
            "account_id": claim.account_id,
            "received_at": claim.received_at,
            "stored_at": stored_at.isoformat(),
            "equipment": [
                {"equipment_id": equipment_id, "equipment_uuid": equipment_uuid}
                for equipment_id, equipment_uuid in writer.equipment.items()
            ],
            "sensors": sensors,
        },
    )


def _dead_letter_reason(error: Exception) -> str:
    """The esm_process_dead_lettered_total reason of a batch `error` failed for good (see _permanent_reason)."""
    if isinstance(error, BatchFailedError):
        return error.dead_letter_reason
    if isinstance(error, (BlobMissingError, BlobMetadataMismatchError)):
        return "blob_mismatch"
    if isinstance(error, (CorruptGzipError, PayloadTooLargeError, MalformedJsonError)):
        return "invalid_upload"
    if isinstance(error, psycopg2.Error) and (error.pgcode or "")[:2] in _PERMANENT_CLASSES:
        return "database_rejected"
    return "too_many_failures"


Answer = TypeVar("Answer")


def counted_claim_check(handler: Callable[..., Answer]) -> Callable[..., Answer]:
    """The route receiving claim checks, counting each answer by outcome: done, retry (a 5xx: the source delivers it
    again) or failed (a 4xx: the source dead-letters it), with the reason it is dead-lettered."""

    @functools.wraps(handler)
    def counted(*args: object, **kwargs: object) -> Answer:
        try:
            answer = handler(*args, **kwargs)
        except Exception as error:
            if not isinstance(error, EasySmartError) or error.status >= 500:
                PROCESS_BATCHES.labels("retry").inc()
                raise
            PROCESS_BATCHES.labels("failed").inc()
            # Else a claim check process could not trust: unreadable, unsigned or altered.
            reason = error.dead_letter_reason if isinstance(error, BatchFailedError) else "unsigned_claim"
            PROCESS_DEAD_LETTERED.labels(reason).inc()
            raise
        PROCESS_BATCHES.labels("done").inc()
        return answer

    return counted


def _hashed(chunks: Iterable[bytes], digest) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


class DeferredStatements:
    """Statements whose answers nobody reads, sent together by flush(): psycopg2 interpolates parameters on the
    client, so they travel as one simple query (one round trip) in the cursor's transaction, and the first that
    fails raises as it would alone."""

    def __init__(self, cursor: psycopg2.extensions.cursor) -> None:
        self.cursor = cursor
        self._statements: list[bytes] = []

    def execute(self, query: str, params: tuple | dict | None = None) -> None:
        self._statements.append(self.cursor.mogrify(query, params))

    @property
    def connection(self) -> psycopg2.extensions.connection:
        """The cursor's (easysmart.db.prepared prepares statements on it)."""
        return self.cursor.connection

    def as_cursor(self) -> psycopg2.extensions.cursor:
        """This, for functions that take a cursor only to execute statements on it."""
        return cast("psycopg2.extensions.cursor", self)

    def flush(self) -> None:
        if self._statements:
            self.cursor.execute(b";\n".join(self._statements))
            self._statements = []
