"""The batch ledger: one `batches` row per upload, and every statement that reads or writes it.

A row moves accepted (ingest recorded it) -> processing (process opened it; the first state
when ingest could not record it) -> done or failed. `done` is final: a redelivered claim check
or a late failure never changes it. Loading a batch locks its row and marks it done on the
caller's transaction, so the readings and the row commit together or not at all. A small batch is opened in
that transaction too (open_for_load): it goes from accepted to done in one commit, and shows `processing` only
after an attempt that failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

import psycopg2.extensions
import psycopg2.extras

from easysmart.db import Database, PreparedStatement, prepared
from easysmart.errors import EasySmartError
from easysmart.events import ClaimCheck


class BatchStatus(str, Enum):
    ACCEPTED = "accepted"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class BatchCounts:
    """What became of a batch's readings."""

    readings: int
    stored: int
    duplicate: int
    skipped: int
    rejected: int


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    status: BatchStatus
    items: int | None
    readings: int | None
    stored: int
    duplicate: int
    skipped: int
    rejected: int
    reasons: list[dict]
    reason_counts: dict[str, int]
    received_at: datetime
    processed_at: datetime | None


_RECORD_COLUMNS = (
    "id, status, received_items, readings, stored, duplicate, skipped, rejected, reasons, reason_counts,"
    " received_at, processed_at"
)
# A claim check carries everything the row is made of, so ingest and process record it alike.
_INSERT_INTO_BATCHES = (
    "INSERT INTO batches (id, tenant_id, account_id, request_id, sha256, status, received_items, readings,"
    " bucket, object_key, size_bytes, decompressed_bytes, received_at)"
)
_INSERT_CLAIM = _INSERT_INTO_BATCHES + " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id)"
_INSERT_CLAIMS = _INSERT_INTO_BATCHES + " VALUES %s ON CONFLICT (id) DO NOTHING"


def _claim_row(claim: ClaimCheck, status: BatchStatus) -> tuple:
    return (
        claim.batch_id,
        claim.tenant_id,
        claim.account_id,
        claim.request_id,
        claim.sha256,
        status,
        claim.items,
        claim.readings,
        claim.bucket,
        claim.key,
        claim.size_bytes,
        claim.decompressed_bytes,
        claim.received_at,
    )


def _claim_parameters(claim: ClaimCheck) -> dict:
    return {
        "batch": claim.batch_id,
        "tenant": claim.tenant_id,
        "account": claim.account_id,
        "request": claim.request_id,
        "sha256": claim.sha256,
        "items": claim.items,
        "readings": claim.readings,
        "bucket": claim.bucket,
        "key": claim.key,
        "size": claim.size_bytes,
        "decompressed": claim.decompressed_bytes,
        "received": claim.received_at,
    }


# Every small batch runs these two (see easysmart.db.PreparedStatement). Opening: the claim's row, inserted only
# if the `tenant` CTE found the tenant, or counted as one more attempt.
_OPEN_FOR_LOAD = PreparedStatement(
    "ledger_open_for_load",
    "WITH tenant AS (SELECT timezone FROM tenants WHERE id = %(tenant)s),"
    f" opened AS ({_INSERT_INTO_BATCHES}"
    "  SELECT %(batch)s, %(tenant)s, %(account)s, %(request)s, %(sha256)s,"
    f" '{BatchStatus.PROCESSING.value}', %(items)s, %(readings)s, %(bucket)s, %(key)s, %(size)s, %(decompressed)s,"
    "  %(received)s FROM tenant"
    " ON CONFLICT (id) DO UPDATE SET"
    f" status = CASE WHEN batches.status = '{BatchStatus.DONE.value}' THEN batches.status"
    f" ELSE '{BatchStatus.PROCESSING.value}' END,"
    " attempts = batches.attempts + 1 RETURNING status)"
    " SELECT tenant.timezone, opened.status FROM tenant, opened",
    tenant="uuid",
    batch="uuid",
    account="uuid",
    request="text",
    sha256="text",
    items="integer",
    readings="integer",
    bucket="text",
    key="text",
    size="bigint",
    decompressed="bigint",
    received="timestamptz",
)
_MARK_DONE = PreparedStatement(
    "ledger_mark_done",
    f"UPDATE batches SET status = '{BatchStatus.DONE.value}', received_items = %(items)s, readings = %(readings)s,"
    " stored = %(stored)s, duplicate = %(duplicate)s, skipped = %(skipped)s, rejected = %(rejected)s,"
    " reasons = %(reasons)s, reason_counts = %(reason_counts)s, processed_at = clock_timestamp()"
    " WHERE id = %(batch)s",
    items="integer",
    readings="integer",
    stored="integer",
    duplicate="integer",
    skipped="integer",
    rejected="integer",
    reasons="jsonb",
    reason_counts="jsonb",
    batch="uuid",
)


