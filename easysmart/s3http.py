"""Object store requests signed here (AWS Signature Version 4) and sent over one urllib3 connection pool.

The blob store's hot path: ingest's PUT of every upload and process's GET of every batch. boto3 spends about
0.7 ms of CPU per call in its request pipeline (event hooks, endpoint rules, response parsers), a third of
ingest's CPU per small upload; a path-style PUT, GET, DELETE or HEAD needs none of it. Listings, lifecycle rules
and everything else the retention and collector functions do stay on boto3 (`storage.make_s3_client`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any, Callable, Mapping
from urllib.parse import quote, urlsplit

import urllib3
import urllib3.exceptions

from easysmart.errors import UnavailableError

EMPTY_PAYLOAD_SHA256 = hashlib.sha256(b"").hexdigest()
# Answers worth one more attempt: the store was busy or failed, not the request.
_RETRY_STATUSES = frozenset({500, 502, 503, 504})
_ATTEMPTS = 2  # as the boto3 client is configured (retries max_attempts 2)
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")
_SPACES = re.compile(r"\s+")
_HASH_CHUNK_BYTES = 1024 * 1024
_MAX_ANSWER_BYTES = 64 * 1024


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class S3Http:
    """Signed requests to one S3-compatible endpoint with path-style URLs (`/<bucket>/<key>`).

    Thread-safe: the pool keeps up to max_connections connections (one per thread that calls at once; a thread
    beyond them opens one per call), and every connect and every socket read times out after timeout_s. A
    request that fails to connect, loses its connection or gets a 5xx is sent once more (PUT, GET, DELETE and
    HEAD are idempotent; a body is read again from its start)."""

    def __init__(
        self,
        endpoint_url: str,
        access_key_id: str,
        secret_access_key: str,
        region: str,
        timeout_s: float,
        max_connections: int = 10,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        endpoint = urlsplit(endpoint_url)
        if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
            raise ValueError(f"S3 endpoint {endpoint_url!r} is not an http(s) URL")
        self.host = endpoint.netloc
        self.base_path = endpoint.path.rstrip("/")
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.region = region
        self._now = now
        self._pool = urllib3.connection_from_url(
            f"{endpoint.scheme}://{endpoint.netloc}",
            maxsize=max_connections,
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            retries=False,
        )
        self._signing_keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def path(self, bucket: str, key: str = "") -> str:
        return quote(f"{self.base_path}/{bucket}" + (f"/{key}" if key else ""), safe="/~")

    def call(self, method: str, bucket: str, key: str = "", **request: Any) -> Answer:
        """The store's answer to a request whose answer has no body worth keeping (PUT, DELETE, HEAD); `request` as
        open() takes it."""
        return answer_of(self.open(method, bucket, key, **request))

    def open(
        self,
        method: str,
        bucket: str,
        key: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        body: IO[bytes] | None = None,
        payload_sha256: str | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """The store's answer (any status but a 5xx), its body left to read: the caller releases it (`answer_of`
        or `release`). UnavailableError when no answer could be had.

        A body is sent from its current position to its end; its sha256 is computed unless given."""
        path = self.path(bucket, key)
        sent = {name.lower(): value for name, value in (headers or {}).items()}
        start = body.tell() if body is not None else 0
        if body is not None:
            sent["content-length"] = str(body.seek(0, 2) - start)
            if payload_sha256 is None:
                payload_sha256 = self._sha256_of(body, start)
        failure, cause = "", None
        for _ in range(_ATTEMPTS):
            if body is not None:
                body.seek(start)
            signed = self.sign(method, path, sent, payload_sha256 or EMPTY_PAYLOAD_SHA256)
            try:
                response = self._pool.urlopen(
                    method,
                    path,
                    body=body,
                    headers=signed,
                    retries=False,
                    preload_content=False,
                    decode_content=False,  # a blob is kept as stored (gzip), never inflated here
                    assert_same_host=False,
                )
            except urllib3.exceptions.HTTPError as error:
                failure, cause = str(error), error
                continue
            if response.status in _RETRY_STATUSES:
                failure = f"it answered {answer_of(response)}"
                continue
            return response
        raise UnavailableError(f"the object store failed {method}: {failure}") from cause

    def sign(self, method: str, path: str, headers: Mapping[str, str], payload_sha256: str) -> dict[str, str]:
        """The headers with the SigV4 authorization added: host, content-type, content-encoding and every x-amz-*
        header are signed (S3 requires every x-amz-* header to be)."""
        moment = self._now()
        amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        signed = {**headers, "host": self.host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_sha256}
        names = sorted(
            name for name in signed if name.startswith("x-amz-") or name in ("host", "content-type", "content-encoding")
        )
        canonical_headers = "".join(f"{name}:{_SPACES.sub(' ', signed[name].strip())}\n" for name in names)
        signed_names = ";".join(names)
        canonical_request = f"{method}\n{path}\n\n{canonical_headers}\n{signed_names}\n{payload_sha256}"
        scope = f"{day}/{self.region}/s3/aws4_request"
        string_to_sign = (
            f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"
        )
        signature = hmac.new(self._signing_key(day), string_to_sign.encode(), hashlib.sha256).hexdigest()
        signed["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key_id}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )
        return signed

    def _signing_key(self, day: str) -> bytes:
        # Derived once a day: four HMACs saved on every request.
        key = self._signing_keys.get(day)
        if key is None:
            key = _hmac(
                _hmac(_hmac(_hmac(f"AWS4{self.secret_access_key}".encode(), day), self.region), "s3"), "aws4_request"
            )
            with self._lock:
                self._signing_keys = {day: key}
        return key

    @staticmethod
    def _sha256_of(body: IO[bytes], start: int) -> str:
        digest = hashlib.sha256()
        body.seek(start)
        while chunk := body.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
        return digest.hexdigest()


@dataclass(frozen=True)
class Answer:
    status: int
    code: str  # S3's error code when an error answer names one, else ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def __str__(self) -> str:
        return f"{self.status} {self.code}".rstrip()


def answer_of(response: urllib3.BaseHTTPResponse) -> Answer:
    """The status and error code of an answer, read (at most 64 KiB: an S3 answer without a blob is a short XML
    document) and released."""
    try:
        text = response.read(_MAX_ANSWER_BYTES, decode_content=False)
    except urllib3.exceptions.HTTPError:
        text = b""
    release(response)
    found = _ERROR_CODE.search(text)
    return Answer(response.status, found.group(1).decode(errors="replace") if found else "")


def release(response: urllib3.BaseHTTPResponse) -> None:
    """Back to the pool when it was read to its end; else its connection is closed (never reused mid-answer)."""
    if response.length_remaining == 0:
        response.release_conn()
    else:
        response.close()
