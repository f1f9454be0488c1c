"""The object store holding raw uploads (any S3-compatible server, through boto3)."""

from __future__ import annotations

import email.utils
import logging
import time
from datetime import datetime
from typing import IO, Iterator, Mapping

import boto3
import boto3.session
import botocore.config
import botocore.exceptions
import botocore.session
import botocore.utils

from easysmart.config import ObjectStoreSettings
from easysmart.errors import EasySmartError, UnavailableError
from easysmart.metrics import OBJECT_STORE_LATENCY

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


def _is_missing(error: botocore.exceptions.ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code")) in _MISSING_CODES


class BlobStore:
    def __init__(self, client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @_PUT_LATENCY.time()
    def put(self, key: str, body: IO[bytes], metadata: dict[str, str], content_type: str = "application/json") -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                Metadata=metadata,
                ContentType=content_type,
                ContentEncoding="gzip",
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise UnavailableError(f"the object store did not store the upload: {error}") from error

    def iter_chunks(self, key: str, expected_metadata: Mapping[str, str] | None = None) -> Iterator[bytes]:
        """The blob's bytes in chunks; BlobMissingError if it does not exist, else UnavailableError.

        With expected_metadata, BlobMetadataMismatchError before the first chunk unless the blob's metadata
        holds each of those values."""
        try:
            with _GET_LATENCY.time():  # until the answer's headers: the body is read as it is parsed
                response = self.client.get_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as error:
            if _is_missing(error):
                raise BlobMissingError(f"blob s3://{self.bucket}/{key} does not exist") from error
            raise UnavailableError(f"the object store failed: {error}") from error
        except botocore.exceptions.BotoCoreError as error:
            raise UnavailableError(f"the object store is unavailable: {error}") from error
        body = response["Body"]
        try:
            if expected_metadata is not None:
                check_metadata(key, response.get("Metadata") or {}, expected_metadata)
            while chunk := body.read(READ_CHUNK_BYTES):
                yield chunk
        except (botocore.exceptions.BotoCoreError, OSError) as error:
            raise UnavailableError(f"reading the blob from the object store failed: {error}") from error
        finally:
            body.close()

    @_DELETE_LATENCY.time()
    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            logger.warning("could not delete blob %s: %s", key, error)

    def ping(self) -> float:
        started = time.perf_counter()
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise UnavailableError(f"the object store is unavailable: {error}") from error
        return time.perf_counter() - started


def check_metadata(key: str, actual: Mapping[str, str], expected: Mapping[str, str]) -> None:
    """BlobMetadataMismatchError naming each expected metadata field the blob lacks or holds otherwise."""
    differing = sorted(name for name, value in expected.items() if actual.get(name) != value)
    if differing:
        raise BlobMetadataMismatchError(
            f"blob {key}: its metadata ({', '.join(differing)}) does not match the claim check"
        )
