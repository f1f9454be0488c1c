"""The object store's requests: signed exactly as botocore signs them (AWS Signature Version 4), and sent once more
after a lost connection or a 5xx."""

from __future__ import annotations

import hashlib
import io
from datetime import datetime, timezone

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
import urllib3

from easysmart.errors import UnavailableError
from easysmart.s3http import EMPTY_PAYLOAD_SHA256, S3Http

MOMENT = datetime(2026, 12, 2, 5, 30, 15, tzinfo=timezone.utc)
ENDPOINT = "http://127.0.0.1:59000"


KEY_ID, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def client(endpoint: str = ENDPOINT) -> S3Http:
    return S3Http(endpoint, KEY_ID, SECRET, "us-east-1", 5.0, now=lambda: MOMENT)


def botocore_authorization(
    monkeypatch: pytest.MonkeyPatch, method: str, url: str, headers: dict[str, str], body: bytes = b""
) -> str:
    """The Authorization botocore gives the request (it hashes the body itself)."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: MOMENT.replace(tzinfo=None))
    request = botocore.awsrequest.AWSRequest(method=method, url=url, headers={**headers}, data=body)
    credentials = botocore.credentials.Credentials(KEY_ID, SECRET)
    botocore.auth.S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
    return request.headers["Authorization"]


@pytest.mark.parametrize(
    ("method", "key", "headers"),
    [
        (
            "PUT",
            "raw/2026/12/02/0b6f/batch.json.gz",
            {
                "content-type": "application/json",
                "content-encoding": "gzip",
                "x-amz-meta-tenant-id": "0b6f",
                "x-amz-meta-request-id": "  spaced   out id ",
            },
        ),
        ("GET", "raw/2026/12/02/a key with spaces+and~marks/é.json.gz", {}),
        ("DELETE", "raw/x.json.gz", {}),
        ("HEAD", "", {}),
    ],
)
def test_a_request_is_signed_as_botocore_signs_it(monkeypatch, method, key, headers):
    s3 = client()
    body = b"the body" if method == "PUT" else b""
    path = s3.path("telemetry-raw", key)

    signed = s3.sign(method, path, headers, hashlib.sha256(body).hexdigest())

    assert signed["authorization"] == botocore_authorization(monkeypatch, method, ENDPOINT + path, headers, body)
    assert signed["x-amz-date"] == "20261202T053015Z"


def test_an_endpoint_with_a_path_prefix_keeps_it_in_every_url(monkeypatch):
    s3 = client("https://store.example.com:9443/s3/")
    path = s3.path("telemetry-raw", "raw/k")

    signed = s3.sign("GET", path, {}, EMPTY_PAYLOAD_SHA256)

    assert path == "/s3/telemetry-raw/raw/k"
    assert signed["host"] == "store.example.com:9443"
    expected = botocore_authorization(monkeypatch, "GET", "https://store.example.com:9443" + path, {})
    assert signed["authorization"] == expected


def test_an_endpoint_that_is_not_an_http_url_is_refused_at_start():
    with pytest.raises(ValueError, match="not an http"):
        S3Http("127.0.0.1:59000", "key", "secret", "us-east-1", 5.0)


class FlakyPool:
    """Stands in for the connection pool: each call's answer in turn (an exception is raised), the bodies it read."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.bodies: list[bytes] = []

    def urlopen(self, method: str, path: str, body=None, **request: object) -> urllib3.HTTPResponse:
        self.bodies.append(body.read() if body is not None else b"")
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return urllib3.HTTPResponse(
            body=io.BytesIO(b"<Error><Code>SlowDown</Code></Error>"), status=answer, preload_content=False
        )


def test_a_lost_connection_or_a_5xx_is_sent_once_more_with_the_body_from_where_it_stood():
    s3 = client()
    s3._pool = FlakyPool(urllib3.exceptions.ProtocolError("connection reset"), 200)  # type: ignore[assignment]
    body = io.BytesIO(b"head|blob")
    body.seek(5)

    assert s3.call("PUT", "telemetry-raw", "k", body=body).status == 200
    assert s3._pool.bodies == [b"blob", b"blob"]  # type: ignore[attr-defined]

    s3._pool = FlakyPool(503, 503, 200)  # type: ignore[assignment]
    with pytest.raises(UnavailableError, match="failed PUT: it answered 503 SlowDown"):
        s3.call("PUT", "telemetry-raw", "k", body=io.BytesIO(b"blob"))
