"""BatchProcessor in-process, fed by IngestService, with fakes for the object store, the publisher,
the ledger, the database and the COPY writer."""

import dataclasses
import gzip
import hashlib
import io
import json
from datetime import datetime, timezone

import pytest
from support.claims import CLAIM, TEST_KEYRING, signed
from support.fakes import FakeBlobStore, FakeCopyWriter, FakeDatabase, FakeLedger, FakePublisher
from support.samples import FIXTURES

from easysmart import process
from easysmart.claimsig import ClaimNotAuthenticError, blob_metadata
from easysmart.config import ProcessSettings, RateLimits, RetentionSettings, UploadLimits
from easysmart.errors import UnavailableError
from easysmart.events import ClaimCheck
from easysmart.identity import Principal
from easysmart.ingest import IngestService, UploadRequest
from easysmart.ledger import BatchStatus
from easysmart.process import BatchFailedError, BatchProcessor

DEVICE = Principal(account_id=CLAIM.account_id, tenant_id=CLAIM.tenant_id, kind="device", username="freezer-hub")
# The sample's readings were taken on 2026-11-20 between 08:00 and 08:09, São Paulo time.
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


class Stack:
    """Ingest and process sharing one journal, object store, publisher and ledger."""

    def __init__(self, **settings: object) -> None:
        self.journal: list = []
        self.blobs = FakeBlobStore(self.journal)
        self.publisher = FakePublisher(self.journal)
        self.ledger = FakeLedger(self.journal)
        self.db = FakeDatabase(self.journal, {DEVICE.tenant_id: "America/Sao_Paulo"})
        self.writers: list[FakeCopyWriter] = []
        self.ingest = IngestService(
            UploadLimits(),
            RateLimits(),
            RetentionSettings(),
            None,
            self.blobs,
            self.publisher,
            limiter=None,
            ledger=self.ledger,
            keyring=TEST_KEYRING,
        )
        self.processor = BatchProcessor(
            ProcessSettings(**settings),
            UploadLimits(),
            RetentionSettings(),
            self.db,
            self.blobs,
            ledger=self.ledger,
            writer_factory=self._new_writer,
            keyring=TEST_KEYRING,
        )

    def _new_writer(self, cursor, tenant_id: str, *, threaded: bool = True) -> FakeCopyWriter:
        self.writers.append(FakeCopyWriter(cursor, tenant_id, threaded=threaded))
        return self.writers[-1]

    def upload(self, text: bytes) -> ClaimCheck:
        body = gzip.compress(text)
        batch_id = self.ingest.upload(UploadRequest(DEVICE, "req-1", "gzip", len(body), io.BytesIO(body))).batch_id
        return next(claim for claim in self.publisher.claims if claim.batch_id == batch_id)


@pytest.fixture
def stack() -> Stack:
    return Stack()


@pytest.mark.parametrize(
    "settings",
    [{}, {"process_parse_in_one_go_bytes": 0, "process_chunk_readings": 7}],
    ids=["parsed in one go", "streamed in chunks"],
)
def test_an_accepted_batch_goes_processing_then_done_with_its_counts(settings):
    stack = Stack(**settings)
    claim = stack.upload((FIXTURES / "ha-bulk-small.json").read_bytes())
    result = stack.processor.process(claim, now=NOW)
    assert (result.status, result.stored, result.readings, result.redelivery) == (BatchStatus.DONE, 40, 40, False)
    assert stack.ledger.history[claim.batch_id] == [BatchStatus.ACCEPTED, BatchStatus.PROCESSING, BatchStatus.DONE]
    assert stack.ledger.counts_of(claim.batch_id).stored == 40
    assert len(stack.writers[0].rows) == 40


def test_the_batch_is_marked_done_on_the_transaction_that_copied_its_readings(stack):
    claim = stack.upload((FIXTURES / "ha-bulk-small.json").read_bytes())
    stack.processor.process(claim, now=NOW)
    (writer,) = stack.writers
    # Through the closing statements sent together on that cursor (process.DeferredStatements).
    assert stack.ledger.done_on[claim.batch_id].cursor is writer.cursor
    marked_done = stack.journal.index(("ledger", claim.batch_id, BatchStatus.DONE))
    assert stack.journal[marked_done + 1] == ("commit", writer.cursor.connection)


