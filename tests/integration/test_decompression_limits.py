"""Bounded decompression through ingest and process in-process, with the real object store, PostgreSQL and Redis:
what lies beyond ingest's window fails the batch for good, and process charges the device's budget."""

from __future__ import annotations

import gzip
import io
import json
import time
import uuid

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from support.claims import TEST_KEYRING
from support.fakes import FakeBlobStore, FakeLedger, FakePublisher
from support.samples import client_backlog

from easysmart.config import ProcessSettings, RateLimits, RetentionSettings, UploadLimits
from easysmart.errors import RateLimitedError
from easysmart.identity import Principal
from easysmart.ingest import IngestService, UploadRequest
from easysmart.process import BatchFailedError, BatchProcessor
from easysmart.ratelimit import DecompressionBudget, DeferredCharges, RateLimiter

KiB, MiB = 1024, 1024 * 1024
# A small window keeps the uploads small; past it, only process sees the upload.
LIMITS = UploadLimits(ingest_sync_window_bytes=256 * KiB)


def backlog_text(polls: int) -> bytes:
    return json.dumps(client_backlog(polls)).encode()


def upload(service: IngestService, principal: Principal, body: bytes):
    return service.upload(UploadRequest(principal, "req-1", "gzip", len(body), io.BytesIO(body)))


def principal_of(account) -> Principal:
    return Principal(
        account_id=account.account_id, tenant_id=account.tenant_id, kind="device", username=account.username
    )


@pytest.fixture
def budget(redis_client):
    return DecompressionBudget(redis_client, LIMITS.ingest_device_decompressed_bytes_per_hour)


@pytest.fixture
def pipeline(database, blobs, budget):
    """(ingest, its publisher, process) as the functions build them, with a publisher that keeps the claim checks."""
    publisher = FakePublisher([])
    ingest = IngestService(
        LIMITS,
        RateLimits(),
        RetentionSettings(),
        database,
        blobs,
        publisher,
        limiter=None,
        budget=budget,
        keyring=TEST_KEYRING,
    )
    process = BatchProcessor(
        ProcessSettings(), LIMITS, RetentionSettings(), database, blobs, budget=budget, keyring=TEST_KEYRING
    )
    return ingest, publisher, process


def batch_row(database, batch_id: str) -> tuple:
    with database.transaction() as cursor:
        cursor.execute(
            "SELECT status, unexpected_failures, reasons->0->>'reason', stored FROM batches WHERE id = %s", (batch_id,)
        )
        return cursor.fetchone()


def test_a_whitespace_bomb_past_ingest_s_window_fails_its_batch_for_good(pipeline, database, make_account):
    ingest, publisher, process = pipeline
    readings = backlog_text(200)  # 800 readings, ~480 kB: past the window
    # Then 1 GiB of spaces before the list closes, as 1,024 gzip members of 1 MiB each (~1 KiB apiece).
    body = gzip.compress(readings[:-3]) + gzip.compress(b" " * MiB) * 1024 + gzip.compress(readings[-3:])
    accepted = upload(ingest, principal_of(make_account()), body)
    assert (accepted.status, accepted.readings) == ("accepted", None)

    started = time.process_time()
    with pytest.raises(BatchFailedError) as failed:
        process.process(publisher.claims[0])
    cpu_s = time.process_time() - started

    assert failed.value.status == 422  # permanent: dead-lettered, never retried as an outage
    status, unexpected, reason, stored = batch_row(database, accepted.batch_id)
    assert (status, unexpected, stored) == ("failed", 0, 0)
    assert f"more than 4096 whitespace bytes at byte {len(readings) - 3}" in reason
    assert cpu_s < 5.0  # inflating and parsing the whole GiB would take far longer


def test_a_ratio_bomb_past_ingest_s_window_fails_its_batch(pipeline, database, make_account):
    ingest, publisher, process = pipeline
    readings = backlog_text(200)
    # No whitespace at all: readings each with a 3 MiB string of one character (~1000:1), each under the
    # parser's 4 MiB bound on a value, so only the ratio stops them.
    huge = b'{"sensor_uuid": "' + b"e" * (3 * MiB) + b'"}'
    bomb = readings[:-3] + b"," + b",".join([huge] * 8) + readings[-3:]
    accepted = upload(ingest, principal_of(make_account()), gzip.compress(bomb, 9))
    assert accepted.readings is None

    with pytest.raises(BatchFailedError):
        process.process(publisher.claims[0])
    status, unexpected, reason, _ = batch_row(database, accepted.batch_id)
    assert (status, unexpected) == ("failed", 0)
    assert "decompresses more than 500:1" in reason


def test_process_charges_the_rest_so_the_device_s_next_upload_is_refused(database, blobs, redis_client, make_account):
    text = backlog_text(1000)  # ~2.4 MB decompressed, 4,000 readings
    budget = DecompressionBudget(redis_client, bytes_per_hour=MiB)
    publisher = FakePublisher([])
    ingest = IngestService(
        LIMITS,
        RateLimits(),
        RetentionSettings(),
        database,
        blobs,
        publisher,
        limiter=None,
        budget=budget,
        keyring=TEST_KEYRING,
    )
    process = BatchProcessor(
        ProcessSettings(), LIMITS, RetentionSettings(), database, blobs, budget=budget, keyring=TEST_KEYRING
    )
    device, neighbour = principal_of(make_account()), principal_of(make_account())

    accepted = upload(ingest, device, gzip.compress(text))  # ingest charges its window only: within the budget
    assert process.process(publisher.claims[0]).stored == 4000  # and process the other ~2 MB

    with pytest.raises(RateLimitedError) as refused:
        upload(ingest, device, gzip.compress(backlog_text(10)))
    assert refused.value.status == 429
    # ~1.3 MB in debt at 1 MiB an hour: the wait is most of an hour, never more than one.
    assert 1800 < refused.value.retry_after_s <= 3600
    assert upload(ingest, neighbour, gzip.compress(backlog_text(10))).status == "accepted"
    assert batch_row(database, accepted.batch_id)[0] == "done"


