"""Each outcome of ingest and process moves its metric of easysmart.metrics, by the right amount (auth's logins and
refreshes: tests/integration/test_auth_metrics.py)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
from typing import cast

import flask
import psycopg2
import pytest
import urllib3
from confluent_kafka import KafkaError
from prometheus_client import REGISTRY
from support.claims import CLAIM, TEST_KEYRING, signed
from support.fakes import FakeBlobStore, FakeCopyWriter, FakeDatabase, FakeKafkaProducer, FakeLedger, FakePublisher
from support.samples import FIXTURES
from werkzeug.test import EnvironBuilder

from easysmart.claimsig import ClaimNotAuthenticError, blob_metadata
from easysmart.config import ProcessSettings, RateLimits, RetentionSettings, UploadLimits
from easysmart.errors import (
    BadRequestError,
    DatabaseTimeoutError,
    EasySmartError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    UnauthorizedError,
    UnavailableError,
    UnprocessableError,
    UnsupportedMediaTypeError,
)
from easysmart.events import InvalidCloudEventError
from easysmart.identity import Principal
from easysmart.ingest import IngestService, UploadRequest, counted_upload, refusal_outcome
from easysmart.messaging import ClaimCheckPublisher, PublishOutcomeUnknownError
from easysmart.process import BatchProcessor, counted_claim_check
from easysmart.ratelimit import DecompressionBudget, Limit, RateLimiter
from easysmart.s3http import Answer, S3Http
from easysmart.storage import BlobStore
from easysmart.web import Reply, Router

DEVICE = Principal(account_id=CLAIM.account_id, tenant_id=CLAIM.tenant_id, kind="device", username="freezer-hub")
UPLOAD = (FIXTURES / "ha-bulk-small.json").read_bytes()  # 40 readings


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Moved:
    """How far each sample named moved since this was made."""

    def __init__(self, *samples: tuple[str, dict[str, str]] | str) -> None:
        self._keys = [(s, {}) if isinstance(s, str) else s for s in samples]
        self._before = [value(name, **labels) for name, labels in self._keys]

    def __call__(self) -> list[float]:
        return [value(name, **labels) - before for (name, labels), before in zip(self._keys, self._before)]


def uploads(outcome: str) -> tuple[str, dict[str, str]]:
    return "esm_ingest_uploads_total", {"outcome": outcome}


def make_ingest(ledger: FakeLedger, blobs: FakeBlobStore, publisher: FakePublisher, **limits: int) -> IngestService:
    return IngestService(
        UploadLimits(**limits),
        RateLimits(),
        RetentionSettings(),
        None,
        blobs,
        publisher,
        limiter=None,
        ledger=ledger,
        keyring=TEST_KEYRING,
    )


def upload_route(service: IngestService):
    """What functions/ingest/main.py's upload route does with the service's answer, counted alike."""

    @counted_upload
    def route(body: bytes, content_length: int | None) -> Reply:
        result = service.upload(UploadRequest(DEVICE, "req-1", "gzip", content_length, io.BytesIO(body)))
        return Reply(201, result.body())

    return route


# --- ingest ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error, outcome",
    [
        (BadRequestError("not JSON"), "bad_request"),
        (UnauthorizedError("expired"), "unauthorized"),
        (ForbiddenError("not a device"), "forbidden"),
        (PayloadTooLargeError("too large"), "too_large"),
        (UnsupportedMediaTypeError("br"), "unsupported_media_type"),
        (UnprocessableError("no sensors"), "unprocessable"),
        (RateLimitedError("slow down", 5, {}), "rate_limited"),
        (UnavailableError("Kafka is down"), "unavailable"),
        (PublishOutcomeUnknownError("not acknowledged"), "unavailable"),
        (DatabaseTimeoutError("statement timeout"), "unavailable"),
        (EasySmartError("a bug"), "error"),
        (NotFoundError("not here"), "error"),
        (RuntimeError("a bug"), "error"),
    ],
)
def test_each_refusal_counts_as_the_class_of_its_answer(error, outcome):
    assert refusal_outcome(error) == outcome

    @counted_upload
    def refused() -> Reply:
        raise error

    moved = Moved(uploads(outcome))
    with pytest.raises(type(error)):
        refused()
    assert moved() == [1]


def test_an_accepted_and_a_duplicate_upload_count_apart_with_their_bytes_and_parse_time():
    journal: list = []
    route = upload_route(make_ingest(FakeLedger(journal), FakeBlobStore(journal), FakePublisher(journal)))
    body = gzip.compress(UPLOAD)
    moved = Moved(
        uploads("accepted"),
        uploads("duplicate"),
        "esm_ingest_received_bytes_total",
        "esm_ingest_decompressed_bytes_total",
        "esm_ingest_sync_window_parse_seconds_count",
    )

    route(body, len(body))
    route(body, len(body))

    assert moved() == [1, 1, 2 * len(body), 2 * len(UPLOAD), 2]


def test_a_refused_upload_counts_the_bytes_it_read():
    journal: list = []
    service = make_ingest(
        FakeLedger(journal), FakeBlobStore(journal), FakePublisher(journal), ingest_max_body_bytes=100
    )
    body = gzip.compress(UPLOAD)
    moved = Moved(uploads("too_large"), "esm_ingest_received_bytes_total")

    with pytest.raises(PayloadTooLargeError):
        upload_route(service)(body, None)  # no Content-Length: refused while reading

    assert moved() == [1, len(body)]


class SpentBudget:
    """A Redis client whose decompression budget script answers a spent balance."""

    def register_script(self, script: str):
        return lambda keys, args: b"-1000"


@pytest.mark.parametrize(
    "refuse, limit",
    [
        (
            lambda: RateLimiter._answer(
                [Limit("device", "d", 60), Limit("client address", "a", 600)], [0, 1, 900, "0", "9"]
            ),
            "device",
        ),
        (
            lambda: RateLimiter._answer(
                [Limit("device", "d", 60), Limit("client address", "a", 600)], [0, 2, 90, "50", "0"]
            ),
            "client_address",
        ),
        (lambda: DecompressionBudget(SpentBudget(), 1_000_000).check("a-1"), "decompression_budget"),
    ],
)
def test_a_rate_limited_upload_counts_the_limit_that_refused_it(refuse, limit):
    @counted_upload
    def refused() -> Reply:
        refuse()
        return Reply(201, {})

    moved = Moved(uploads("rate_limited"), ("esm_ingest_rate_limited_total", {"limit": limit}))
    with pytest.raises(RateLimitedError):
        refused()
    assert moved() == [1, 1]


class S3Client:
    """easysmart.s3http.S3Http answering every request 200 (a GET with b"blob")."""

    def call(self, method: str, bucket: str, key: str = "", **request: object) -> Answer:
        return Answer(200, "")

    def open(self, method: str, bucket: str, key: str = "", **request: object) -> urllib3.HTTPResponse:
        return urllib3.HTTPResponse(body=io.BytesIO(b"blob"), status=200, preload_content=False)


def test_each_object_store_request_is_timed_by_operation():
    blobs = BlobStore(cast(S3Http, S3Client()), "telemetry-raw")
    moved = Moved(*(("esm_object_store_request_seconds_count", {"operation": op}) for op in ("put", "get", "delete")))

    blobs.put("raw/k", io.BytesIO(b"blob"), {})
    assert b"".join(blobs.iter_chunks("raw/k")) == b"blob"
    blobs.delete("raw/k")

    assert moved() == [1, 1, 1]


def test_a_claim_check_kafka_acknowledged_is_timed_and_one_it_did_not_is_not():
    moved = Moved("esm_kafka_publish_seconds_count")
    acknowledging = ClaimCheckPublisher("127.0.0.1:1", "telemetry.raw", 5.0, make_producer=FakeKafkaProducer())
    failing = ClaimCheckPublisher(
        "127.0.0.1:1",
        "telemetry.raw",
        5.0,
        make_producer=FakeKafkaProducer(outcome=KafkaError(KafkaError._MSG_TIMED_OUT)),
    )
    try:
        acknowledging.publish(CLAIM)
        with pytest.raises(UnavailableError):
            failing.publish(CLAIM)
    finally:
        acknowledging.close()
        failing.close()
    assert moved() == [1]


# --- process -----------------------------------------------------------------------------------


class Stack:
    """Ingest and process on shared fakes; process's route counted as functions/process/main.py counts it."""

    def __init__(self, writer_factory=None, ledger: FakeLedger | None = None) -> None:
        journal: list = []
        self.blobs = FakeBlobStore(journal)
        self.publisher = FakePublisher(journal)
        self.ledger = ledger or FakeLedger(journal)
        self.ingest = make_ingest(self.ledger, self.blobs, self.publisher)
        self.processor = BatchProcessor(
            ProcessSettings(),
            UploadLimits(),
            RetentionSettings(),
            FakeDatabase(journal, {DEVICE.tenant_id: "America/Sao_Paulo"}),
            self.blobs,
            ledger=self.ledger,
            writer_factory=writer_factory or FakeCopyWriter,
            keyring=TEST_KEYRING,
        )
        self.route = counted_claim_check(self.processor.process)

    def upload(self, text: bytes = UPLOAD):
        body = gzip.compress(text)
        batch_id = self.ingest.upload(UploadRequest(DEVICE, "req-1", "gzip", len(body), io.BytesIO(body))).batch_id
        return next(claim for claim in self.publisher.claims if claim.batch_id == batch_id)


