"""Ingest's record of the batches it accepted, in Redis: its duplicate check, and the batch status until process
writes the batch's ledger row.

Ingest answers an upload without a database round trip: after the claim check is acknowledged it writes, in one
round trip, `ingest:upload:<tenant>:<account>:<sha256>` (the batch id; what finds a resend of the same blob) and
`ingest:batch:<tenant>:<batch>` (what the status endpoint answers while process has not recorded the batch; the
ledger row, which process writes from the claim check, is the truth once it exists). The first expires after the
blob retention, the window in which a resend is answered as a duplicate; the second after a day (process opens a
batch within seconds of its 201, unless it is down), so Redis holds ~250 bytes per upload of the retention and
~220 per upload of the last day.

Redis losing these keys weakens answers, not storage: a resend of an upload accepted before the loss becomes a
new batch (process finds its readings stored already, so nothing is stored twice) instead of the duplicate
answer, and a batch process has not opened yet is unknown to the status endpoint until it is.

The ledger row of an accepted batch is still written, off the request path: `AcceptedRows` queues it and a thread
inserts what is queued every `interval_s`, many rows per statement. The alerts' processing lag counts accepted
rows, so a backlog waiting in Kafka (process down) holds silence alerts off as it did when ingest wrote the row.
"""

from __future__ import annotations

import logging
from collections import deque
from datetime import datetime

import orjson
import psycopg2
import redis

from easysmart.errors import UnavailableError
from easysmart.events import ClaimCheck
from easysmart.flusher import PeriodicFlusher
from easysmart.ledger import BatchLedger, BatchRecord, BatchStatus

logger = logging.getLogger(__name__)


def upload_key(tenant_id: str, account_id: str, sha256: str) -> str:
    return f"ingest:upload:{tenant_id}:{account_id}:{sha256}"


def batch_key(tenant_id: str, batch_id: str) -> str:
    return f"ingest:batch:{tenant_id}:{batch_id}"


RECORD_TTL_S = 86400


class AcceptedBatches:
    """The uploads accepted in the last `duplicate_window_s` seconds, and the batches accepted in the last
    min(that, RECORD_TTL_S). Raises UnavailableError when Redis is down."""

    def __init__(self, client: redis.Redis, duplicate_window_s: int) -> None:
        self.client = client
        self.duplicate_window_s = duplicate_window_s
        self.record_ttl_s = min(duplicate_window_s, RECORD_TTL_S)

    def identical_batch_id(self, tenant_id: str, account_id: str, sha256: str) -> str | None:
        """The batch accepted earlier with the same blob from this account, if any."""
        try:
            batch_id = self.client.get(upload_key(tenant_id, account_id, sha256))
        except redis.RedisError as error:
            raise UnavailableError(f"Redis is unavailable: {error}") from error
        return batch_id.decode() if isinstance(batch_id, bytes) else batch_id

    def record(self, claim: ClaimCheck) -> None:
        """The batch, and its blob as this account's latest upload of it (a resend of a failed batch's blob
        replaces that batch; of two identical uploads at once, the later answers resends)."""
        record = orjson.dumps({"items": claim.items, "readings": claim.readings, "received_at": claim.received_at})
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(batch_key(claim.tenant_id, claim.batch_id), record, ex=self.record_ttl_s)
            upload = upload_key(claim.tenant_id, claim.account_id, claim.sha256)
            pipe.set(upload, claim.batch_id, ex=self.duplicate_window_s)
            pipe.execute()
        except redis.RedisError as error:
            raise UnavailableError(f"Redis is unavailable: {error}") from error

    def status(self, tenant_id: str, batch_id: str) -> BatchRecord | None:
        """The batch as ingest accepted it, if it did within the window."""
        try:
            raw = self.client.get(batch_key(tenant_id, batch_id))
        except redis.RedisError as error:
            raise UnavailableError(f"Redis is unavailable: {error}") from error
        if raw is None:
            return None
        record = orjson.loads(raw)
        return BatchRecord(
            batch_id=batch_id,
            status=BatchStatus.ACCEPTED,
            items=record["items"],
            readings=record["readings"],
            stored=0,
            duplicate=0,
            skipped=0,
            rejected=0,
            reasons=[],
            reason_counts={},
            received_at=datetime.fromisoformat(record["received_at"]),
            processed_at=None,
        )


class AcceptedRows(PeriodicFlusher):
    """Accepted batches' ledger rows, written by one background thread, many per statement.

    A row never written (the database down, the worker stopped first, the queue over `max_pending`) is written by
    process from the claim check when it opens the batch; until then the batch is missing from the processing lag.
    A row the database refuses for what it holds (its tenant or account deleted since) is skipped alone."""

    def __init__(self, ledger: BatchLedger, interval_s: float = 0.1, max_pending: int = 10_000) -> None:
        super().__init__("accepted-rows", interval_s)
        self.ledger = ledger
        self._pending: deque[ClaimCheck] = deque(maxlen=max_pending)

    def add(self, claim: ClaimCheck) -> None:
        with self._lock:
            self._pending.append(claim)
            self._start_unless_running()

    def flush(self) -> int:
        """Writes what is queued; the number of rows written (0 when the database refused them: they are dropped,
        process writes them)."""
        with self._lock:
            claims = list(self._pending)
            self._pending.clear()
        if not claims:
            return 0
        try:
            self.ledger.record_accepted_many(claims)
        except psycopg2.IntegrityError:
            return self._write_one_by_one(claims)
        except Exception as error:  # any database error: the thread must live on for the next rows
            logger.warning(
                "accepted rows not written; process will write them", extra={"rows": len(claims), "error": str(error)}
            )
            return 0
        return len(claims)

    def _write_one_by_one(self, claims: list[ClaimCheck]) -> int:
        """The rows of a statement one of them failed, each on its own: the one refused costs the others nothing."""
        written = 0
        for claim in claims:
            try:
                self.ledger.record_accepted(claim)
            except Exception as error:  # as in flush: the thread lives on; process writes the row
                logger.warning(
                    "accepted row not written; process will write it",
                    extra={"batch_id": claim.batch_id, "error": str(error)},
                )
                continue
            written += 1
        return written
