"""IngestService in-process, with fakes for the object store, the publisher and the ledger."""

import gzip
import io
import json
import time

import pytest
from support.claims import TEST_KEYRING
from support.fakes import FakeAcceptedBatches, FakeBlobStore, FakeLedger, FakePublisher
from support.samples import FIXTURES, client_backlog

from easysmart.claimsig import blob_metadata
from easysmart.compression import CompressionRatioError
from easysmart.config import RateLimits, RetentionSettings, UploadLimits
from easysmart.errors import NotFoundError, RateLimitedError, UnavailableError
from easysmart.identity import Principal
from easysmart.ingest import IngestService, UploadRequest, UploadResult
from easysmart.jsonstream import WhitespaceRunError
from easysmart.ledger import BatchStatus
from easysmart.messaging import PublishOutcomeUnknownError

DEVICE = Principal(account_id="a-1", tenant_id="t-1", kind="device", username="freezer-hub")
UPLOAD = (FIXTURES / "ha-bulk-small.json").read_bytes()
MiB = 1024 * 1024


class UnavailableLedger(FakeLedger):
    def find_identical(self, *args: object) -> None:
        raise UnavailableError("the database is unavailable")

    def record_accepted(self, *args: object) -> None:
        raise UnavailableError("the database is unavailable")

    def status_for_tenant(self, *args: object) -> None:
        raise UnavailableError("the database is unavailable")


@pytest.fixture
def journal() -> list:
    return []


@pytest.fixture
def blobs(journal):
    return FakeBlobStore(journal)


@pytest.fixture
def ledger(journal):
    return FakeLedger(journal)


def make_service(blobs, publisher, ledger, budget=None, accepted=None) -> IngestService:
    # The ledger is the only use ingest has for the database.
    return IngestService(
        UploadLimits(),
        RateLimits(),
        RetentionSettings(),
        None,
        blobs,
        publisher,
        limiter=None,
        ledger=ledger,
        keyring=TEST_KEYRING,
        budget=budget,
        accepted=accepted,
    )


def upload(service: IngestService, text: bytes = UPLOAD, gzip_mtime: int = 0) -> UploadResult:
    body = gzip.compress(text, mtime=gzip_mtime)
    return service.upload(UploadRequest(DEVICE, "req-1", "gzip", len(body), io.BytesIO(body)))


def test_the_blob_is_stored_before_its_claim_check_is_published_and_the_batch_recorded_after(journal, blobs, ledger):
    publisher = FakePublisher(journal)
    result = upload(make_service(blobs, publisher, ledger))
    (claim,) = publisher.claims
    assert journal == [
        ("blob stored", claim.key),
        ("claim published", result.batch_id),
        ("ledger", result.batch_id, BatchStatus.ACCEPTED),
    ]
    assert result.body() == {"batch_id": claim.batch_id, "status": "accepted", "received": 1, "readings": 40}
    assert gzip.decompress(blobs.blobs[claim.key]) == UPLOAD


def test_a_claim_check_kafka_did_not_take_leaves_no_blob_and_answers_503(journal, blobs, ledger):
    publisher = FakePublisher(journal, failure=UnavailableError("Kafka did not acknowledge the claim check"))
    with pytest.raises(UnavailableError) as caught:
        upload(make_service(blobs, publisher, ledger))
    assert caught.value.status == 503
    assert [step for step, _ in journal] == ["blob stored", "blob deleted"]
    assert blobs.blobs == {}
    assert ledger.rows == {}


def test_a_claim_check_kafka_may_have_taken_keeps_its_blob_and_answers_503(journal, blobs, ledger):
    publisher = FakePublisher(journal, failure=PublishOutcomeUnknownError("not acknowledged in time"))
    with pytest.raises(UnavailableError) as caught:
        upload(make_service(blobs, publisher, ledger))
    assert caught.value.status == 503
    assert [step for step, _ in journal] == ["blob stored"]
    assert len(blobs.blobs) == 1 and ledger.rows == {}


def test_an_identical_upload_compressed_again_points_at_the_first_batch(journal, blobs, ledger):
    publisher = FakePublisher(journal)
    service = make_service(blobs, publisher, ledger)
    first = upload(service, gzip_mtime=1)
    again = upload(service, gzip_mtime=2)
    assert again.body() == {**first.body(), "duplicate": True}
    assert len(publisher.claims) == len(blobs.blobs) == 1


def test_a_different_upload_is_a_new_batch(journal, blobs, ledger):
    service = make_service(blobs, FakePublisher(journal), ledger)
    first = upload(service)
    other = upload(service, UPLOAD.replace(b"-18.8", b"-18.9"))
    assert other.batch_id != first.batch_id
    assert not other.duplicate