def test_a_small_upload_is_written_on_the_parsing_thread_a_large_one_on_a_writer_thread(stack):
    small = (FIXTURES / "ha-bulk-small.json").read_bytes()
    items = json.loads(small)
    items[0]["sensor"] *= 2 * (1 + process.INLINE_WRITE_MAX_BYTES // len(small))  # resends: counted as readings
    for text in (small, json.dumps(items).encode()):
        assert stack.processor.process(stack.upload(text), now=NOW).status == BatchStatus.DONE
    assert [writer.threaded for writer in stack.writers] == [False, True]


def test_a_redelivered_claim_check_is_answered_from_the_ledger_without_reading_the_blob(stack):
    claim = stack.upload((FIXTURES / "ha-bulk-small.json").read_bytes())
    stack.processor.process(claim, now=NOW)
    again = stack.processor.process(claim, now=NOW)
    assert (again.redelivery, again.stored, again.readings) == (True, 40, 40)
    assert stack.blobs.reads == 1
    assert len(stack.writers) == 1
    assert stack.ledger.history[claim.batch_id][-1] == BatchStatus.DONE


@pytest.mark.parametrize(
    "spoil, reason",
    [
        (lambda claim: signed(dataclasses.replace(claim, key="raw/missing/blob.json.gz")), "does not exist"),
        (lambda claim: signed(dataclasses.replace(claim, sha256="0" * 64)), "sha256"),
    ],
)
def test_a_permanently_bad_batch_is_marked_failed_with_the_reason(stack, spoil, reason):
    claim = spoil(stack.upload((FIXTURES / "ha-bulk-small.json").read_bytes()))
    with pytest.raises(BatchFailedError, match=reason):
        stack.processor.process(claim, now=NOW)
    assert stack.ledger.history[claim.batch_id] == [BatchStatus.ACCEPTED, BatchStatus.PROCESSING, BatchStatus.FAILED]
    assert reason in stack.ledger.rows[claim.batch_id]["reasons"][0]["reason"]
    assert all(("commit", writer.cursor.connection) not in stack.journal for writer in stack.writers)


def test_a_batch_ingest_could_not_record_is_recorded_by_process_and_failed_when_not_json(stack):
    text = b'[{"equip_uuid": "x", "sensor": [1,'
    body = gzip.compress(text)
    claim = signed(
        dataclasses.replace(
            CLAIM,
            key="raw/test/bad.json.gz",
            size_bytes=len(body),
            decompressed_bytes=len(text),
            sha256=hashlib.sha256(body).hexdigest(),
        )
    )
    stack.blobs.put("raw/test/bad.json.gz", io.BytesIO(body), blob_metadata(claim))
    with pytest.raises(BatchFailedError, match="JSON"):
        stack.processor.process(claim, now=NOW)
    assert stack.ledger.history[claim.batch_id] == [BatchStatus.PROCESSING, BatchStatus.FAILED]


def test_an_unreachable_object_store_leaves_the_batch_processing_for_a_retry(stack):
    claim = stack.upload((FIXTURES / "ha-bulk-small.json").read_bytes())

    def unreachable(key: str, expected_metadata=None):
        raise UnavailableError("the object store is unavailable")

    stack.blobs.iter_chunks = unreachable
    with pytest.raises(UnavailableError):
        stack.processor.process(claim, now=NOW)
    assert stack.ledger.status(claim.batch_id) == BatchStatus.PROCESSING


OTHER_TENANT = "5a0f3c1e-0000-4000-8000-0000000000a2"


@pytest.mark.parametrize(
    "forge, reason",
    [
        (lambda claim: dataclasses.replace(claim, signing_key_id=None, signature=None), "not signed"),
        (lambda claim: dataclasses.replace(claim, signing_key_id="attacker"), "unknown key id"),
        (lambda claim: dataclasses.replace(claim, tenant_id=OTHER_TENANT), "signature does not verify"),
        (lambda claim: dataclasses.replace(claim, key="raw/elsewhere.json.gz"), "signature does not verify"),
    ],
    ids=["unsigned", "unknown key", "tenant changed", "blob key changed"],
)
def test_a_forged_or_tampered_claim_check_is_refused_before_anything_is_written(stack, forge, reason):
    claim = forge(stack.upload((FIXTURES / "ha-bulk-small.json").read_bytes()))
    stack.ledger.rows.pop(claim.batch_id)  # as if only the forged claim check existed
    journal_before = list(stack.journal)

    with pytest.raises(ClaimNotAuthenticError, match=reason) as refused:
        stack.processor.process(claim, now=NOW)

    assert refused.value.status == 422
    assert claim.batch_id not in stack.ledger.rows
    assert (stack.blobs.reads, stack.writers, stack.journal) == (0, [], journal_before)


def test_a_signed_claim_check_naming_another_tenants_blob_fails_and_stores_nothing(stack):
    # The claim is authentic (ingest signed it), but its blob's metadata names another tenant.
    victim_blob = "raw/other-tenant/blob.json.gz"
    theirs = stack.upload((FIXTURES / "ha-bulk-small.json").read_bytes())
    stack.blobs.put(
        victim_blob,
        io.BytesIO(stack.blobs.blobs[theirs.key]),
        {**blob_metadata(theirs), "tenant-id": OTHER_TENANT},
    )
    claim = signed(dataclasses.replace(theirs, key=victim_blob))

    with pytest.raises(BatchFailedError, match=r"metadata \(tenant-id\) does not match") as failed:
        stack.processor.process(claim, now=NOW)

    assert failed.value.status == 422
    assert stack.ledger.status(claim.batch_id) == BatchStatus.FAILED
    assert all(writer.rows == [] for writer in stack.writers)
    assert all(("commit", writer.cursor.connection) not in stack.journal for writer in stack.writers)
