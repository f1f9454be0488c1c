"""The object store holding raw uploads (any S3-compatible server).

The blob store's requests are signed here (`s3http`); the boto3 client (`make_s3_client`) serves what lists or
configures the bucket (retention's expiry rules, the collector's figures)."""

from __future__ import annotations

import email.utils
import logging
import time
from datetime import datetime
from typing import IO, Iterator, Mapping

import boto3
import boto3.session
import botocore.config
import botocore.session
import botocore.utils
import urllib3.exceptions

from easysmart.config import ObjectStoreSettings
from easysmart.errors import EasySmartError, UnavailableError
from easysmart.metrics import OBJECT_STORE_LATENCY
from easysmart.s3http import S3Http, answer_of, release

logger = logging.getLogger(__name__)

_MISSING_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}
READ_CHUNK_BYTES = 1024 * 1024
_PUT_LATENCY, _GET_LATENCY, _DELETE_LATENCY = (OBJECT_STORE_LATENCY.labels(op) for op in ("put", "get", "delete"))


class BlobMissingError(EasySmartError):
    """The blob a claim check points at does not exist: the batch can never be processed."""

    status, code = 422, "blob_missing"


class BlobMetadataMismatchError(EasySmartError):
    """The blob's metadata is not what the reader expects (another tenant's, account's or batch's blob)."""

    status, code = 422, "blob_metadata_mismatch"


def make_s3_client(settings: ObjectStoreSettings, timeout_s: float, max_connections: int = 10):
    """A client of the object store whose every call (connect, each read) times out after timeout_s, keeping up to
    max_connections open (one per thread that calls it at once: a thread beyond them opens one per call).

    Shared by every thread of the process (boto3 clients are thread-safe); its own botocore session parses the
    Last-Modified of every answer with the standard library's HTTP-date parser instead of dateutil's."""
    session = botocore.session.get_session()
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_parse_timestamp)
    return boto3.session.Session(botocore_session=session).client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
        region_name=settings.s3_region,
        config=botocore.config.Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"max_attempts": 2, "mode": "standard"},
            max_pool_connections=max_connections,
            s3={"addressing_style": "path"},
            # S3Proxy and older stores reject the newer default checksums on PutObject.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def _parse_timestamp(value: str) -> datetime:
    try:
        return email.utils.parsedate_to_datetime(value)  # an HTTP date, as headers carry them
    except (TypeError, ValueError):
        return botocore.utils.parse_timestamp(value)  # ISO 8601 (listings) or epoch seconds


class BlobStore:
    """The raw uploads' bucket: PUT, GET, DELETE of one blob and a HEAD of the bucket, signed here (`S3Http`)."""

    def __init__(self, client: S3Http, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @_PUT_LATENCY.time()
    def put(
        self,
        key: str,
        body: IO[bytes],
        metadata: Mapping[str, str],
        content_type: str = "application/json",
        sha256: str | None = None,
    ) -> None:
        """Stores the body from its current position (sha256: its hex digest when the caller has it already)."""
        headers = {"content-type": content_type, "content-encoding": "gzip"}
        headers |= {f"x-amz-meta-{name}": value for name, value in metadata.items()}
        answer = self.client.call("PUT", self.bucket, key, headers=headers, body=body, payload_sha256=sha256)
        if not answer.ok:
            raise UnavailableError(f"the object store did not store the upload: it answered {answer}")

    def iter_chunks(self, key: str, expected_metadata: Mapping[str, str] | None = None) -> Iterator[bytes]:
        """The blob's bytes in chunks, as stored; BlobMissingError if it does not exist, else UnavailableError.

        With expected_metadata, BlobMetadataMismatchError before the first chunk unless the blob's metadata
        holds each of those values."""
        with _GET_LATENCY.time():  # until the answer's headers: the body is read as it is parsed
            response = self.client.open("GET", self.bucket, key)
        if response.status != 200:
            answer = answer_of(response)
            if answer.status == 404 or answer.code in _MISSING_CODES:
                raise BlobMissingError(f"blob s3://{self.bucket}/{key} does not exist")
            raise UnavailableError(f"the object store failed: it answered {answer}")
        try:
            if expected_metadata is not None:
                check_metadata(key, _metadata(response.headers), expected_metadata)
            while chunk := response.read(READ_CHUNK_BYTES, decode_content=False):
                yield chunk
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise UnavailableError(f"reading the blob from the object store failed: {error}") from error
        finally:
            release(response)

    @_DELETE_LATENCY.time()
    def delete(self, key: str) -> None:
        try:
            answer = self.client.call("DELETE", self.bucket, key)
        except UnavailableError as error:
            logger.warning("could not delete blob %s: %s", key, error)
            return
        if not answer.ok:
            logger.warning("could not delete blob %s: the object store answered %s", key, answer)

    def ping(self) -> float:
        started = time.perf_counter()
        answer = self.client.call("HEAD", self.bucket)
        if not answer.ok:
            raise UnavailableError(f"the object store is unavailable: it answered {answer}")
        return time.perf_counter() - started


def make_blob_store(settings: ObjectStoreSettings, timeout_s: float, max_connections: int = 10) -> BlobStore:
    """The raw uploads' bucket, through a pool keeping up to max_connections connections whose every connect and
    socket read times out after timeout_s."""
    client = S3Http(
        settings.s3_endpoint_url,
        settings.s3_access_key_id,
        settings.s3_secret_access_key,
        settings.s3_region,
        timeout_s,
        max_connections,
    )
    return BlobStore(client, settings.s3_bucket)


def _metadata(headers: Mapping[str, str]) -> dict[str, str]:
    return {name[11:].lower(): value for name, value in headers.items() if name.lower().startswith("x-amz-meta-")}


def check_metadata(key: str, actual: Mapping[str, str], expected: Mapping[str, str]) -> None:
    """BlobMetadataMismatchError naming each expected metadata field the blob lacks or holds otherwise."""
    differing = sorted(name for name, value in expected.items() if actual.get(name) != value)
    if differing:
        raise BlobMetadataMismatchError(
            f"blob {key}: its metadata ({', '.join(differing)}) does not match the claim check"
        )