def test_a_device_past_its_budget_gets_429_with_retry_after_and_another_device_does_not(redis_client):
    budget = DecompressionBudget(redis_client, bytes_per_hour=512 * KiB)
    ingest = IngestService(
        UploadLimits(), RateLimits(), RetentionSettings(), None, FakeBlobStore([]), FakePublisher([]),
        limiter=None, ledger=FakeLedger([]), budget=budget, keyring=TEST_KEYRING,
    )  # fmt: skip
    device, other = (Principal(account_id=str(uuid.uuid4()), tenant_id="t", kind="device") for _ in range(2))
    body = gzip.compress(backlog_text(300))  # ~730 kB decompressed: one upload spends the budget

    assert upload(ingest, device, body).status == "accepted"
    with pytest.raises(RateLimitedError) as refused:
        upload(ingest, device, body)
    assert refused.value.retry_after_s >= 1 and "decompressed more than 524288 bytes" in refused.value.message
    assert upload(ingest, other, body).status == "accepted"


def test_without_redis_the_budget_lets_uploads_through():
    unreachable = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    budget = DecompressionBudget(unreachable, bytes_per_hour=1)
    budget.charge("a-1", 10 * MiB)
    budget.check("a-1")  # fails open, as the rate limiter does


def admitting_ingest(database, redis_client, budget: DecompressionBudget, **limits: int) -> IngestService:
    return IngestService(
        UploadLimits(), RateLimits(**limits), RetentionSettings(), database, FakeBlobStore([]), FakePublisher([]),
        limiter=RateLimiter(redis_client), ledger=FakeLedger([]), budget=budget, keyring=TEST_KEYRING,
    )  # fmt: skip


def test_a_spent_budget_refuses_at_admission_after_the_account_and_the_rate_limits(
    database, redis_client, make_account
):
    budget = DecompressionBudget(redis_client, bytes_per_hour=MiB)
    spent, fresh = make_account("device"), make_account("device")
    budget.charge(spent.account_id, 2 * MiB)

    ingest = admitting_ingest(database, redis_client, budget)
    with pytest.raises(RateLimitedError, match="decompressed more than 1048576 bytes") as refused:
        ingest.rate_limit(principal_of(spent), "10.30.0.1")
    assert 1800 < refused.value.retry_after_s <= 3600
    assert ingest.rate_limit(principal_of(fresh), "10.30.0.1")["RateLimit-Limit"]

    exhausted = admitting_ingest(database, redis_client, budget, ratelimit_device_per_minute=1)
    with pytest.raises(RateLimitedError, match="decompressed more than"):
        exhausted.rate_limit(principal_of(spent), "10.30.0.2")  # takes the minute's one token
    with pytest.raises(RateLimitedError, match="per device"):  # the rate limit answers before the budget
        exhausted.rate_limit(principal_of(spent), "10.30.0.2")


def test_an_admitted_upload_is_not_checked_again_and_its_charge_lands_off_the_request_path(
    database, redis_client, make_account
):
    budget = DecompressionBudget(redis_client, bytes_per_hour=512 * KiB)
    charges = DeferredCharges(budget, interval_s=3600)  # flushed by hand below
    ingest = IngestService(
        LIMITS, RateLimits(), RetentionSettings(), database, FakeBlobStore([]), FakePublisher([]),
        limiter=RateLimiter(redis_client), ledger=FakeLedger([]), budget=budget, keyring=TEST_KEYRING,
        deferred_charges=charges,
    )  # fmt: skip
    device = principal_of(make_account("device"))
    body = gzip.compress(backlog_text(300))  # ~730 kB decompressed: one upload spends the budget

    ingest.rate_limit(device, "10.30.0.3")
    admitted = UploadRequest(device, "req-1", "gzip", len(body), io.BytesIO(body), budget_checked=True)
    assert ingest.upload(admitted).status == "accepted"
    assert budget.apply(device.account_id, 0) == pytest.approx(512 * KiB, rel=0.01)  # not charged yet

    assert charges.flush() == 1
    with pytest.raises(RateLimitedError, match="decompressed more than"):
        ingest.rate_limit(device, "10.30.0.3")


def test_deferred_charges_sum_per_device_and_survive_a_redis_that_forgot_the_script(redis_client):
    budget = DecompressionBudget(redis_client, bytes_per_hour=MiB)
    charges = DeferredCharges(budget, interval_s=3600)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    charges.charge(first, 100 * KiB)
    charges.charge(first, 200 * KiB)
    charges.charge(second, 10 * KiB)
    redis_client.script_flush()

    assert charges.flush() == 2
    assert budget.apply(first, 0) == pytest.approx(MiB - 300 * KiB, abs=KiB)
    assert budget.apply(second, 0) == pytest.approx(MiB - 10 * KiB, abs=KiB)
    assert charges.flush() == 0


def test_deferred_charges_are_dropped_without_redis_and_the_next_ones_still_land(redis_client):
    unreachable = DecompressionBudget(redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0)), MiB)
    charges = DeferredCharges(unreachable, interval_s=3600)
    charges.charge("a-1", KiB)
    assert charges.flush() == 0  # logged and dropped; no error reaches the caller
    charges.budget = DecompressionBudget(redis_client, MiB)
    account = str(uuid.uuid4())
    charges.charge(account, KiB)
    assert charges.flush() == 1
