"""Blob expiry against the real object store (S3Proxy) and ledger: a batch that did not finish keeps its blob as
long as the dead-letter topic keeps its claim check, so a replay after the fix finds it."""

from __future__ import annotations

import gzip
import hashlib
import io
import uuid
from datetime import date, datetime, time, timedelta, timezone

import botocore.exceptions
import orjson
import pytest
from support.claims import TEST_KEYRING, signed
from support.samples import recent_sample

from easysmart.claimsig import blob_metadata
from easysmart.config import ProcessSettings, RetentionSettings, UploadLimits
from easysmart.copywriter import CopyWriter
from easysmart.events import ClaimCheck
from easysmart.ledger import BatchLedger
from easysmart.process import BatchFailedError, BatchProcessor
from easysmart.retention import BlobExpiry

RETENTION = RetentionSettings(blob_retention_days=7, dlq_retention_days=30)


def upload(blobs, account, day: date) -> ClaimCheck:
    """A blob where ingest puts one received on `day`, and its claim check."""
    body = gzip.compress(orjson.dumps(recent_sample("ha-bulk-small.json")))
    batch_id = str(uuid.uuid4())
    key = f"raw/{day:%Y/%m/%d}/{account.tenant_id}/{batch_id}.json.gz"
    received_at = datetime.combine(day, time(12), timezone.utc).isoformat()
    claim = ClaimCheck(
        batch_id,
        account.tenant_id,
        account.account_id,
        account.username,
        blobs.bucket,
        key,
        len(body),
        None,
        hashlib.sha256(body).hexdigest(),
        "gzip",
        None,
        None,
        "test",
        received_at,
    )
    blobs.put(key, io.BytesIO(body), blob_metadata(claim))
    return signed(claim)


def stored(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except botocore.exceptions.ClientError:
        return False


class BuggyWriter(CopyWriter):
    def write(self, rows):
        raise RuntimeError("an injected bug")


def test_a_failed_batch_s_blob_outlives_the_blob_retention_until_the_dead_letter_retention(
    database, blobs, s3_client, make_account
):
    ledger = BatchLedger(database)
    # A day of its own long ago: expiry at the times below touches no blob of the running stack.
    day = date(2001, 1, 1) + timedelta(days=uuid.uuid4().int % 2000)
    fixed = BatchProcessor(
        ProcessSettings(), UploadLimits(), RetentionSettings(), database, blobs, keyring=TEST_KEYRING
    )
    buggy = BatchProcessor(
        ProcessSettings(),
        UploadLimits(),
        RetentionSettings(),
        database,
        blobs,
        writer_factory=BuggyWriter,
        max_unexpected_failures=1,
        keyring=TEST_KEYRING,
    )
    done, failed, unfinished = (upload(blobs, make_account(), day) for _ in range(3))
    assert fixed.process(done).status == "done"
    with pytest.raises(BatchFailedError):  # 422: the source dead-letters its claim check
        buggy.process(failed)
    ledger.record_accepted(unfinished)  # the source dead-lettered it after its retries, before any attempt ended
    expiry = BlobExpiry(s3_client, blobs.bucket)

    report = expiry.expire(RETENTION, datetime.combine(day + timedelta(days=10), time(3), timezone.utc), ledger)

    assert day.isoformat() in report["blob_days_kept_for_replay"]
    assert not stored(s3_client, blobs.bucket, done.key)
    assert stored(s3_client, blobs.bucket, failed.key) and stored(s3_client, blobs.bucket, unfinished.key)
    assert fixed.process(failed).stored == 40  # what `esm dlq replay` after the fix leads to

    report = expiry.expire(RETENTION, datetime.combine(day + timedelta(days=31), time(3), timezone.utc), ledger)

    assert day.isoformat() in report["blob_days_expired"]
    assert not stored(s3_client, blobs.bucket, failed.key) and not stored(s3_client, blobs.bucket, unfinished.key)
