"""The claim check: a small CloudEvent pointing at an upload's blob, and its transport adapters.

ClaimCheck is a plain value; to_kafka/from_kafka and to_http/from_http_request convert it with the
cloudevents SDK (binary content mode, so a Knative KafkaSource keeps id, type and source);
kafka_to_http_headers maps a binary-mode Kafka record's headers to HTTP ones for the kafka-source bridge.
cloudevent_from_http is the one reader of CloudEvents arriving over HTTP (binary or structured
mode), for every function that receives them. Attributes and data: docs/architecture.md §3.2, §3.10.
"""

from __future__ import annotations

import uuid
from dataclasses import MISSING, dataclass, fields
from datetime import datetime
from typing import Iterable, Mapping

import orjson
from cloudevents.conversion import to_binary as _to_http_binary
from cloudevents.http import CloudEvent
from cloudevents.http import from_http as _from_http
from cloudevents.kafka import KafkaMessage
from cloudevents.kafka import from_binary as _from_kafka_binary
from cloudevents.kafka import to_binary as _to_kafka_binary

from easysmart.errors import BadRequestError

CLAIM_CHECK_TYPE = "com.easysmart.telemetry.batch.received.v1"
CLAIM_CHECK_SOURCE = "/easysmart/ingest"

# A dead-lettered record keeps its CloudEvent headers and gains Knative's error extensions (as Kafka
# binary-mode headers) and where it was consumed from; a replay removes all four.
ERROR_CODE_HEADER = "ce_knativeerrorcode"  # the sink's HTTP status, 0 when it could not be reached
ERROR_DATA_HEADER = "ce_knativeerrordata"  # the sink's answer or the network error, base64
ERROR_DEST_HEADER = "ce_knativeerrordest"  # the sink's URL
DLQ_SOURCE_HEADER = "dlq_source"  # topic/partition/offset
DLQ_ERROR_HEADERS = (ERROR_CODE_HEADER, ERROR_DATA_HEADER, ERROR_DEST_HEADER)


class InvalidClaimCheckError(BadRequestError):
    code = "invalid_claim_check"


# The claim check's ids go into uuid columns and its strings into the ledger: checked before either.
_UUID_FIELDS = ("batch_id", "tenant_id", "account_id")
_MAX_FIELD_CHARS = 1024


