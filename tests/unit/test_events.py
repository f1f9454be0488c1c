import base64
import dataclasses

import orjson
import pytest
from cloudevents.conversion import to_structured
from support.claims import ACCOUNT_ID, CLAIM, TENANT_ID, stored_event_row

from easysmart.bridges.outbox_relay import to_kafka as outbox_record
from easysmart.bridges.ping_source import ping_headers
from easysmart.events import (
    InvalidClaimCheckError,
    InvalidCloudEventError,
    NotBinaryCloudEventError,
    cloudevent_from_http,
    from_cloudevent,
    from_http_request,
    from_kafka,
    kafka_to_http_headers,
    to_cloudevent,
    to_http,
    to_kafka,
)


def test_kafka_binary_mode_round_trip_keeps_id_type_source_and_key():
    message = to_kafka(CLAIM)
    assert message.key == f"{TENANT_ID}:{ACCOUNT_ID}"
    assert message.headers["ce_id"] == CLAIM.batch_id.encode()
    event = from_kafka(message.headers, message.key, message.value)
    assert (event["id"], event["source"]) == (CLAIM.batch_id, "/easysmart/ingest")
    assert from_cloudevent(event) == CLAIM


def sdk_http(headers: list, key: bytes, value: bytes) -> tuple[dict, bytes]:
    """The Kafka record to HTTP through the cloudevents SDK, header values as they go on the wire."""
    http, body = to_http(from_kafka(dict(headers), key, value))
    return {name: v.decode("latin-1") if isinstance(v, bytes) else v for name, v in http.items()}, body


def test_a_kafka_record_gets_the_http_headers_and_body_the_sdk_round_trip_gives():
    traced = dataclasses.replace(CLAIM, traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    message = to_kafka(traced)
    headers, key = list(message.headers.items()), message.key.encode()

    http = kafka_to_http_headers(headers, key, message.value)

    assert (http, message.value) == sdk_http(headers, key, message.value)
    assert http["ce-traceparent"] == traced.traceparent
    assert from_cloudevent(from_http_request(http, message.value)) == traced


def test_an_outbox_event_gets_the_http_headers_the_sdk_round_trip_gives():
    row = stored_event_row()
    message = outbox_record(row)
    headers, key = list(message.headers.items()), message.key.encode()

    assert kafka_to_http_headers(headers, key, message.value) == sdk_http(headers, key, message.value)[0]


@pytest.mark.parametrize(
    "drop, value, reason",
    [
        ("ce_id", b"{}", "no ce_id header"),
        ("ce_type", b"{}", "no ce_type header"),
        (None, b"not json", "not a binary-mode CloudEvent"),
        (None, None, "not a binary-mode CloudEvent"),
    ],
)
def test_a_kafka_record_that_is_not_a_binary_mode_cloudevent_is_refused_saying_why(drop, value, reason):
    headers = [(name, raw) for name, raw in to_kafka(CLAIM).headers.items() if name != drop]

    with pytest.raises(NotBinaryCloudEventError, match=reason):
        kafka_to_http_headers(headers, None, value)


def test_http_binary_mode_round_trip():
    headers, body = to_http(to_cloudevent(CLAIM))
    assert headers["ce-id"] == CLAIM.batch_id
    assert from_cloudevent(from_http_request(headers, body)) == CLAIM


def test_a_plain_post_of_the_claim_check_is_accepted_too():
    _, body = to_http(to_cloudevent(CLAIM))
    assert from_cloudevent(from_http_request({"Content-Type": "application/json"}, body)) == CLAIM


def _claim_with(**changes: object) -> bytes:
    _, body = to_http(to_cloudevent(CLAIM))
    return orjson.dumps({**orjson.loads(body), **changes})


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"batch_id": "x"}',
        _claim_with(tenant_id="t-1"),
        _claim_with(batch_id="'; DROP"),
        _claim_with(size_bytes=-1),
        _claim_with(size_bytes=True),
        _claim_with(key="k" * 2000),
        _claim_with(key=None),
        _claim_with(received_at="yesterday"),
        _claim_with(items="3"),
    ],
)
def test_invalid_claim_checks_are_400(body):
    with pytest.raises(InvalidClaimCheckError) as caught:
        from_http_request({"Content-Type": "application/json"}, body)
    assert caught.value.status == 400


PING = {
    "ce-specversion": "1.0",
    "ce-type": "dev.knative.sources.ping",
    "ce-id": "p-1",
    "ce-source": "/apis/v1/namespaces/default/pingsources/retention-refresh",
}
STRUCTURED = {"Content-Type": "application/cloudevents+json; charset=utf-8"}


def structured(**fields) -> bytes:
    attributes = {"specversion": "1.0", "type": "dev.knative.sources.ping", "id": "p-1", "source": "/s"}
    return orjson.dumps({**attributes, **fields})


def test_a_binary_mode_event_keeps_its_attributes_and_decodes_its_json_data():
    event = cloudevent_from_http({**PING, "Content-Type": "application/json"}, b'{"job": "refresh"}')
    assert (event["id"], event["type"]) == ("p-1", "dev.knative.sources.ping")
    assert event.get_data() == {"job": "refresh"}


def test_the_ping_source_bridge_sends_what_the_reader_reads():
    event = cloudevent_from_http(ping_headers("retention-expire", event_id="p-2"), orjson.dumps({"job": "expire"}))
    assert (event["id"], event.get_data()) == ("p-2", {"job": "expire"})


@pytest.mark.parametrize("body", [b"", b"  \n"])
def test_a_binary_mode_event_without_data_has_none(body):
    assert cloudevent_from_http(PING, body).get_data() is None


@pytest.mark.parametrize(
    "body, data",
    [
        (structured(data={"job": "expire"}), {"job": "expire"}),
        (structured(data_base64=base64.b64encode(b'{"job": "all"}').decode()), {"job": "all"}),
        (structured(data=None), None),
        (structured(), None),
    ],
)
def test_a_structured_mode_event_gives_its_data_inline_or_base64(body, data):
    event = cloudevent_from_http(STRUCTURED, body)
    assert event["id"] == "p-1"
    assert event.get_data() == data


def test_a_structured_mode_claim_check_is_read_like_a_binary_one():
    headers, body = to_structured(to_cloudevent(CLAIM), data_marshaller=orjson.dumps)
    assert from_cloudevent(from_http_request(headers, body)) == CLAIM


@pytest.mark.parametrize("headers", [{}, {"Content-Type": "application/json"}, {"ce-type": "only-a-type"}])
def test_a_request_without_cloudevent_headers_is_not_an_event(headers):
    assert cloudevent_from_http(headers, b'{"job": "refresh"}') is None


@pytest.mark.parametrize(
    "headers, body",
    [
        ({k: v for k, v in PING.items() if k != "ce-source"}, b""),  # a required attribute missing
        ({**PING, "ce-specversion": "0.1"}, b""),
        ({**PING, "Content-Type": "application/json"}, b"not json"),
        (STRUCTURED, b"not json"),
        (STRUCTURED, orjson.dumps({"id": "p-1", "data": {}})),
    ],
)
def test_a_malformed_cloudevent_is_400_saying_so(headers, body):
    with pytest.raises(InvalidCloudEventError) as caught:
        cloudevent_from_http(headers, body)
    assert caught.value.status == 400
    assert str(caught.value).startswith("not a valid CloudEvent")
