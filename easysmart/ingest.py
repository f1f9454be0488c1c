"""Ingest: take an upload, store it as a blob, send its claim check, answer 201.

The body is read in chunks and limited while streaming; the gzip as sent goes to a spooled
file (memory for small uploads, disk for large ones). Only the first window of decompressed
text (4 MiB by default) is decompressed and parsed here, to answer 400/413/422 and the counts
at once; `process` decompresses and checks the whole under the same limits (decompressed size,
compression ratio, whitespace runs). What ingest decompresses is charged to the device's hourly
decompression budget, which refuses its uploads (429) once spent.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import tempfile
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import IO, BinaryIO, Callable, Iterable

import orjson
from opentelemetry.trace import SpanKind

from easysmart.acceptedbatches import AcceptedBatches, AcceptedRows
from easysmart.accountstate import AccountStates
from easysmart.claimsig import ClaimKeyring, blob_metadata
from easysmart.compression import BoundedGunzip
from easysmart.config import RateLimits, RetentionSettings, UploadLimits
from easysmart.db import Database
from easysmart.errors import (
    BadRequestError,
    EasySmartError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    UnavailableError,
    UnprocessableError,
    UnsupportedMediaTypeError,
)
from easysmart.events import ClaimCheck
from easysmart.identity import Principal
from easysmart.jsonstream import (
    MalformedJsonError,
    WhitespaceRunGuard,
    WindowExhausted,
    iter_upload_text,
    text_reader,
)
from easysmart.ledger import BatchLedger, BatchRecord, BatchStatus
from easysmart.messaging import ClaimCheckPublisher, PublishOutcomeUnknownError
from easysmart.metrics import (
    INGEST_DECOMPRESSED_BYTES,
    INGEST_RATE_LIMITED,
    INGEST_RECEIVED_BYTES,
    INGEST_UPLOADS,
    INGEST_WINDOW_PARSE,
)
from easysmart.observability import batch_id_var
from easysmart.payload import structure_violations
from easysmart.ratelimit import BudgetCheck, DecompressionBudget, DeferredCharges, Limit, RateLimiter
from easysmart.storage import BlobStore
from easysmart.tracing import span, with_traceparent
from easysmart.upload import UploadShape, scan_shape
from easysmart.web import Reply

logger = logging.getLogger(__name__)

READ_CHUNK_BYTES = 64 * 1024
_KAFKA_SEND = {"messaging.system": "kafka", "messaging.operation.type": "send"}
SPOOL_IN_MEMORY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class UploadRequest:
    principal: Principal
    request_id: str
    content_encoding: str | None
    content_length: int | None
    body: BinaryIO
    # True when rate_limit() checked the device's decompression budget (in the rate limits' Redis round trip).
    budget_checked: bool = False


@dataclass
class UploadResult:
    batch_id: str
    status: BatchStatus
    received: int | None
    readings: int | None
    duplicate: bool = False

    def body(self) -> dict:
        body = {"batch_id": self.batch_id, "status": self.status, "received": self.received, "readings": self.readings}
        if self.duplicate:
            body["duplicate"] = True
        return body


_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_MTIME = slice(4, 8)


class _BlobWriter:
    """Spools the blob and hashes it. A gzip header's timestamp is zeroed, so an upload the
    client compresses again for a resend is byte-identical and found as a duplicate."""

    def __init__(self, spool: IO[bytes]) -> None:
        self.spool = spool
        self.digest = hashlib.sha256()
        self._header: bytes | None = b""

    def write_gzip(self, chunk: bytes) -> None:
        if self._header is not None:
            self._header += chunk
            if len(self._header) < 10:
                return
            header = bytearray(self._header)
            header[_GZIP_MTIME] = bytes(4)
            chunk, self._header = bytes(header), None
        self.write(chunk)

    def write(self, data: bytes) -> None:
        self.spool.write(data)
        self.digest.update(data)

    def hexdigest(self) -> str:
        if self._header:  # a body shorter than a gzip header: BoundedGunzip has refused it already
            self.write(self._header)
            self._header = None
        return self.digest.hexdigest()


class _Window:
    """The first `size` decompressed bytes, which ingest parses synchronously."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data = bytearray()
        self.complete = True  # False once the upload is known to go past the window
        self.seen = 0  # decompressed bytes handed to the window, kept or not
        self.received = 0  # body bytes read, as sent (here, so that a refused upload's count survives too)

    def add(self, out: bytes) -> None:
        self.seen += len(out)
        room = self.size - len(self.data)
        if len(out) > room:
            self.complete = False
        if room > 0:
            self.data += out[:room]

    @property
    def full(self) -> bool:
        return not self.complete


