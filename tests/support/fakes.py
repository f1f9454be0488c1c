"""Small in-memory stand-ins for the object store, the claim-check publisher and its Kafka producer, the batch ledger,
ingest's accepted batches, the database and the COPY writer, for in-process unit tests of ingest and process.

The fakes that take a journal append what they do to it, so a test can assert the order of
steps across them (blob stored, claim check published, ledger row written, commit).
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
from datetime import datetime
from typing import BinaryIO, Iterator, Mapping

from easysmart.errors import UnavailableError
from easysmart.events import ClaimCheck
from easysmart.ledger import BatchCounts, BatchRecord, BatchStatus
from easysmart.storage import BlobMissingError, check_metadata


class FakeBlobStore:
    bucket = "telemetry-raw"

    def __init__(self, journal: list) -> None:
        self.journal = journal
        self.blobs: dict[str, bytes] = {}
        self.metadata: dict[str, dict[str, str]] = {}
        self.reads = 0

    def put(
        self,
        key: str,
        body: BinaryIO,
        metadata: Mapping[str, str],
        content_type: str = "application/json",
        sha256: str | None = None,
    ) -> None:
        data = body.read()
        if sha256 is not None and sha256 != hashlib.sha256(data).hexdigest():
            raise UnavailableError("the object store did not store the upload: its digest is not the body's")
        self.blobs[key] = data
        self.metadata[key] = dict(metadata)
        self.journal.append(("blob stored", key))

    def iter_chunks(self, key: str, expected_metadata: Mapping[str, str] | None = None) -> Iterator[bytes]:
        if key not in self.blobs:
            raise BlobMissingError(f"blob s3://{self.bucket}/{key} does not exist")
        self.reads += 1
        if expected_metadata is not None:
            check_metadata(key, self.metadata[key], expected_metadata)
        blob = self.blobs[key]
        for start in range(0, len(blob), 1000):
            yield blob[start : start + 1000]

    def delete(self, key: str) -> None:
        self.blobs.pop(key, None)
        self.metadata.pop(key, None)
        self.journal.append(("blob deleted", key))


class FakePublisher:
    def __init__(self, journal: list, failure: Exception | None = None) -> None:
        self.journal = journal
        self.failure = failure
        self.claims: list[ClaimCheck] = []

    def publish(self, claim: ClaimCheck) -> None:
        if self.failure is not None:
            raise self.failure
        self.claims.append(claim)
        self.journal.append(("claim published", claim.batch_id))


class FakeKafkaProducer:
    """Stands in for confluent_kafka.Producer and for the function making it (called with the config, it returns
    itself). produce() raises `refusal` or queues the record's delivery callback; poll() reports queued records with
    `outcome` (None: delivered). While `holding`, records are kept in `held` for the test to report itself, and
    `produced` is set when one arrives."""

    def __init__(self, outcome: object = None, refusal: Exception | None = None) -> None:
        self.outcome = outcome
        self.refusal = refusal
        self.holding = False
        self.configs: list[dict] = []
        self.records: list[dict] = []
        self.held: list = []
        self.produced = threading.Event()
        self.flushes: list[float] = []
        self._reports: queue.Queue = queue.Queue()

    def __call__(self, config: dict) -> FakeKafkaProducer:
        self.configs.append(config)
        return self

    def produce(self, topic: str, value=None, key=None, headers=None, on_delivery=None) -> None:
        if self.refusal is not None:
            raise self.refusal
        self.records.append({"topic": topic, "key": key, "value": value, "headers": headers})
        if self.holding:
            self.held.append(on_delivery)
            self.produced.set()
        else:
            self._reports.put(on_delivery)

    def poll(self, timeout: float) -> int:
        try:
            report = self._reports.get(timeout=min(timeout, 0.01))  # returning early lets close() end quickly
        except queue.Empty:
            return 0
        report(self.outcome, None)
        return 1

    def flush(self, timeout: float) -> int:
        self.flushes.append(timeout)
        return 0


class FakeLedger:
    """BatchLedger's rules on a dict of rows; `history` keeps each batch's statuses in order and
    `done_on` the cursor each batch was marked done on."""

    def __init__(self, journal: list) -> None:
        self.journal = journal
        self.rows: dict[str, dict] = {}
        self.history: dict[str, list[BatchStatus]] = {}
        self.done_on: dict[str, object] = {}

    def _insert(self, claim: ClaimCheck, status: BatchStatus) -> None:
        self.rows[claim.batch_id] = {
            "claim": claim,
            "received_at": datetime.fromisoformat(claim.received_at),
            "items": claim.items,
            "counts": BatchCounts(claim.readings or 0, 0, 0, 0, 0),
            "reasons": [],
            "reason_counts": {},
            "processed_at": None,
        }
        self._set(claim.batch_id, status)

    def _set(self, batch_id: str, status: BatchStatus, **fields: object) -> None:
        self.rows[batch_id].update(status=status, **fields)
        self.history.setdefault(batch_id, []).append(status)
        self.journal.append(("ledger", batch_id, status))

    def _record(self, batch_id: str) -> BatchRecord:
        row = self.rows[batch_id]
        counts = row["counts"]
        return BatchRecord(
            batch_id,
            row["status"],
            row["items"],
            counts.readings,
            counts.stored,
            counts.duplicate,
            counts.skipped,
            counts.rejected,
            row["reasons"],
            row["reason_counts"],
            row["received_at"],
            row["processed_at"],
        )

    def status(self, batch_id: str) -> BatchStatus:
        return self.rows[batch_id]["status"]

    def find_identical(self, account_id: str, sha256: str, since: datetime) -> BatchRecord | None:
        matches = sorted(
            (row["received_at"], batch_id)
            for batch_id, row in self.rows.items()
            if row["claim"].account_id == account_id
            and row["claim"].sha256 == sha256
            and row["received_at"] > since
            and row["status"] != BatchStatus.FAILED
        )
        return self._record(matches[0][1]) if matches else None

    def record_accepted(self, claim: ClaimCheck) -> None:
        if claim.batch_id not in self.rows:
            self._insert(claim, BatchStatus.ACCEPTED)

    def open_for_processing(self, cursor: object, claim: ClaimCheck) -> BatchStatus:
        if claim.batch_id not in self.rows:
            self._insert(claim, BatchStatus.PROCESSING)
        elif self.status(claim.batch_id) not in (BatchStatus.DONE, BatchStatus.PROCESSING):
            # (History keeps changes: a load's transaction that rolled back leaves the batch processing.)
            self._set(claim.batch_id, BatchStatus.PROCESSING)
        return self.status(claim.batch_id)

    def lock_for_load(self, cursor: object, batch_id: str) -> BatchStatus:
        return self.status(batch_id)

    def open_for_load(self, cursor: FakeCursor, claim: ClaimCheck) -> tuple[str, BatchStatus] | None:
        zone = cursor.connection.db.tenant_zones.get(claim.tenant_id)
        return None if zone is None else (zone, self.open_for_processing(cursor, claim))

    def mark_done(
        self,
        cursor: object,
        batch_id: str,
        items: int,
        counts: BatchCounts,
        reasons: list[dict],
        reason_counts: dict[str, int],
    ) -> None:
        self.done_on[batch_id] = cursor
        self._set(
            batch_id,
            BatchStatus.DONE,
            items=items,
            counts=counts,
            reasons=reasons,
            reason_counts=reason_counts,
            processed_at=datetime.now(),
        )

    def counts_of(self, batch_id: str) -> BatchCounts:
        return self.rows[batch_id]["counts"]

    def mark_failed(self, batch_id: str, reason: str) -> None:
        if self.status(batch_id) != BatchStatus.DONE:
            self._set(
                batch_id,
                BatchStatus.FAILED,
                reasons=[{"path": "$", "reason": reason, "outcome": "failed"}],
                reason_counts={reason: 1},
                processed_at=datetime.now(),
            )

    def status_for_tenant(self, tenant_id: str, batch_id: str) -> BatchRecord | None:
        row = self.rows.get(batch_id)
        if row is None or row["claim"].tenant_id != tenant_id:
            return None
        return self._record(batch_id)


class FakeAcceptedBatches:
    """AcceptedBatches on dicts; `down` makes every call fail as with Redis unavailable."""

    def __init__(self, journal: list, down: bool = False) -> None:
        self.journal = journal
        self.down = down
        self.uploads: dict[tuple[str, str, str], str] = {}
        self.batches: dict[tuple[str, str], ClaimCheck] = {}

    def _check(self) -> None:
        if self.down:
            raise UnavailableError("Redis is unavailable")

    def identical_batch_id(self, tenant_id: str, account_id: str, sha256: str) -> str | None:
        self._check()
        return self.uploads.get((tenant_id, account_id, sha256))

    def record(self, claim: ClaimCheck) -> None:
        self._check()
        self.batches[(claim.tenant_id, claim.batch_id)] = claim
        self.uploads[(claim.tenant_id, claim.account_id, claim.sha256)] = claim.batch_id
        self.journal.append(("accepted batch recorded", claim.batch_id))

    def status(self, tenant_id: str, batch_id: str) -> BatchRecord | None:
        self._check()
        claim = self.batches.get((tenant_id, batch_id))
        if claim is None:
            return None
        return BatchRecord(
            batch_id,
            BatchStatus.ACCEPTED,
            claim.items,
            claim.readings,
            0,
            0,
            0,
            0,
            [],
            {},
            datetime.fromisoformat(claim.received_at),
            None,
        )


class FakeCursor:
    """Records statements; answers the one process reads outside the ledger, a tenant's time zone."""

    def __init__(self, connection: FakeConnection) -> None:
        self.connection = connection
        self._row: tuple | None = None

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def execute(self, sql: str | bytes, params: tuple | dict | None = None) -> None:
        if isinstance(sql, bytes):  # statements sent together (process.DeferredStatements)
            self.connection.db.statements.extend(sql.decode().split(";\n"))
            return
        self.connection.db.statements.append(sql)
        if sql.startswith("SELECT timezone FROM tenants"):
            zone = self.connection.db.tenant_zones.get(params[0])
            self._row = None if zone is None else (zone,)

    def fetchone(self) -> tuple | None:
        return self._row

    def mogrify(self, sql: str, params: tuple | dict | None = None) -> bytes:
        return sql.encode()