@dataclass(frozen=True)
class ClaimCheck:
    batch_id: str
    tenant_id: str
    account_id: str
    device: str
    bucket: str
    key: str
    size_bytes: int
    decompressed_bytes: int | None  # None: ingest did not read the whole upload
    sha256: str
    content_encoding: str
    items: int | None
    readings: int | None
    request_id: str
    received_at: str
    traceparent: str | None = None
    # Set by ingest (easysmart.claimsig), checked by process: which key signed the fields above, and the HMAC.
    signing_key_id: str | None = None
    signature: str | None = None

    @property
    def partition_key(self) -> str:
        # Per-device order on one partition.
        return f"{self.tenant_id}:{self.account_id}"

    @classmethod
    def from_data(cls, data: object) -> "ClaimCheck":
        if isinstance(data, (bytes, str)):
            try:
                data = orjson.loads(data)
            except orjson.JSONDecodeError as error:
                raise InvalidClaimCheckError(f"claim check data is not JSON: {error}") from None
        if not isinstance(data, dict):
            raise InvalidClaimCheckError("claim check data must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        missing = [name for name, f in known.items() if f.default is MISSING and name not in data]
        if missing:
            raise InvalidClaimCheckError(f"claim check is missing {', '.join(sorted(missing))}")
        values = {name: data.get(name) for name in known}
        for name in ("size_bytes", "decompressed_bytes", "items", "readings"):
            value = values[name]
            if value is None and name != "size_bytes":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
                raise InvalidClaimCheckError(f"claim check field {name} must be a non-negative integer")
        for name in (
            "device",
            "bucket",
            "key",
            "sha256",
            "content_encoding",
            "request_id",
            "received_at",
            "traceparent",
            "signing_key_id",
            "signature",
            *_UUID_FIELDS,
        ):
            value = values[name]
            if value is None and known[name].default is None:
                continue
            if not isinstance(value, str) or not 0 < len(value) <= _MAX_FIELD_CHARS:
                raise InvalidClaimCheckError(
                    f"claim check field {name} must be a string of 1 to {_MAX_FIELD_CHARS} characters"
                )
        for name in _UUID_FIELDS:
            try:
                uuid.UUID(values[name])
            except ValueError:
                raise InvalidClaimCheckError(f"claim check field {name} must be a UUID") from None
        try:
            datetime.fromisoformat(str(values["received_at"]))
        except ValueError:
            raise InvalidClaimCheckError("claim check field received_at must be an ISO-8601 time") from None
        return cls(**values)  # type: ignore[arg-type]  # every field's type was checked above


_CLAIM_FIELDS = fields(ClaimCheck)


def to_cloudevent(claim: ClaimCheck) -> CloudEvent:
    attributes = {
        "id": claim.batch_id,
        "type": CLAIM_CHECK_TYPE,
        "source": CLAIM_CHECK_SOURCE,
        "subject": f"tenants/{claim.tenant_id}/devices/{claim.account_id}",
        "datacontenttype": "application/json",
        "time": claim.received_at,
        "partitionkey": claim.partition_key,
    }
    if claim.traceparent:
        attributes["traceparent"] = claim.traceparent
    # Every field is a str, an int or None: a shallow dict (dataclasses.asdict deep-copies each value).
    return CloudEvent(attributes, {field.name: getattr(claim, field.name) for field in _CLAIM_FIELDS})


def from_cloudevent(event: CloudEvent) -> ClaimCheck:
    if event["type"] != CLAIM_CHECK_TYPE:
        raise InvalidClaimCheckError(f"unexpected event type {event['type']!r}; expected {CLAIM_CHECK_TYPE}")
    claim = ClaimCheck.from_data(event.get_data())
    if claim.batch_id != event["id"]:
        raise InvalidClaimCheckError("claim check batch_id does not match the event id")
    return claim


def _marshal(data: object) -> bytes:
    return orjson.dumps(data)


def to_kafka(claim: ClaimCheck) -> KafkaMessage:
    return _to_kafka_binary(to_cloudevent(claim), data_marshaller=_marshal)


def from_kafka(headers: Mapping[str, bytes], key: bytes | str | None, value: bytes) -> CloudEvent:
    return _from_kafka_binary(KafkaMessage(dict(headers), key, value), data_unmarshaller=orjson.loads)


def to_http(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    headers, body = _to_http_binary(event, data_marshaller=_marshal)
    return headers, body


class NotBinaryCloudEventError(BadRequestError):
    code = "not_binary_cloudevent"


# The context attributes without which a record is not a CloudEvent (CloudEvents 1.0 and 0.3 alike).
_REQUIRED_KAFKA_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type")


def kafka_to_http_headers(
    headers: Iterable[tuple[str, bytes | None]], key: bytes | None, value: bytes | None
) -> dict[str, str]:
    """The binary-mode HTTP headers of a binary-mode Kafka record, whose value is POSTed as it is: what
    to_http(from_kafka(...)) gives (every ce_ header as ce-, content-type, the key as ce-partitionkey; the same
    bytes on the wire) without the SDK's event objects or its parsing and re-serialising of the data (23 -> 4 us
    per record). NotBinaryCloudEventError when a context attribute is missing or the data is not JSON."""
    http: dict[str, str] = {}
    try:
        for name, raw in headers:
            lowered = name.lower()
            if lowered.startswith("ce_"):
                http[f"ce-{lowered[3:]}"] = (raw or b"").decode()
            elif lowered == "content-type":
                http["content-type"] = (raw or b"").decode()
        orjson.loads(value)  # type: ignore[arg-type]  # None is refused like any other non-JSON value
    except (UnicodeDecodeError, orjson.JSONDecodeError, TypeError) as error:
        raise NotBinaryCloudEventError(f"not a binary-mode CloudEvent: {error}") from None
    missing = [name for name in _REQUIRED_KAFKA_HEADERS if not http.get(f"ce-{name[3:]}")]
    if missing:
        raise NotBinaryCloudEventError(f"not a binary-mode CloudEvent: no {', '.join(missing)} header")
    if http["ce-specversion"] not in ("1.0", "0.3"):
        raise NotBinaryCloudEventError(f"not a binary-mode CloudEvent: specversion {http['ce-specversion']!r}")
    if key is not None:
        http["ce-partitionkey"] = key.decode("latin-1")  # sent as latin-1: the key's bytes as they are
    return http


class InvalidCloudEventError(BadRequestError):
    code = "invalid_cloudevent"


def is_cloudevent(headers: Mapping[str, str]) -> bool:
    """Whether an HTTP request says it carries a CloudEvent: ce-* attributes (binary mode) or a
    cloudevents content type (structured mode)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return (
        "ce-id" in lowered
        or "ce-specversion" in lowered
        or lowered.get("content-type", "").startswith("application/cloudevents")
    )


def _unmarshal(raw: bytes | str) -> object:
    # A binary-mode event may have no data at all (a PingSource without data).
    return orjson.loads(raw) if raw.strip() else None


def cloudevent_from_http(headers: Mapping[str, str], body: bytes) -> CloudEvent | None:
    """The CloudEvent an HTTP request carries in binary or structured mode, its data decoded from
    JSON (None when it has none); None when the request is not a CloudEvent."""
    if not is_cloudevent(headers):
        return None
    try:
        return _from_http(dict(headers), body, data_unmarshaller=_unmarshal)
    except Exception as error:  # the SDK raises several unrelated types
        raise InvalidCloudEventError(f"not a valid CloudEvent: {error}") from error


def from_http_request(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """A claim-check CloudEvent from an HTTP request in binary or structured mode.

    A plain POST whose body is the claim check itself (an OpenFaaS connector) becomes one too.
    """
    event = cloudevent_from_http(headers, body)
    if event is not None:
        return event
    return to_cloudevent(ClaimCheck.from_data(body))
