"""Health answers, metrics, and the dead-letter path of a permanently bad claim check."""

import base64
import os
import uuid
from datetime import datetime, timezone

import kafka
import requests
from support.stack import BASE_URL, new_tenant, query_one, signed_for_stack, wait_until

from easysmart.events import ClaimCheck, to_kafka


def test_liveness_and_detailed_health_check_every_backing_service():
    assert requests.get(f"{BASE_URL}/api/v1/health", timeout=10).json() == {"status": "ok"}
    # The detailed checks are for the platform and operators: on ingest's own port, not through the front door.
    assert requests.get(f"{BASE_URL}/api/v1/health/detailed", timeout=10).status_code == 404
    detailed = requests.get(f"http://127.0.0.1:{os.environ['INGEST_PORT']}/api/v1/health/detailed", timeout=30)
    assert detailed.status_code == 200
    checks = detailed.json()["checks"]
    assert set(checks) == {"database", "redis", "object_store", "kafka"}
    assert all(check["status"] == "ok" and check["latency_ms"] >= 0 for check in checks.values())


def test_every_function_serves_prometheus_metrics():
    for name in ("AUTH_PORT", "INGEST_PORT", "PROCESS_PORT"):
        response = requests.get(f"http://127.0.0.1:{os.environ[name]}/metrics", timeout=10)
        assert response.status_code == 200
        assert "esm_http_requests_total" in response.text


def test_unknown_path_gets_a_json_404_from_the_front_door():
    response = requests.get(f"{BASE_URL}/api/v1/nothing-here", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_a_path_cannot_inject_keys_into_the_front_doors_error_body():
    response = requests.get(f"{BASE_URL}/x%22,%22injected%22:true,%22a%22:%22", timeout=10)
    assert response.status_code == 404
    assert set(response.json()) == {"error", "message"}


def _dlq_records_with_id(event_id: str) -> list:
    consumer = kafka.KafkaConsumer(
        "telemetry.dlq",
        bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"].split(","),
        group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    try:
        return [r for r in consumer if dict(r.headers).get("ce_id") == event_id.encode()]
    finally:
        consumer.close()


def test_a_claim_check_pointing_at_a_missing_blob_is_failed_and_dead_lettered():
    tenant = new_tenant()
    tenant_id, account_id = query_one(
        "SELECT a.tenant_id, a.id FROM accounts a WHERE a.username = %s", (tenant.device,)
    )
    claim = ClaimCheck(
        str(uuid.uuid4()),
        str(tenant_id),
        str(account_id),
        tenant.device,
        "telemetry-raw",
        f"raw/missing/{uuid.uuid4()}.json.gz",
        100,
        1000,
        "00" * 32,
        "gzip",
        1,
        1,
        "test",
        datetime.now(timezone.utc).isoformat(),
    )
    message = to_kafka(signed_for_stack(claim))
    producer = kafka.KafkaProducer(bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"].split(","), acks="all")
    producer.send(
        "telemetry.raw", key=message.key.encode(), value=message.value, headers=list(message.headers.items())
    ).get(timeout=10)
    producer.close()
    records = wait_until(
        lambda: _dlq_records_with_id(claim.batch_id), timeout=60, interval=1, message="the dead letter"
    )
    headers = dict(records[0].headers)
    assert headers["ce_knativeerrorcode"] == b"422"
    assert b"does not exist" in base64.b64decode(headers["ce_knativeerrordata"])
    status = query_one("SELECT status FROM batches WHERE id = %s", (claim.batch_id,))[0]
    assert status == "failed"
