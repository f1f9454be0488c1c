import pytest

from easysmart.events import InvalidClaimCheckError, from_cloudevent, from_http_request, from_kafka, to_cloudevent, to_http, to_kafka
from support.claims import CLAIM


def test_kafka_binary_mode_round_trip_keeps_id_type_source_and_key():
    message = to_kafka(CLAIM)
    assert message.key == "t-1:a-1"
    assert message.headers["ce_id"] == CLAIM.batch_id.encode()
    event = from_kafka(message.headers, message.key, message.value)
    assert (event["id"], event["source"]) == (CLAIM.batch_id, "/easysmart/ingest")
    assert from_cloudevent(event) == CLAIM


def test_http_binary_mode_round_trip():
    headers, body = to_http(to_cloudevent(CLAIM))
    assert headers["ce-id"] == CLAIM.batch_id
    assert from_cloudevent(from_http_request(headers, body)) == CLAIM


def test_a_plain_post_of_the_claim_check_is_accepted_too():
    _, body = to_http(to_cloudevent(CLAIM))
    assert from_cloudevent(from_http_request({"Content-Type": "application/json"}, body)) == CLAIM


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"batch_id": "x"}'])
def test_invalid_claim_checks_are_400(body):
    with pytest.raises(InvalidClaimCheckError) as caught:
        from_http_request({"Content-Type": "application/json"}, body)
    assert caught.value.status == 400
