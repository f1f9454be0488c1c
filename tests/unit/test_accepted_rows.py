"""Ingest's accepted-batch ledger rows, written by a background thread many per statement."""

from __future__ import annotations

import psycopg2.errors
import pytest
from support.claims import TEST_KEYRING

from easysmart.acceptedbatches import AcceptedRows
from easysmart.errors import UnavailableError
from easysmart.events import ClaimCheck


def claim(number: int) -> ClaimCheck:
    return TEST_KEYRING.sign(
        ClaimCheck(
            batch_id=f"00000000-0000-4000-8000-{number:012d}",
            tenant_id="00000000-0000-4000-8000-000000000001",
            account_id="00000000-0000-4000-8000-000000000002",
            device="device",
            bucket="bucket",
            key=f"raw/{number}.json.gz",
            size_bytes=10,
            decompressed_bytes=100,
            sha256="0" * 64,
            content_encoding="gzip",
            items=1,
            readings=40,
            request_id="request",
            received_at="2026-12-02T03:00:00+00:00",
        )
    )


class RecordingLedger:
    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.statements: list[list[str]] = []

    def record_accepted_many(self, claims: list[ClaimCheck]) -> None:
        self.statements.append([c.batch_id for c in claims])
        if self.fail is not None:
            raise self.fail

    def record_accepted(self, claim: ClaimCheck) -> None:
        self.statements.append([claim.batch_id])
        if claim.batch_id == REFUSED.batch_id:
            raise psycopg2.errors.ForeignKeyViolation("its tenant is gone")


REFUSED = claim(1)


def test_what_is_queued_is_written_in_one_statement_once():
    ledger = RecordingLedger()
    rows = AcceptedRows(ledger, interval_s=3600)  # type: ignore[arg-type]
    for number in range(3):
        rows.add(claim(number))

    assert rows.flush() == 3
    assert rows.flush() == 0
    assert ledger.statements == [[claim(n).batch_id for n in range(3)]]


@pytest.mark.parametrize(
    "error", [UnavailableError("database unavailable"), psycopg2.errors.DeadlockDetected("deadlock detected")]
)
def test_rows_the_database_refuses_are_dropped_for_process_to_write(error):
    ledger = RecordingLedger(fail=error)
    rows = AcceptedRows(ledger, interval_s=3600)  # type: ignore[arg-type]
    rows.add(claim(1))

    assert rows.flush() == 0
    assert rows.flush() == 0
    assert len(ledger.statements) == 1


def test_a_row_the_database_refuses_costs_the_others_in_its_statement_nothing():
    ledger = RecordingLedger(fail=psycopg2.errors.ForeignKeyViolation("a tenant is gone"))
    rows = AcceptedRows(ledger, interval_s=3600)  # type: ignore[arg-type]
    for number in range(3):
        rows.add(claim(number))

    assert rows.flush() == 2
    assert ledger.statements == [[claim(n).batch_id for n in range(3)]] + [[claim(n).batch_id] for n in range(3)]


def test_the_queue_keeps_the_newest_rows_when_full():
    ledger = RecordingLedger()
    rows = AcceptedRows(ledger, interval_s=3600, max_pending=2)  # type: ignore[arg-type]
    for number in range(3):
        rows.add(claim(number))

    rows.flush()
    assert ledger.statements == [[claim(1).batch_id, claim(2).batch_id]]
