"""IngestService in-process, with fakes for the object store, the publisher and the ledger."""

import gzip
import io

import pytest
from support.claims import TEST_KEYRING
from support.fakes import FakeBlobStore, FakeLedger, FakePublisher
from support.samples import FIXTURES

from easysmart.claimsig import blob_metadata
from easysmart.config import RateLimits, RetentionSettings, UploadLimits
from easysmart.errors import NotFoundError, UnavailableError
from easysmart.identity import Principal
from easysmart.ingest import IngestService, UploadRequest, UploadResult
from easysmart.ledger import BatchStatus
from easysmart.messaging import PublishOutcomeUnknownError

DEVICE = Principal(account_id="a-1", tenant_id="t-1", kind="device", username="freezer-hub")
UPLOAD = (FIXTURES / "ha-bulk-small.json").read_bytes()


class UnavailableLedger(FakeLedger):
    def find_identical(self, *args: object) -> None:
        raise UnavailableError("the database is unavailable")

    def record_accepted(self, *args: object) -> None:
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


def make_service(blobs, publisher, ledger) -> IngestService:
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


def test_the_published_claim_check_is_signed_and_its_blob_carries_the_metadata_process_checks(journal, blobs, ledger):
    publisher = FakePublisher(journal)
    upload(make_service(blobs, publisher, ledger))
    (claim,) = publisher.claims

    TEST_KEYRING.verify(claim)
    assert claim.signing_key_id == "test-2"
    assert blobs.metadata[claim.key] == {**blob_metadata(claim), "request-id": "req-1"}