def test_without_the_ledger_the_upload_is_still_stored_and_published(journal, blobs):
    publisher = FakePublisher(journal)
    result = upload(make_service(blobs, publisher, UnavailableLedger(journal)))
    assert result.status == BatchStatus.ACCEPTED
    assert [claim.batch_id for claim in publisher.claims] == [result.batch_id]
    assert len(blobs.blobs) == 1


def test_batch_status_answers_for_the_caller_s_tenant_only(journal, blobs, ledger):
    service = make_service(blobs, FakePublisher(journal), ledger)
    result = upload(service)
    status = service.batch_status(DEVICE, result.batch_id)
    assert (status["batch_id"], status["status"], status["readings"]) == (result.batch_id, "accepted", 40)
    stranger = Principal(account_id="a-2", tenant_id="t-2", kind="user")
    with pytest.raises(NotFoundError):
        service.batch_status(stranger, result.batch_id)


class UntouchableLedger(FakeLedger):
    def find_identical(self, *args: object) -> None:
        raise AssertionError("the upload path read the ledger")

    def record_accepted(self, *args: object) -> None:
        raise AssertionError("the upload path wrote the ledger")


def test_with_accepted_batches_in_redis_an_upload_and_its_resend_touch_no_database(journal, blobs):
    publisher, accepted = FakePublisher(journal), FakeAcceptedBatches(journal)
    service = make_service(blobs, publisher, UntouchableLedger(journal), accepted=accepted)
    first = upload(service, gzip_mtime=1)
    again = upload(service, gzip_mtime=2)
    assert journal == [
        ("blob stored", publisher.claims[0].key),
        ("claim published", first.batch_id),
        ("accepted batch recorded", first.batch_id),
    ]
    assert again.body() == {**first.body(), "duplicate": True}


def test_the_status_answers_from_redis_until_process_writes_the_row_and_from_the_row_after(journal, blobs, ledger):
    publisher = FakePublisher(journal)
    service = make_service(blobs, publisher, ledger, accepted=FakeAcceptedBatches(journal))
    result = upload(service)
    assert ledger.rows == {}
    assert service.batch_status(DEVICE, result.batch_id)["status"] == "accepted"
    ledger.open_for_processing(None, publisher.claims[0])
    assert service.batch_status(DEVICE, result.batch_id)["status"] == "processing"
    assert upload(service).status == BatchStatus.PROCESSING  # the resend's answer reads the row too
    stranger = Principal(account_id="a-2", tenant_id="t-2", kind="user")
    with pytest.raises(NotFoundError):
        service.batch_status(stranger, result.batch_id)


def test_with_the_database_down_the_status_and_the_duplicate_answer_come_from_redis(journal, blobs):
    service = make_service(
        blobs, FakePublisher(journal), UnavailableLedger(journal), accepted=FakeAcceptedBatches(journal)
    )
    first = upload(service)
    assert service.batch_status(DEVICE, first.batch_id)["status"] == "accepted"
    assert upload(service).body() == {**first.body(), "duplicate": True}


def test_a_resend_of_a_failed_batch_is_a_new_batch(journal, blobs, ledger):
    publisher = FakePublisher(journal)
    service = make_service(blobs, publisher, ledger, accepted=FakeAcceptedBatches(journal))
    first = upload(service)
    ledger.open_for_processing(None, publisher.claims[0])
    ledger.mark_failed(first.batch_id, "blob_missing")
    second = upload(service)
    assert not second.duplicate and second.batch_id != first.batch_id
    assert upload(service).batch_id == second.batch_id


def test_with_redis_down_the_ledger_records_the_batch_and_finds_the_resend(journal, blobs, ledger):
    service = make_service(blobs, FakePublisher(journal), ledger, accepted=FakeAcceptedBatches(journal, down=True))
    first = upload(service)
    assert ledger.status(first.batch_id) == BatchStatus.ACCEPTED
    assert service.batch_status(DEVICE, first.batch_id)["status"] == "accepted"
    assert upload(service).body() == {**first.body(), "duplicate": True}


def test_with_redis_and_the_database_down_the_upload_is_still_stored_and_published(journal, blobs):
    publisher = FakePublisher(journal)
    accepted = FakeAcceptedBatches(journal, down=True)
    result = upload(make_service(blobs, publisher, UnavailableLedger(journal), accepted=accepted))
    assert result.status == BatchStatus.ACCEPTED
    assert [claim.batch_id for claim in publisher.claims] == [result.batch_id]
    with pytest.raises(UnavailableError):
        make_service(blobs, publisher, UnavailableLedger(journal), accepted=accepted).batch_status(DEVICE, "0" * 32)


def test_the_published_claim_check_is_signed_and_its_blob_carries_the_metadata_process_checks(journal, blobs, ledger):
    publisher = FakePublisher(journal)
    upload(make_service(blobs, publisher, ledger))
    (claim,) = publisher.claims

    TEST_KEYRING.verify(claim)
    assert claim.signing_key_id == "test-2"
    assert blobs.metadata[claim.key] == {**blob_metadata(claim), "request-id": "req-1"}


