"""Ingest's accepted batches in Redis (no database round trip on the upload path), with process writing the ledger
row from the claim check: real Redis, PostgreSQL and object store, in-process."""

from __future__ import annotations

import gzip
import io
from datetime import datetime, timedelta

import pytest
import redis
from support.claims import TEST_KEYRING
from support.fakes import FakePublisher
from support.samples import FIXTURES

from easysmart.acceptedbatches import AcceptedBatches, AcceptedRows, batch_key, upload_key
from easysmart.alerting.store import processing_lag_s
from easysmart.config import ProcessSettings, RateLimits, RetentionSettings, UploadLimits
from easysmart.db import Database
from easysmart.errors import NotFoundError
from easysmart.identity import Principal
from easysmart.ingest import IngestService, UploadRequest, UploadResult
from easysmart.ledger import BatchLedger, BatchStatus
from easysmart.process import BatchProcessor

UPLOAD = (FIXTURES / "ha-bulk-small.json").read_bytes()
TTL_S = 7 * 86400


def principal_of(account) -> Principal:
    return Principal(
        account_id=account.account_id, tenant_id=account.tenant_id, kind="device", username=account.username
    )


def send(ingest: IngestService, principal: Principal, text: bytes = UPLOAD) -> UploadResult:
    body = gzip.compress(text, mtime=0)
    return ingest.upload(UploadRequest(principal, "req-1", "gzip", len(body), io.BytesIO(body)))


def ingest_with(database, blobs, publisher: FakePublisher, client: redis.Redis) -> IngestService:
    return IngestService(
        UploadLimits(),
        RateLimits(),
        RetentionSettings(),
        database,
        blobs,
        publisher,
        limiter=None,
        keyring=TEST_KEYRING,
        accepted=AcceptedBatches(client, TTL_S),
    )


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher([])


@pytest.fixture
def ingest(database, blobs, publisher, redis_client) -> IngestService:
    return ingest_with(database, blobs, publisher, redis_client)


@pytest.fixture
def process(database, blobs) -> BatchProcessor:
    return BatchProcessor(ProcessSettings(), UploadLimits(), RetentionSettings(), database, blobs, keyring=TEST_KEYRING)


def ledger_status(database: Database, batch_id: str) -> str | None:
    with database.transaction() as cursor:
        cursor.execute("SELECT status FROM batches WHERE id = %s", (batch_id,))
        row = cursor.fetchone()
    return None if row is None else row[0]


def test_an_accepted_batch_is_in_redis_only_until_process_records_it(
    ingest, publisher, process, database, redis_client, make_account
):
    device = principal_of(make_account())
    accepted = send(ingest, device)

    claim = publisher.claims[0]
    assert ledger_status(database, accepted.batch_id) is None
    assert 86400 - 60 < redis_client.ttl(batch_key(device.tenant_id, accepted.batch_id)) <= 86400
    assert redis_client.ttl(upload_key(device.tenant_id, device.account_id, claim.sha256)) > TTL_S - 60
    assert redis_client.get(upload_key(device.tenant_id, device.account_id, claim.sha256)) == accepted.batch_id.encode()
    status = ingest.batch_status(device, accepted.batch_id)
    assert (status["status"], status["received"], status["readings"]) == ("accepted", 1, 40)

    process.process(claim)
    status = ingest.batch_status(device, accepted.batch_id)
    assert (status["status"], status["stored"]) == ("done", 40)
    assert ledger_status(database, accepted.batch_id) == "done"


def test_a_resend_is_answered_with_the_first_batch_before_and_after_process(ingest, publisher, process, make_account):
    device = principal_of(make_account())
    first = send(ingest, device)

    before = send(ingest, device)
    assert before.body() == {**first.body(), "duplicate": True}
    process.process(publisher.claims[0])
    after = send(ingest, device)
    assert (after.batch_id, after.status, after.duplicate) == (first.batch_id, BatchStatus.DONE, True)
    assert len(publisher.claims) == 1


def test_a_resend_of_a_failed_batch_is_a_new_batch_and_its_resends_point_at_that(
    ingest, publisher, database, make_account
):
    device = principal_of(make_account())
    first = send(ingest, device)
    # As process leaves a batch that fails for good: its row, failed.
    ingest.ledger.record_accepted(publisher.claims[0])
    ingest.ledger.mark_failed(first.batch_id, "blob_missing")

    second = send(ingest, device)
    third = send(ingest, device)
    assert not second.duplicate and second.batch_id != first.batch_id
    assert (third.batch_id, third.duplicate) == (second.batch_id, True)


def test_the_records_are_the_tenant_s_own(ingest, make_account):
    device, other_tenant_device = principal_of(make_account()), principal_of(make_account())
    accepted = send(ingest, device)

    with pytest.raises(NotFoundError):
        ingest.batch_status(other_tenant_device, accepted.batch_id)
    # Another tenant's identical upload is a batch of its own.
    assert not send(ingest, other_tenant_device).duplicate


def test_with_redis_down_ingest_records_the_batch_and_finds_duplicates_in_the_ledger(
    database, blobs, publisher, make_account
):
    down = redis.Redis(port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    ingest = ingest_with(database, blobs, publisher, down)
    device = principal_of(make_account())

    first = send(ingest, device)
    assert ledger_status(database, first.batch_id) == "accepted"
    assert ingest.batch_status(device, first.batch_id)["status"] == "accepted"
    again = send(ingest, device)
    assert (again.batch_id, again.duplicate) == (first.batch_id, True)


def test_the_ledger_row_is_written_off_the_request_path_and_counts_in_the_processing_lag(
    database, blobs, publisher, redis_client, process, make_account
):
    rows = AcceptedRows(BatchLedger(database), interval_s=3600)  # flushed by the test
    ingest = ingest_with(database, blobs, publisher, redis_client)
    ingest.accepted_rows = rows
    device = principal_of(make_account())
    first = send(ingest, device)
    second = send(ingest, device, UPLOAD.replace(b"Freezer", b"Frigobar"))
    # Process opened the second before the row was written: its row stays as process left it.
    process.process(publisher.claims[1])

    assert rows.flush() == 2
    assert rows.flush() == 0
    assert (ledger_status(database, first.batch_id), ledger_status(database, second.batch_id)) == ("accepted", "done")
    received = datetime.fromisoformat(publisher.claims[0].received_at)
    with database.transaction() as cursor:
        lag = processing_lag_s(cursor, received + timedelta(minutes=10), received - timedelta(seconds=1))
    assert lag == pytest.approx(600, abs=1)


def test_an_accepted_row_of_a_tenant_deleted_since_costs_the_rows_written_with_it_nothing(
    database, blobs, publisher, redis_client, make_account
):
    rows = AcceptedRows(BatchLedger(database), interval_s=3600)  # flushed by the test
    ingest = ingest_with(database, blobs, publisher, redis_client)
    ingest.accepted_rows = rows
    kept = send(ingest, principal_of(make_account()))
    gone = send(ingest, principal_of(make_account()), UPLOAD.replace(b"Freezer", b"Frigobar"))
    # The second tenant goes before the rows are written (make_account's tenants have nothing else yet).
    gone_tenant = publisher.claims[1].tenant_id
    with database.transaction() as cursor:
        cursor.execute("DELETE FROM accounts WHERE tenant_id = %s", (gone_tenant,))
        cursor.execute("DELETE FROM tenants WHERE id = %s", (gone_tenant,))

    assert rows.flush() == 1
    assert (ledger_status(database, kept.batch_id), ledger_status(database, gone.batch_id)) == ("accepted", None)
