"""The upload contract of the real Home Assistant client, through the public URL."""

import gzip
import os

import orjson
import pytest
import requests
from support.samples import recent_sample
from support.stack import BASE_URL, batch, new_tenant, query_one, signed_for_stack, stored_rows, upload, wait_for_batch

from easysmart.events import ClaimCheck, to_cloudevent, to_http

PROCESS_URL = os.environ.get("PROCESS_URL", "http://127.0.0.1:8083/")


@pytest.fixture(scope="module")
def tenant():
    return new_tenant()


@pytest.mark.parametrize(
    "sample, stored, skipped",
    [
        ("ha-bulk-small.json", 40, 0),
        ("ha-bulk-mixed.json", 57, 2),
        ("ha-bulk-legacy.json", 2, 0),
    ],
)
def test_each_sample_is_stored_with_its_documented_counts(sample, stored, skipped):
    fresh = new_tenant()
    token = fresh.device_token()
    response = upload(token, recent_sample(sample))
    assert response.status_code == 201, response.text
    status = wait_for_batch(token, response.json()["batch_id"])
    assert (status["status"], status["stored"], status["skipped"], status["rejected"]) == ("done", stored, skipped, 0)
    assert stored_rows(fresh.name) == stored


def test_real_client_sequence_login_then_gzip_upload_answers_201_with_location(tenant):
    login = requests.post(
        f"{BASE_URL}/api/v1/auth/device/login",
        json={"username": tenant.device, "password": tenant.device_password},
        timeout=10,
    )
    assert login.status_code == 200
    token = login.json()["access_token"]
    items = recent_sample("ha-bulk-small.json", hours_ago=5)
    body = gzip.compress(orjson.dumps(items))
    response = requests.post(
        f"{BASE_URL}/api/v1/telemetry/bulk",
        data=body,
        timeout=30,
        headers={"Authorization": f"Bearer {token}", "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 201
    answer = response.json()
    assert response.headers["Location"] == f"/api/v1/telemetry/batches/{answer['batch_id']}"
    assert (answer["received"], answer["readings"]) == (1, 40)
    assert wait_for_batch(token, answer["batch_id"])["stored"] == 40


def test_alias_path_and_plain_json_are_accepted():
    fresh = new_tenant()
    token = fresh.device_token()
    response = requests.post(
        f"{BASE_URL}/api/v1/telemetria/bulk",
        data=orjson.dumps(recent_sample("ha-bulk-legacy.json")),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 201
    assert wait_for_batch(token, response.json()["batch_id"])["stored"] == 2


def test_prefer_respond_async_answers_202():
    fresh = new_tenant()
    response = upload(fresh.device_token(), recent_sample("ha-bulk-legacy.json"), Prefer="respond-async")
    assert response.status_code == 202
    assert "Location" in response.headers


def test_resent_upload_and_redelivered_claim_check_store_nothing_twice():
    fresh = new_tenant()
    token = fresh.device_token()
    items = recent_sample("ha-bulk-mixed.json", hours_ago=2)
    first = upload(token, items)
    assert first.status_code == 201
    done = wait_for_batch(token, first.json()["batch_id"])
    assert done["stored"] == 57
    for _ in range(3):
        again = upload(token, items)
        assert again.status_code == 201
        assert again.json()["batch_id"] == first.json()["batch_id"]
    # Redeliver the same claim check straight to process, as a KafkaSource would.
    tenant_id, account_id, sha, bucket, key, size, decompressed, received_at = query_one(
        "SELECT tenant_id, account_id, sha256, bucket, object_key, size_bytes, decompressed_bytes, received_at"
        " FROM batches WHERE id = %s",
        (first.json()["batch_id"],),
    )
    claim = ClaimCheck(
        first.json()["batch_id"],
        str(tenant_id),
        str(account_id),
        fresh.device,
        bucket,
        key,
        size,
        decompressed,
        sha,
        "gzip",
        2,
        59,
        "redelivery",
        received_at.isoformat(),
    )
    headers, body = to_http(to_cloudevent(signed_for_stack(claim)))
    redelivered = requests.post(PROCESS_URL, data=body, headers=headers, timeout=30)
    assert redelivered.status_code == 200
    assert redelivered.json()["redelivery"] is True
    assert stored_rows(fresh.name) == 57


def test_same_readings_in_a_different_upload_are_counted_duplicate():
    fresh = new_tenant()
    token = fresh.device_token()
    items = recent_sample("ha-bulk-small.json", hours_ago=4)
    assert wait_for_batch(token, upload(token, items).json()["batch_id"])["stored"] == 40
    items[0]["equip_nome"] = "Renamed"  # a different upload holding the same readings
    second = wait_for_batch(token, upload(token, items).json()["batch_id"])
    assert (second["stored"], second["duplicate"]) == (0, 40)
    assert stored_rows(fresh.name) == 40


def test_bad_readings_are_counted_with_reasons_and_do_not_refuse_the_upload():
    fresh = new_tenant()
    token = fresh.device_token()
    items = recent_sample("ha-bulk-small.json", hours_ago=1)
    readings = items[0]["sensor"]
    readings[0]["sensor_telemetria"] = "NaN"
    readings[1]["sensor_datahora_coleta"] = "2026-13-45T99:99"
    readings[2]["sensor_datahora_coleta"] = "2001-01-01T00:00:00"
    del readings[3]["sensor_uuid"]
    response = upload(token, items)
    assert response.status_code == 201
    status = wait_for_batch(token, response.json()["batch_id"])
    assert (status["stored"], status["rejected"]) == (36, 4)
    paths = {reason["path"] for reason in status["reasons"]}
    assert paths == {"[0].sensor[0]", "[0].sensor[1]", "[0].sensor[2]", "[0].sensor[3]"}
    assert any("not a finite number" in r for r in status["reason_counts"])


def test_truncated_gzip_is_400():
    fresh = new_tenant()
    body = gzip.compress(orjson.dumps(recent_sample("ha-bulk-small.json")))[:-30]
    response = requests.post(
        f"{BASE_URL}/api/v1/telemetry/bulk",
        data=body,
        timeout=30,
        headers={"Authorization": f"Bearer {fresh.device_token()}", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_gzip"


def test_invalid_json_is_400():
    fresh = new_tenant()
    response = requests.post(
        f"{BASE_URL}/api/v1/telemetry/bulk",
        data=gzip.compress(b'[{"equip_uuid": "x", '),
        timeout=30,
        headers={"Authorization": f"Bearer {fresh.device_token()}", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["message"]


def test_structure_violations_are_422_listing_each_path():
    fresh = new_tenant()
    items = recent_sample("ha-bulk-small.json")
    items += [
        {"equip_nome": "no uuid", "sensor": items[0]["sensor"][:1]},
        {"equip_uuid": "x"},
        {"equip_uuid": "y", "sensor": []},
    ]
    response = upload(fresh.device_token(), items)
    assert response.status_code == 422
    assert response.json()["paths"] == ["[1].equip_uuid", "[2].sensor", "[3].sensor"]


def test_a_body_over_the_limit_gets_ingest_413_through_the_front_door():
    fresh = new_tenant()
    response = requests.post(
        f"{BASE_URL}/api/v1/telemetry/bulk",
        data=os.urandom(11 * 1024 * 1024),
        timeout=60,
        headers={"Authorization": f"Bearer {fresh.device_token()}", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_another_tenants_batch_is_404(tenant):
    other = new_tenant()
    token = tenant.device_token()
    response = upload(token, recent_sample("ha-bulk-legacy.json", hours_ago=7))
    batch_id = response.json()["batch_id"]
    assert batch(other.device_token(), batch_id).status_code == 404
    assert batch(tenant.user_token(), batch_id).status_code == 200