class FakeBudget:
    """DecompressionBudget's interface: a refusal while `spent`, and the charges made."""

    def __init__(self, spent: bool = False) -> None:
        self.spent = spent
        self.charges: list[tuple[str, int]] = []

    def check(self, account_id: str) -> None:
        if self.spent:
            raise RateLimitedError("budget spent", retry_after_s=60, headers={})

    def charge(self, account_id: str, decompressed_bytes: int) -> None:
        self.charges.append((account_id, decompressed_bytes))


def send(service: IngestService, body: bytes, encoding: str | None = "gzip") -> UploadResult:
    return service.upload(UploadRequest(DEVICE, "req-1", encoding, len(body), io.BytesIO(body)))


def test_a_gigabyte_of_whitespace_is_refused_by_ingest_at_once(journal, blobs, ledger):
    # 1 GiB of spaces inside a JSON array as 1,024 gzip members of 1 MiB each (~1 KiB apiece), never held whole.
    spaces = gzip.compress(b" " * MiB, mtime=0)
    body = io.BytesIO(gzip.compress(b'[{"equip_uuid": "e", "sensor": [') + spaces * 1024 + gzip.compress(b"]}]"))
    size = len(body.getvalue())
    publisher, budget = FakePublisher(journal), FakeBudget()
    service = make_service(blobs, publisher, ledger, budget)
    started = time.process_time()
    with pytest.raises(WhitespaceRunError) as refused:
        service.upload(UploadRequest(DEVICE, "req-1", "gzip", size, body))
    cpu_s = time.process_time() - started
    assert refused.value.status == 413
    assert "more than 4096 whitespace bytes at byte 32 of the decompressed upload" in refused.value.message
    assert cpu_s < 1.0  # the whole 1 GiB would take several seconds to inflate alone
    assert body.tell() < size  # refused while streaming, before the body ended
    assert publisher.claims == [] and blobs.blobs == {}
    (charged,) = budget.charges
    assert charged[1] <= 2 * MiB  # what it inflated before refusing, charged all the same


def test_uncompressed_whitespace_is_refused_too(journal, blobs, ledger):
    with pytest.raises(WhitespaceRunError):
        send(make_service(blobs, FakePublisher(journal), ledger), b"[" + b"\r\n\t " * 2048 + b"]", encoding=None)


@pytest.mark.parametrize(
    "text",
    [
        b'[{"equip_uuid": "e", "sensor": [' + b"{}," * (4 * MiB) + b"{}]}]",
        b'[{"equip_uuid": "' + b"e" * (32 * MiB) + b'", "sensor": [{}]}]',
    ],
    ids=["a short value repeated", "a huge string of one character"],
)
def test_a_ratio_bomb_without_whitespace_is_refused_by_ingest(journal, blobs, ledger, text):
    publisher = FakePublisher(journal)
    with pytest.raises(CompressionRatioError) as refused:
        send(make_service(blobs, publisher, ledger), gzip.compress(text, 9))
    assert refused.value.status == 413 and "more than 500:1" in refused.value.message
    assert publisher.claims == []


@pytest.mark.parametrize("indent", [None, 1])
def test_a_client_shaped_backlog_past_the_window_is_accepted(journal, blobs, ledger, indent):
    text = json.dumps(client_backlog(polls=3000), indent=indent).encode()  # 12,000 readings, past 4 MiB
    publisher, budget = FakePublisher(journal), FakeBudget()
    result = send(make_service(blobs, publisher, ledger, budget), gzip.compress(text))
    assert (result.status, result.readings) == ("accepted", None)
    assert gzip.decompress(blobs.blobs[publisher.claims[0].key]) == text
    (charged,) = budget.charges
    assert 4 * MiB <= charged[1] < len(text)


def test_a_device_whose_budget_is_spent_is_refused_before_its_body_is_read(journal, blobs, ledger):
    body = io.BytesIO(gzip.compress(UPLOAD))
    service = make_service(blobs, FakePublisher(journal), ledger, FakeBudget(spent=True))
    with pytest.raises(RateLimitedError) as refused:
        service.upload(UploadRequest(DEVICE, "req-1", "gzip", None, body))
    assert refused.value.status == 429 and refused.value.retry_after_s == 60
    assert body.tell() == 0


def test_an_upload_admitted_with_its_budget_checked_is_not_checked_again(journal, blobs, ledger):
    # The route checks the budget in the rate limits' Redis round trip and says so; upload() makes no second one.
    body = gzip.compress(UPLOAD)
    service = make_service(blobs, FakePublisher(journal), ledger, FakeBudget(spent=True))
    request = UploadRequest(DEVICE, "req-1", "gzip", len(body), io.BytesIO(body), budget_checked=True)
    assert service.upload(request).status == "accepted"