_JSON_NON_ARRAY_STARTS = {bytes([c]) for c in b'{"0123456789-tfn'}


@INGEST_WINDOW_PARSE.time()
def inspect_window(data: bytes | bytearray, complete: bool) -> UploadShape:
    """Structure and counts of the upload (complete) or of the part of it in the window.

    Raises BadRequestError for text that is not JSON and UnprocessableError for structure."""
    shape = UploadShape()
    try:
        if complete:
            try:
                items = orjson.loads(data)
            except orjson.JSONDecodeError as error:
                raise BadRequestError(f"the upload is not valid JSON: {error}") from None
            if not isinstance(items, list):
                raise UnprocessableError("the upload must be a JSON array of equipment objects", paths=["$"])
            for index, item in enumerate(items):
                shape.items += 1
                shape.add_violations(structure_violations(item, index))
                sensors = item.get("sensor") if isinstance(item, dict) else None
                shape.readings += len(sensors) if isinstance(sensors, list) else 0
        else:
            scan_shape(iter_upload_text(text_reader([bytes(data)]), complete=False), shape)
    except WindowExhausted:
        pass
    except MalformedJsonError as error:
        if bytes(data.lstrip()[:1]) in _JSON_NON_ARRAY_STARTS:
            raise UnprocessableError("the upload must be a JSON array of equipment objects", paths=["$"]) from None
        raise BadRequestError(f"the upload is not valid JSON: {error}") from None
    if shape.violations:
        raise UnprocessableError(
            f"{shape.violation_count} equipment item(s) cannot be used: " + "; ".join(shape.violations[:10]),
            paths=[v.split(":", 1)[0] for v in shape.violations],
            violations=shape.violations,
        )
    return shape