def batches(outcome: str) -> tuple[str, dict[str, str]]:
    return "esm_process_batches_total", {"outcome": outcome}


def dead_lettered(reason: str) -> tuple[str, dict[str, str]]:
    return "esm_process_dead_lettered_total", {"reason": reason}


PROCESSED = (
    "esm_process_batch_duration_seconds_count",
    "esm_process_batch_readings_sum",
    "esm_process_batch_decompressed_bytes_sum",
    "esm_process_end_to_end_delay_seconds_count",
    ("esm_process_readings_total", {"outcome": "stored"}),
)


def test_a_processed_batch_is_done_with_its_duration_size_readings_and_delay_observed():
    stack = Stack()
    claim = stack.upload()
    moved = Moved(batches("done"), "esm_process_redeliveries_total", *PROCESSED)

    stack.route(claim)

    assert moved() == [1, 0, 1, 40, len(UPLOAD), 1, 40]


def test_a_redelivered_claim_check_is_done_and_counted_as_a_redelivery_and_observes_nothing_again():
    stack = Stack()
    claim = stack.upload()
    stack.route(claim)
    moved = Moved(batches("done"), "esm_process_redeliveries_total", *PROCESSED)

    stack.route(claim)

    assert moved() == [1, 1, 0, 0, 0, 0, 0]


