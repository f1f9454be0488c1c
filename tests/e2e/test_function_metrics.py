"""After an upload in a fresh tenant, ingest's, process's and auth's /metrics (scraped on each function's own port, as
Prometheus does) moved by exactly what the upload and its logins did."""

from __future__ import annotations

import gzip
import os

import orjson
import requests
from prometheus_client.parser import text_string_to_metric_families
from support.samples import recent_sample
from support.stack import BASE_URL, login, new_tenant, wait_for_batch, wait_until

Samples = dict[tuple[str, frozenset], float]


def scrape(port_variable: str) -> Samples:
    """Every sample a function exports, by name and labels (its port as infra/local/local.env sets it)."""
    response = requests.get(f"http://127.0.0.1:{os.environ[port_variable]}/metrics", timeout=10)
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def scrape_once_counted_done(before: Samples) -> Samples:
    """Process's samples once it counted a batch done: it counts right after its commit, which the batch's status
    shows a moment before."""

    def counted() -> Samples | None:
        samples = scrape("PROCESS_PORT")
        return samples if moved(before, samples, "esm_process_batches_total", outcome="done") else None

    return wait_until(counted, 10, interval=0.1, message="process counted the batch done")


def test_an_upload_moves_the_counters_of_ingest_process_and_auth_by_what_it_did():
    tenant = new_tenant()
    auth_before = scrape("AUTH_PORT")
    pair = login(tenant.device, tenant.device_password)
    refused = requests.post(
        f"{BASE_URL}/api/v1/auth/device/login", json={"username": tenant.device, "password": "wrong"}, timeout=10
    )
    refreshed = requests.post(
        f"{BASE_URL}/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}, timeout=10
    )
    auth_after = scrape("AUTH_PORT")
    assert (refused.status_code, refreshed.status_code) == (401, 200)

    items = recent_sample("ha-bulk-small.json")  # 40 readings
    text = orjson.dumps(items)
    body = gzip.compress(text)
    ingest_before, process_before = scrape("INGEST_PORT"), scrape("PROCESS_PORT")
    response = requests.post(
        f"{BASE_URL}/api/v1/telemetry/bulk",
        data=body,
        headers={
            "Authorization": f"Bearer {pair['access_token']}",
            "Content-Encoding": "gzip",
            "Content-Type": "application/json",
        },
        timeout=30,
    )
    assert response.status_code == 201, response.text
    assert wait_for_batch(pair["access_token"], response.json()["batch_id"])["stored"] == 40
    ingest_after = scrape("INGEST_PORT")
    process_after = scrape_once_counted_done(process_before)

    auth = {
        "logins success": moved(auth_before, auth_after, "esm_auth_logins_total", outcome="success"),
        "logins failure": moved(auth_before, auth_after, "esm_auth_logins_total", outcome="failure"),
        "refreshes success": moved(auth_before, auth_after, "esm_auth_refreshes_total", outcome="success"),
        "lockouts": moved(auth_before, auth_after, "esm_auth_lockouts_total"),
    }
    assert auth == {"logins success": 1, "logins failure": 1, "refreshes success": 1, "lockouts": 0}

    def ingest(name: str, **labels: str) -> float:
        return moved(ingest_before, ingest_after, name, **labels)

    assert {
        "accepted": ingest("esm_ingest_uploads_total", outcome="accepted"),
        "duplicate": ingest("esm_ingest_uploads_total", outcome="duplicate"),
        "received bytes": ingest("esm_ingest_received_bytes_total"),
        "decompressed bytes": ingest("esm_ingest_decompressed_bytes_total"),
        "window parses": ingest("esm_ingest_sync_window_parse_seconds_count"),
        "blob puts": ingest("esm_object_store_request_seconds_count", operation="put"),
        "kafka publishes": ingest("esm_kafka_publish_seconds_count"),
        "201 answers": ingest(
            "esm_http_requests_total", function="ingest", route="/api/v1/telemetry/bulk", status="201"
        ),
    } == {
        "accepted": 1,
        "duplicate": 0,
        "received bytes": len(body),
        "decompressed bytes": len(text),
        "window parses": 1,
        "blob puts": 1,
        "kafka publishes": 1,
        "201 answers": 1,
    }

    def process(name: str, **labels: str) -> float:
        return moved(process_before, process_after, name, **labels)

    assert {
        "done": process("esm_process_batches_total", outcome="done"),
        "failed": process("esm_process_batches_total", outcome="failed"),
        "stored": process("esm_process_readings_total", outcome="stored"),
        "durations": process("esm_process_batch_duration_seconds_count"),
        "readings observed": process("esm_process_batch_readings_sum"),
        "bytes observed": process("esm_process_batch_decompressed_bytes_sum"),
        "delays": process("esm_process_end_to_end_delay_seconds_count"),
        "blob gets": process("esm_object_store_request_seconds_count", operation="get"),
        "redeliveries": process("esm_process_redeliveries_total"),
    } == {
        "done": 1,
        "failed": 0,
        "stored": 40,
        "durations": 1,
        "readings observed": 40,
        "bytes observed": len(text),
        "delays": 1,
        "blob gets": 1,
        "redeliveries": 0,
    }
    assert process("esm_process_end_to_end_delay_seconds_sum") > 0


def test_refused_uploads_count_by_the_class_of_their_answer():
    token = new_tenant().device_token()
    not_json = gzip.compress(b"this is not JSON")
    before = scrape("INGEST_PORT")

    answers = [
        requests.post(f"{BASE_URL}/api/v1/telemetry/bulk", data=not_json, headers=headers, timeout=30).status_code
        for headers in (
            {"Authorization": f"Bearer {token}", "Content-Encoding": "gzip"},
            {"Authorization": "Bearer not-a-token", "Content-Encoding": "gzip"},
        )
    ]
    after = scrape("INGEST_PORT")

    assert answers == [400, 401]
    refusals = {o: moved(before, after, "esm_ingest_uploads_total", outcome=o) for o in ("bad_request", "unauthorized")}
    assert refusals == {"bad_request": 1, "unauthorized": 1}
    assert moved(before, after, "esm_ingest_received_bytes_total") == len(not_json)  # the refused token's: unread