class FakeConnection:
    def __init__(self, db: FakeDatabase) -> None:
        self.db = db
        self.closed = False

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def commit(self) -> None:
        self.db.journal.append(("commit", self))

    def rollback(self) -> None:
        self.db.journal.append(("rollback", self))


class FakeDatabase:
    def __init__(self, journal: list, tenant_zones: dict[str, str]) -> None:
        self.journal = journal
        self.tenant_zones = tenant_zones
        self.statements: list[str] = []

    @contextlib.contextmanager
    def connection(self) -> Iterator[FakeConnection]:
        yield FakeConnection(self)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[FakeCursor]:
        conn = FakeConnection(self)
        try:
            yield conn.cursor()
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


class FakeCopyWriter:
    """CopyWriter's operations done at once on lists: every row written counts as stored."""

    def __init__(self, cursor: FakeCursor, tenant_id: str, *, threaded: bool = True) -> None:
        self.cursor = cursor
        self.tenant_id = tenant_id
        self.threaded = threaded
        self.stored = 0
        self.rows: list[tuple[str, str]] = []
        self.equipment: dict[int, str] = {}
        self.sensors: dict[str, tuple] = {}
        self.stored_spans: dict[str, list] = {}
        self._staged: list[tuple[str, str]] = []
        self.closed = False

    def submit(self, operation) -> None:
        operation()

    def close(self) -> None:
        self.closed = True

    def upsert(self, equipment: object, sensors: list) -> None:
        return None

    def stage(self, rows: dict[str, list[str]]) -> None:
        self._staged.extend((sensor_uuid, line) for sensor_uuid, lines in rows.items() for line in lines)

    def write(self, rows: dict[str, list[str]]) -> None:
        written = [(sensor_uuid, line) for sensor_uuid, lines in rows.items() for line in lines]
        self.rows.extend(written)
        self.stored += len(written)

    def discard_staged(self) -> None:
        self._staged = []

    def move_staged(self) -> None:
        self.rows.extend(self._staged)
        self.stored += len(self._staged)
        self._staged = []


class AcknowledgingProducer:
    """librdkafka's producer as the kafka-source bridge's dead-lettering uses it: each record acknowledged at the
    flush, its (topic, headers) appended to `sent`."""

    def __init__(self, sent: list | None = None) -> None:
        self.sent = [] if sent is None else sent
        self.reports: list = []

    def produce(self, topic, key, value, headers, on_delivery):
        self.sent.append((topic, headers))
        self.reports.append(on_delivery)

    def flush(self, timeout):
        for report in self.reports:
            report(None, None)
        self.reports.clear()
        return 0