class ConstraintViolation(psycopg2.IntegrityError):
    pgcode = "23505"


class CountingLedger(FakeLedger):
    def count_unexpected_failure(self, batch_id: str) -> int:
        return 99


def failing_writer(error: Exception):
    def make(cursor, tenant_id: str, threaded: bool = True):
        raise error

    return make


def resigned(**changes: object):
    return lambda claim: signed(dataclasses.replace(claim, **changes))


@pytest.mark.parametrize(
    "stack, spoil, reason",
    [
        (Stack, lambda claim: dataclasses.replace(claim, readings=41), "unsigned_claim"),
        (Stack, resigned(key="raw/missing/blob.json.gz"), "blob_mismatch"),
        (Stack, resigned(batch_id="5a0f3c1e-0000-4000-8000-0000000000ff"), "blob_mismatch"),
        (Stack, resigned(sha256="0" * 64), "blob_mismatch"),
        (lambda: Stack(failing_writer(ConstraintViolation("duplicate key"))), None, "database_rejected"),
        (lambda: Stack(failing_writer(RuntimeError("a bug")), CountingLedger([])), None, "too_many_failures"),
    ],
    ids=["altered", "blob missing", "another batch's blob", "sha256", "database", "unexpected errors"],
)
def test_a_batch_failed_for_good_is_counted_failed_and_dead_lettered_with_its_reason(stack, spoil, reason):
    stack = stack()
    claim = stack.upload()
    moved = Moved(batches("failed"), batches("retry"), dead_lettered(reason))

    with pytest.raises(UnprocessableError):
        stack.route(spoil(claim) if spoil else claim)

    assert moved() == [1, 0, 1]


def test_an_upload_process_cannot_read_is_dead_lettered_as_invalid():
    stack = Stack()
    claim = stack.upload()
    body = gzip.compress(b'[{"equip_uuid": "x", "sensor": [1,')
    stack.blobs.blobs[claim.key] = body
    spoiled = signed(dataclasses.replace(claim, sha256=hashlib.sha256(body).hexdigest()))
    stack.blobs.metadata[claim.key] = blob_metadata(spoiled)
    moved = Moved(batches("failed"), dead_lettered("invalid_upload"))

    with pytest.raises(UnprocessableError):
        stack.route(spoiled)

    assert moved() == [1, 1]


@pytest.mark.parametrize(
    "error, outcome, reason",
    [
        (InvalidCloudEventError("not a CloudEvent"), "failed", "unsigned_claim"),
        (ClaimNotAuthenticError("unknown key"), "failed", "unsigned_claim"),
        (UnavailableError("the database is down"), "retry", None),
        (DatabaseTimeoutError("statement timeout"), "retry", None),
        (RuntimeError("a bug below the cap"), "retry", None),
    ],
)
def test_a_claim_check_answered_with_an_error_is_failed_or_retried_by_its_status(error, outcome, reason):
    @counted_claim_check
    def route() -> Reply:
        raise error

    moved = Moved(batches(outcome), *([dead_lettered(reason)] if reason else []))
    with pytest.raises(type(error)):
        route()
    assert moved() == ([1, 1] if reason else [1])


def test_each_answer_is_counted_and_timed_by_its_route_and_status():
    router = Router("counting")
    router.add("GET", "/things/{thing_id}", lambda request, thing_id: Reply(200 if thing_id != "gone" else 410, {}))
    requests = ("esm_http_requests_total", {"function": "counting", "route": "/things/{thing_id}", "status": "200"})
    gone = ("esm_http_requests_total", {"function": "counting", "route": "/things/{thing_id}", "status": "410"})
    unmatched = ("esm_http_requests_total", {"function": "counting", "route": "unmatched", "status": "404"})
    timed = ("esm_http_request_seconds_count", {"function": "counting", "route": "/things/{thing_id}"})
    moved = Moved(requests, gone, unmatched, timed)

    for path in ("/things/1", "/things/2", "/things/gone", "/nothing", "/things/3"):
        router(flask.Request(EnvironBuilder(path=path).get_environ()))

    assert moved() == [3, 1, 1, 4]