def _row_of(cursor: psycopg2.extensions.cursor, batch_id: str) -> tuple:
    row = cursor.fetchone()
    if row is None:  # process opens a batch before anything else reads it
        raise EasySmartError(f"batch {batch_id} has no row in the ledger")
    return row


def _record(row: tuple) -> BatchRecord:
    # The row's columns are _RECORD_COLUMNS, in BatchRecord's order.
    batch_id, status, *rest = row
    return BatchRecord(str(batch_id), BatchStatus(status), *rest)


class BatchLedger:
    """The `batches` table. Methods taking a cursor run on the caller's transaction; the others
    run in a transaction of their own and raise UnavailableError when the database is down."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def find_identical(self, account_id: str, sha256: str, since: datetime) -> BatchRecord | None:
        """The first batch of this account, received after `since`, with the same blob and not failed."""
        with self.db.transaction() as cursor:
            cursor.execute(
                f"SELECT {_RECORD_COLUMNS} FROM batches"
                " WHERE account_id = %s AND sha256 = %s AND received_at > %s AND status <> %s"
                " ORDER BY received_at LIMIT 1",
                (account_id, sha256, since, BatchStatus.FAILED),
            )
            row = cursor.fetchone()
        return None if row is None else _record(row)

    def record_accepted(self, claim: ClaimCheck) -> None:
        with self.db.transaction() as cursor:
            cursor.execute(f"{_INSERT_CLAIM} DO NOTHING", _claim_row(claim, BatchStatus.ACCEPTED))

    def record_accepted_many(self, claims: list[ClaimCheck]) -> None:
        """One statement for many accepted batches; a row process wrote already is left as it is."""
        with self.db.transaction() as cursor:
            psycopg2.extras.execute_values(
                cursor,
                _INSERT_CLAIMS,
                [_claim_row(claim, BatchStatus.ACCEPTED) for claim in claims],
                page_size=len(claims),
            )

    def open_for_processing(self, cursor: psycopg2.extensions.cursor, claim: ClaimCheck) -> BatchStatus:
        """Records the batch if ingest did not, counts the attempt; the status it has now
        (processing, or done when an earlier attempt finished it)."""
        cursor.execute(
            f"{_INSERT_CLAIM} DO UPDATE SET"
            " status = CASE WHEN batches.status = %s THEN batches.status ELSE %s END,"
            " attempts = batches.attempts + 1 RETURNING status",
            (*_claim_row(claim, BatchStatus.PROCESSING), BatchStatus.DONE, BatchStatus.PROCESSING),
        )
        return BatchStatus(_row_of(cursor, claim.batch_id)[0])

    def open_for_load(self, cursor: psycopg2.extensions.cursor, claim: ClaimCheck) -> tuple[str, BatchStatus] | None:
        """open_for_processing and lock_for_load in one statement on the caller's transaction, which the batch is
        loaded in (the row stays locked until it ends); with the tenant's time zone. None when the tenant does not
        exist (nothing is recorded). The status `processing` is seen by others only if the transaction commits
        without marking the batch done: a small batch is loaded in milliseconds."""
        cursor.execute(prepared(cursor, _OPEN_FOR_LOAD), _claim_parameters(claim))
        row = cursor.fetchone()
        return None if row is None else (row[0], BatchStatus(row[1]))

    def lock_for_load(self, cursor: psycopg2.extensions.cursor, batch_id: str) -> BatchStatus:
        """Locks the row until the caller's transaction ends, so one attempt at a time loads
        the batch; the status it has (done when a concurrent attempt finished it first)."""
        cursor.execute("SELECT status FROM batches WHERE id = %s FOR UPDATE", (batch_id,))
        return BatchStatus(_row_of(cursor, batch_id)[0])

    def mark_done(
        self,
        cursor: psycopg2.extensions.cursor,
        batch_id: str,
        items: int,
        counts: BatchCounts,
        reasons: list[dict],
        reason_counts: dict[str, int],
    ) -> None:
        cursor.execute(
            prepared(cursor, _MARK_DONE),
            {
                "items": items,
                "readings": counts.readings,
                "stored": counts.stored,
                "duplicate": counts.duplicate,
                "skipped": counts.skipped,
                "rejected": counts.rejected,
                "reasons": psycopg2.extras.Json(reasons),
                "reason_counts": psycopg2.extras.Json(reason_counts),
                "batch": batch_id,
            },
        )

    def counts_of(self, batch_id: str) -> BatchCounts:
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT readings, stored, duplicate, skipped, rejected FROM batches WHERE id = %s", (batch_id,)
            )
            readings, stored, duplicate, skipped, rejected = _row_of(cursor, batch_id)
        return BatchCounts(readings or 0, stored, duplicate, skipped, rejected)

    def mark_failed(self, batch_id: str, reason: str) -> None:
        """Failed for good, with the reason; a batch already done stays done."""
        with self.db.transaction() as cursor:
            cursor.execute(
                "UPDATE batches SET status = %s, reasons = %s, reason_counts = %s, processed_at = clock_timestamp()"
                " WHERE id = %s AND status <> %s",
                (
                    BatchStatus.FAILED,
                    psycopg2.extras.Json([{"path": "$", "reason": reason, "outcome": "failed"}]),
                    psycopg2.extras.Json({reason: 1}),
                    batch_id,
                    BatchStatus.DONE,
                ),
            )

    def count_unexpected_failure(self, batch_id: str) -> int:
        """Counts one unexpected failure of the batch (an outage is not one); how many it has had."""
        with self.db.transaction() as cursor:
            cursor.execute(
                "UPDATE batches SET unexpected_failures = unexpected_failures + 1 WHERE id = %s"
                " RETURNING unexpected_failures",
                (batch_id,),
            )
            row = cursor.fetchone()
        return 0 if row is None else row[0]

    def status_for_tenant(self, tenant_id: str, batch_id: str) -> BatchRecord | None:
        with self.db.transaction() as cursor:
            cursor.execute(
                f"SELECT {_RECORD_COLUMNS} FROM batches WHERE id = %s AND tenant_id = %s", (batch_id, tenant_id)
            )
            row = cursor.fetchone()
        return None if row is None else _record(row)

    def done_among(self, batch_ids: list[str]) -> set[str]:
        """Those of the batches that are done (unknown ids are not)."""
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT id::text FROM batches WHERE id = ANY(%s::uuid[]) AND status = %s", (batch_ids, BatchStatus.DONE)
            )
            return {batch_id for (batch_id,) in cursor.fetchall()}

    def prune(self, received_before: datetime) -> int:
        """Deletes the rows of batches received before the time; how many."""
        with self.db.transaction() as cursor:
            cursor.execute("DELETE FROM batches WHERE received_at < %s", (received_before,))
            return cursor.rowcount