class IngestService:
    def __init__(
        self,
        settings: UploadLimits,
        rate_limits: RateLimits,
        retention: RetentionSettings,
        db: Database,
        blobs: BlobStore,
        publisher: ClaimCheckPublisher,
        limiter: RateLimiter,
        ledger: BatchLedger | None = None,
        *,
        keyring: ClaimKeyring,
        budget: DecompressionBudget | None = None,
        accounts: AccountStates | None = None,
        accepted: AcceptedBatches | None = None,
        accepted_rows: AcceptedRows | None = None,
        deferred_charges: DeferredCharges | None = None,
    ) -> None:
        self.settings = settings
        self.rate_limits = rate_limits
        self.retention = retention
        self.blobs = blobs
        self.publisher = publisher
        self.limiter = limiter
        self.ledger = ledger or BatchLedger(db)
        self.keyring = keyring
        self.budget = budget
        # What ingest decompressed is charged off the request path when given.
        self.budget_charges: DeferredCharges | DecompressionBudget | None = deferred_charges or budget
        self.accounts = accounts or AccountStates(db, limiter.client if limiter is not None else None)
        # Without it (or while Redis is down) the ledger finds duplicates and records accepted batches.
        self.accepted = accepted
        # With Redis answering, the ledger row is written off the request path (the alerts' processing lag reads it).
        self.accepted_rows = accepted_rows

    def rate_limit(self, principal: Principal, client_addr: str) -> dict[str, str]:
        """401 when the token's account is blocked, inactive or changed since the token, then the rate limits, then
        (a device's) decompression budget: one Redis round trip for all three. An upload admitted here is sent
        with budget_checked."""
        budget_check = None
        if self.budget is not None and principal.kind == "device":
            budget_check = BudgetCheck(self.budget, principal.account_id)
        return self.accounts.admit(
            principal,
            self.limiter,
            [
                Limit("device", f"device:{principal.account_id}", self.rate_limits.ratelimit_device_per_minute),
                Limit("client address", f"addr:{client_addr}", self.rate_limits.ratelimit_address_per_minute),
            ],
            budget_check,
        )

    def upload(self, request: UploadRequest) -> UploadResult:
        if request.principal.kind != "device":
            raise ForbiddenError("only device accounts may upload telemetry")
        if self.budget is not None and not request.budget_checked:
            self.budget.check(request.principal.account_id)
        gzip_body = self._is_gzip(request.content_encoding)
        max_body = self.settings.ingest_max_body_bytes
        if request.content_length is not None and request.content_length > max_body:
            raise PayloadTooLargeError(
                f"the body is {request.content_length} bytes; the limit is {max_body}", limit=max_body
            )

        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as spool:
            with span("read upload"):
                digest, decompressed, shape = self._read_body(request, gzip_body, spool)
            received_at = datetime.now(timezone.utc)
            earlier = self._earlier_identical(request.principal, digest, received_at)
            if earlier is not None:
                return earlier
            batch_id = str(uuid.uuid4())
            batch_id_var.set(batch_id)
            key = f"raw/{received_at:%Y/%m/%d}/{request.principal.tenant_id}/{batch_id}.json.gz"
            unsigned = ClaimCheck(
                batch_id=batch_id,
                tenant_id=request.principal.tenant_id,
                account_id=request.principal.account_id,
                device=request.principal.username or "",
                bucket=self.blobs.bucket,
                key=key,
                size_bytes=spool.tell(),
                decompressed_bytes=decompressed,
                sha256=digest,
                content_encoding="gzip",
                items=shape.items if shape else None,
                readings=shape.readings if shape else None,
                request_id=request.request_id,
                received_at=received_at.isoformat(),
            )
            claim = self.keyring.sign(unsigned)
            spool.seek(0)
            # Process holds the blob's tenant, account, batch and sha256 to the claim check's.
            with span("put blob"):
                self.blobs.put(key, spool, {**blob_metadata(claim), "request-id": claim.request_id}, sha256=digest)
        try:
            with span("publish claim check", kind=SpanKind.PRODUCER, attributes=_KAFKA_SEND):
                self.publisher.publish(with_traceparent(claim))
        except PublishOutcomeUnknownError:
            # The claim check may be in Kafka: its blob stays (and expires with the others) so it is never
            # a claim check pointing at nothing; the client resends, and a resend stores nothing twice.
            logger.warning("claim check outcome unknown; blob kept", extra={"key": key})
            raise
        except BaseException:
            # No claim check points at this blob: none stays without one.
            self.blobs.delete(key)
            raise
        self._record_batch(claim)
        logger.info(
            "upload accepted",
            extra={
                "items": claim.items,
                "readings": claim.readings,
                "size_bytes": claim.size_bytes,
                "decompressed_bytes": decompressed,
            },
        )
        return UploadResult(batch_id, BatchStatus.ACCEPTED, claim.items, claim.readings)

    @staticmethod
    def _is_gzip(content_encoding: str | None) -> bool:
        encoding = (content_encoding or "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            return True
        if encoding == "identity":
            return False
        raise UnsupportedMediaTypeError(f"Content-Encoding {encoding!r} is not supported; send gzip or identity")

    def _read_body(
        self, request: UploadRequest, gzip_body: bool, spool: IO[bytes]
    ) -> tuple[str, int | None, UploadShape | None]:
        """Streams the body into the spool as the gzip blob to store.

        Returns the blob's sha256, the decompressed size (None when the upload goes past the
        synchronous window) and the shape found in the window (None likewise). Only the window
        is decompressed here; process decompresses and checks the whole.
        """
        window = _Window(self.settings.ingest_sync_window_bytes)
        try:
            return self._stream_body(request, gzip_body, spool, window)
        finally:
            # A refused upload cost its decompression as much as an accepted one.
            if self.budget_charges is not None and window.seen:
                self.budget_charges.charge(request.principal.account_id, window.seen)
            INGEST_RECEIVED_BYTES.inc(window.received)
            INGEST_DECOMPRESSED_BYTES.inc(window.seen)

    def _stream_body(
        self, request: UploadRequest, gzip_body: bool, spool: IO[bytes], window: _Window
    ) -> tuple[str, int | None, UploadShape | None]:
        limits = self.settings
        max_body = limits.ingest_max_body_bytes
        blob = _BlobWriter(spool)
        inflater = BoundedGunzip(
            limits.ingest_max_decompressed_bytes, limits.ingest_max_decompression_ratio, limits.ingest_ratio_floor_bytes
        )
        whitespace = WhitespaceRunGuard(limits.ingest_max_whitespace_run_bytes)
        deflater = None
        texts: Iterable[bytes]
        sent = 0
        while chunk := request.body.read(READ_CHUNK_BYTES):
            sent += len(chunk)
            window.received = sent
            if sent > max_body:
                raise PayloadTooLargeError(f"the body is larger than the limit of {max_body} bytes", limit=max_body)
            if sent == len(chunk) and not gzip_body and chunk[:2] != _GZIP_MAGIC:
                deflater = zlib.compressobj(5, zlib.DEFLATED, 31)
            # gzip sent without its Content-Encoding header is taken as gzip all the same.
            if deflater is None:
                blob.write_gzip(chunk)
                texts = inflater.feed(chunk) if not window.full else ()
            else:
                blob.write(deflater.compress(chunk))
                texts = (chunk,) if not window.full else ()
            for text in texts:
                whitespace.check(text)
                window.add(text)
                if window.full:
                    # Refuse a bad upload (or a bomb of zeros) without reading further.
                    inspect_window(window.data, complete=False)
                    break
        if sent == 0:
            raise BadRequestError("the body is empty")
        if deflater is not None:
            blob.write(deflater.flush())
            if window.complete:
                return blob.hexdigest(), len(window.data), inspect_window(window.data, complete=True)
            return blob.hexdigest(), None, None
        if window.complete:
            inflater.finish()
            return blob.hexdigest(), inflater.total, inspect_window(window.data, complete=True)
        return blob.hexdigest(), None, None

    def _earlier_identical(self, principal: Principal, digest: str, now: datetime) -> UploadResult | None:
        try:
            earlier = self._find_identical(principal, digest, now)
        except UnavailableError:
            # Without Redis and the ledger we cannot tell; process deduplicates readings anyway.
            logger.warning("duplicate check skipped: Redis and the database unavailable")
            return None
        if earlier is None or earlier.status == BatchStatus.FAILED:
            return None
        logger.info("identical upload; answering with the first batch", extra={"first_batch_id": earlier.batch_id})
        return UploadResult(earlier.batch_id, earlier.status, earlier.items, earlier.readings, duplicate=True)

    def _find_identical(self, principal: Principal, digest: str, now: datetime) -> BatchRecord | None:
        if self.accepted is not None:
            try:
                batch_id = self.accepted.identical_batch_id(principal.tenant_id, principal.account_id, digest)
            except UnavailableError:
                logger.warning("duplicate check in the ledger: Redis unavailable")
            else:
                # Only a resend reads the batch (a failed batch's blob is taken again as a new batch).
                return None if batch_id is None else self._batch(principal.tenant_id, batch_id)
        since = now - timedelta(days=self.retention.blob_retention_days)
        return self.ledger.find_identical(principal.account_id, digest, since)

    def _batch(self, tenant_id: str, batch_id: str) -> BatchRecord | None:
        """The ledger's row (process writes it from the claim check), else ingest's record of the accepted batch;
        UnavailableError when neither can tell."""
        try:
            batch = self.ledger.status_for_tenant(tenant_id, batch_id)
        except UnavailableError:
            if self.accepted is None:
                raise
            return self.accepted.status(tenant_id, batch_id)
        if batch is None and self.accepted is not None:
            return self.accepted.status(tenant_id, batch_id)
        return batch

    def _record_batch(self, claim: ClaimCheck) -> None:
        if self.accepted is not None:
            try:
                self.accepted.record(claim)
            except UnavailableError:
                logger.warning("accepted batch recorded in the ledger: Redis unavailable")
            else:
                if self.accepted_rows is not None:
                    self.accepted_rows.add(claim)
                return
        try:
            self.ledger.record_accepted(claim)
        except EasySmartError:
            # The claim check is durable in Kafka: process records the batch from it.
            logger.warning("batch row not recorded at ingest; process will record it")

    def batch_status(self, principal: Principal, batch_id: str) -> dict:
        try:
            uuid.UUID(batch_id)
        except ValueError:
            raise NotFoundError(f"batch {batch_id} not found") from None
        batch = self._batch(principal.tenant_id, batch_id)
        if batch is None:
            raise NotFoundError(f"batch {batch_id} not found")
        return {
            "batch_id": batch.batch_id,
            "status": batch.status,
            "received": batch.items,
            "readings": batch.readings,
            "stored": batch.stored,
            "duplicate": batch.duplicate,
            "skipped": batch.skipped,
            "rejected": batch.rejected,
            "reasons": batch.reasons,
            "reason_counts": batch.reason_counts,
            "received_at": batch.received_at.isoformat(),
            "processed_at": batch.processed_at.isoformat() if batch.processed_at else None,
        }


# The esm_ingest_uploads_total outcome of each refusal, by its HTTP status; any other is "error".
_REFUSAL_OUTCOMES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    413: "too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    503: "unavailable",
}


def refusal_outcome(error: Exception) -> str:
    """The outcome an upload refused with `error` counts as (the status the route answers it with)."""
    return _REFUSAL_OUTCOMES.get(error.status if isinstance(error, EasySmartError) else 500, "error")


def counted_upload(handler: Callable[..., Reply]) -> Callable[..., Reply]:
    """The upload route, counting every answer it gives by outcome, and each rate limit that refused one."""

    @functools.wraps(handler)
    def counted(*args: object, **kwargs: object) -> Reply:
        try:
            reply = handler(*args, **kwargs)
        except Exception as error:
            INGEST_UPLOADS.labels(refusal_outcome(error)).inc()
            if isinstance(error, RateLimitedError):
                INGEST_RATE_LIMITED.labels(error.limit.replace(" ", "_")).inc()
            raise
        duplicate = isinstance(reply.body, dict) and reply.body.get("duplicate")
        INGEST_UPLOADS.labels("duplicate" if duplicate else "accepted").inc()
        return reply

    return counted
