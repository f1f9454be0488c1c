"""The blob store's signed requests against the real S3 server (S3Proxy checks every signature)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import uuid

import pytest

from easysmart.config import ObjectStoreSettings
from easysmart.errors import UnavailableError
from easysmart.storage import BlobMetadataMismatchError, BlobMissingError, make_blob_store


@pytest.fixture
def key() -> str:
    return f"test/blob-store/{uuid.uuid4()}/upload.json.gz"


def test_a_blob_comes_back_byte_for_byte_with_its_metadata(blobs, key):
    body = b"\x1f\x8b" + os.urandom(3 * 1024 * 1024)  # gzip-labelled: kept as stored, never inflated
    metadata = {"tenant-id": "t-1", "batch-id": "b-1", "request-id": "req-1"}

    blobs.put(key, io.BytesIO(body), metadata)

    assert b"".join(blobs.iter_chunks(key, {"tenant-id": "t-1", "batch-id": "b-1"})) == body
    with pytest.raises(BlobMetadataMismatchError, match="tenant-id"):
        next(blobs.iter_chunks(key, {"tenant-id": "another tenant"}))


def test_a_key_with_spaces_and_non_ascii_is_stored_under_that_key(blobs, s3_client):
    key = f"test/blob-store/{uuid.uuid4()}/a key+with~marks é.json.gz"

    blobs.put(key, io.BytesIO(b"x"), {})

    assert s3_client.get_object(Bucket=blobs.bucket, Key=key)["Body"].read() == b"x"


def test_a_body_is_sent_from_where_it_stands_and_its_given_digest_is_the_one_signed(blobs, key):
    body = io.BytesIO(b"header|the blob")
    body.seek(7)

    blobs.put(key, body, {}, sha256=hashlib.sha256(b"the blob").hexdigest())

    assert b"".join(blobs.iter_chunks(key)) == b"the blob"


def test_a_digest_that_is_not_the_body_s_is_refused_by_the_store(blobs, key):
    with pytest.raises(UnavailableError, match="did not store"):
        blobs.put(key, io.BytesIO(b"the blob"), {}, sha256="0" * 64)
    with pytest.raises(BlobMissingError):
        next(blobs.iter_chunks(key))


def test_a_deleted_or_never_stored_blob_is_missing(blobs, key):
    blobs.put(key, io.BytesIO(b"x"), {})
    blobs.delete(key)

    with pytest.raises(BlobMissingError):
        next(blobs.iter_chunks(key))
    blobs.delete(key)  # deleting what is gone is no error


def test_a_wrong_secret_is_unavailable_without_the_secret_in_the_message(blobs, key):
    store = ObjectStoreSettings.from_env()
    wrong = make_blob_store(dataclasses.replace(store, s3_secret_access_key="not-the-secret"), timeout_s=5)

    with pytest.raises(UnavailableError) as refused:
        wrong.put(key, io.BytesIO(b"x"), {})

    assert "403" in str(refused.value) and "not-the-secret" not in str(refused.value)
    with pytest.raises(UnavailableError):
        wrong.ping()
    assert blobs.ping() > 0


def test_an_unreachable_store_is_unavailable_within_the_timeout(key):
    store = dataclasses.replace(ObjectStoreSettings.from_env(), s3_endpoint_url="http://127.0.0.1:1")
    unreachable = make_blob_store(store, timeout_s=1)

    with pytest.raises(UnavailableError, match="failed PUT"):
        unreachable.put(key, io.BytesIO(b"x"), {})
    with pytest.raises(UnavailableError):
        next(unreachable.iter_chunks(key))
