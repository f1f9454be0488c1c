"""process against the real PostgreSQL and S3 server: parsing modes, idempotency, failures."""
import dataclasses
import gzip
import hashlib
import io
import time
import uuid
from datetime import datetime, timezone

import orjson
import pytest

from easysmart.config import ProcessSettings, RetentionSettings, UploadLimits
from easysmart.db import Database
from easysmart.events import ClaimCheck
from easysmart.process import BatchFailedError, BatchProcessor
from support.samples import recent_sample


def stage(blobs, account, items, *, sha256: str | None = None, raw: bytes | None = None) -> ClaimCheck:
    text = raw if raw is not None else orjson.dumps(items)
    body = gzip.compress(text)
    batch_id = str(uuid.uuid4())
    key = f"raw/test/{account.tenant_id}/{batch_id}.json.gz"
    blobs.put(key, io.BytesIO(body), {"tenant-id": account.tenant_id})
    return ClaimCheck(batch_id, account.tenant_id, account.account_id, account.username, blobs.bucket, key, len(body),
                      len(text), sha256 or hashlib.sha256(body).hexdigest(), "gzip", None, None, "test",
                      datetime.now(timezone.utc).isoformat())


def rows(database, tenant_id: str) -> list[tuple]:
    with database.transaction() as cursor:
        cursor.execute("SELECT s.uuid, t.ts, t.value, t.state, t.battery_pct FROM telemetry_data t"
                       " JOIN sensors s ON s.id = t.sensor_id WHERE s.tenant_id = %s ORDER BY 1, 2", (tenant_id,))
        return cursor.fetchall()


@pytest.fixture
def processor(database, blobs):
    return BatchProcessor(ProcessSettings(), UploadLimits(), RetentionSettings(), database, blobs)


@pytest.fixture
def streaming_processor(database, blobs):
    # Nothing is parsed in one go, and chunks are tiny, so the streaming path and its chunk flushes run.
    return BatchProcessor(ProcessSettings(process_parse_in_one_go_bytes=0, process_chunk_readings=7), UploadLimits(),
                          RetentionSettings(), database, blobs)


def test_streamed_and_one_go_parsing_store_the_same_rows(processor, streaming_processor, blobs, database, make_account):
    items = recent_sample("ha-bulk-mixed.json")
    one_go, streamed = make_account(), make_account()
    first = processor.process(stage(blobs, one_go, items))
    second = streaming_processor.process(stage(blobs, streamed, items))
    assert (first.stored, first.skipped) == (second.stored, second.skipped) == (57, 2)
    assert rows(database, one_go.tenant_id) == rows(database, streamed.tenant_id)


def test_redelivered_claim_check_stores_nothing_and_says_so(processor, blobs, database, make_account):
    account = make_account()
    claim = stage(blobs, account, recent_sample("ha-bulk-small.json"))
    assert processor.process(claim).stored == 40
    again = processor.process(claim)
    assert (again.redelivery, again.stored) == (True, 40)
    assert len(rows(database, account.tenant_id)) == 40


def test_same_uuid_in_two_tenants_is_two_unrelated_sensors(processor, blobs, database, make_account):
    items = recent_sample("ha-bulk-legacy.json")
    first, second = make_account(), make_account()
    processor.process(stage(blobs, first, items))
    processor.process(stage(blobs, second, items))
    assert len(rows(database, first.tenant_id)) == len(rows(database, second.tenant_id)) == 2


def test_latest_equipment_and_sensor_settings_win(processor, blobs, database, make_account):
    account = make_account()
    items = recent_sample("ha-bulk-small.json")
    processor.process(stage(blobs, account, items))
    items[0]["equip_nome"] = "Freezer Renomeado"
    sensor_uuid = items[0]["sensor"][0]["sensor_uuid"]
    for reading in items[0]["sensor"]:
        if reading["sensor_uuid"] == sensor_uuid:
            reading["sensor_firmware"] = "2.0"
    processor.process(stage(blobs, account, items))
    with database.transaction() as cursor:
        cursor.execute("SELECT e.name, s.firmware FROM equipment e JOIN sensors s ON s.equipment_id = e.id"
                       " WHERE e.tenant_id = %s AND s.uuid = %s", (account.tenant_id, sensor_uuid))
        assert cursor.fetchone() == ("Freezer Renomeado", "2.0")


@pytest.mark.parametrize("make_claim, reason", [
    (lambda blobs, account: stage(blobs, account, [], sha256="0" * 64), "sha256"),
    (lambda blobs, account: stage(blobs, account, None, raw=b'[{"equip_uuid": "x", "sensor": [1,'), "JSON"),
    (lambda blobs, account: stage(blobs, account, [{"equip_uuid": "x"}]), "sensor"),
    (lambda blobs, account: dataclasses.replace(stage(blobs, account, []), key="raw/missing/blob.json.gz"), "does not exist"),
])
def test_permanently_bad_batches_are_marked_failed_with_a_reason(processor, blobs, database, make_account, make_claim, reason):
    account = make_account()
    claim = make_claim(blobs, account)
    with pytest.raises(BatchFailedError, match=reason):
        processor.process(claim)
    with database.transaction() as cursor:
        cursor.execute("SELECT status, reasons FROM batches WHERE id = %s", (claim.batch_id,))
        status, reasons = cursor.fetchone()
    assert status == "failed"
    assert reason in reasons[0]["reason"]
    assert rows(database, account.tenant_id) == []


def test_pooled_connections_survive_a_database_restart(database):
    pool = Database(database.dsn, 2)
    with pool.transaction() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        first_pid = cursor.fetchone()[0]
    with database.transaction() as cursor:  # what a restart does to an idle pooled connection
        cursor.execute("SELECT pg_terminate_backend(%s)", (first_pid,))
    time.sleep(1.2)
    with pool.transaction() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != first_pid
    pool.close()
