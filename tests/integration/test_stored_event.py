"""process's telemetry.stored event, written to the outbox in the batch's own transaction."""

import uuid
from collections import Counter
from datetime import datetime

import pytest
from support.claims import TEST_KEYRING, stage
from support.samples import recent_sample

from easysmart.config import ProcessSettings, RetentionSettings, UploadLimits
from easysmart.outbox import TELEMETRY_STORED_TOPIC, TELEMETRY_STORED_TYPE
from easysmart.process import STORED_EVENT_NAMESPACE, STORED_EVENT_SOURCE, BatchFailedError, BatchProcessor


@pytest.fixture(params=["one_go", "streamed"])
def processor(request, database, blobs):
    # Streamed with tiny chunks, readings wait in the staging table and move with ON CONFLICT DO NOTHING.
    settings = (
        ProcessSettings()
        if request.param == "one_go"
        else ProcessSettings(process_parse_in_one_go_bytes=0, process_chunk_readings=7)
    )
    return BatchProcessor(settings, UploadLimits(), RetentionSettings(), database, blobs, keyring=TEST_KEYRING)


def outbox_rows(database, tenant_id: str) -> list[tuple]:
    with database.transaction() as cursor:
        cursor.execute(
            "SELECT event_id::text, topic, kafka_key, type, source, data FROM event_outbox"
            " WHERE kafka_key = %s ORDER BY id",
            (tenant_id,),
        )
        return cursor.fetchall()


def stored_readings(items: list) -> Counter:
    return Counter(reading["sensor_uuid"] for item in items for reading in item["sensor"])


@pytest.mark.parametrize("order", ["as sent", "newest first"])
def test_a_processed_batch_writes_one_stored_event_with_its_sensors_ranges(
    order, processor, blobs, database, make_account
):
    account = make_account()
    items = recent_sample("ha-bulk-small.json")
    if order == "newest first":
        # A sensor's first and last times are its least and greatest, not its first and last readings.
        items = [{**item, "sensor": item["sensor"][::-1]} for item in items]
    claim = stage(blobs, account, items)

    result = processor.process(claim)

    [(event_id, topic, key, type_, source, data)] = outbox_rows(database, account.tenant_id)
    assert event_id == str(uuid.uuid5(STORED_EVENT_NAMESPACE, claim.batch_id))
    assert (topic, key, type_, source) == (
        TELEMETRY_STORED_TOPIC,
        account.tenant_id,
        TELEMETRY_STORED_TYPE,
        STORED_EVENT_SOURCE,
    )
    assert (data["tenant_id"], data["batch_id"], data["account_id"]) == (
        account.tenant_id,
        claim.batch_id,
        account.account_id,
    )
    assert datetime.fromisoformat(data["stored_at"]) >= datetime.fromisoformat(data["received_at"])
    assert sorted(e["equipment_uuid"] for e in data["equipment"]) == sorted(item["equip_uuid"] for item in items)
    assert sum(s["count"] for s in data["sensors"]) == result.stored == 40
    with database.transaction() as cursor:
        cursor.execute(
            "SELECT s.uuid, s.id, s.equipment_id, s.kind, min(t.ts), max(t.ts), count(*) FROM telemetry_data t"
            " JOIN sensors s ON s.id = t.sensor_id WHERE s.tenant_id = %s GROUP BY 1, 2, 3, 4",
            (account.tenant_id,),
        )
        expected = {
            row[0]: {
                "sensor_uuid": row[0],
                "sensor_id": row[1],
                "equipment_id": row[2],
                "kind": row[3],
                "first_ts": row[4],
                "last_ts": row[5],
                "count": row[6],
            }
            for row in cursor.fetchall()
        }
    events = {
        s["sensor_uuid"]: {
            **s,
            "first_ts": datetime.fromisoformat(s["first_ts"]),
            "last_ts": datetime.fromisoformat(s["last_ts"]),
        }
        for s in data["sensors"]
    }
    assert events == expected


def test_a_resent_upload_lists_its_equipment_and_no_sensor(processor, blobs, database, make_account):
    account = make_account()
    items = recent_sample("ha-bulk-small.json")
    processor.process(stage(blobs, account, items))

    again = processor.process(stage(blobs, account, items))

    assert again.stored == 0
    first, second = outbox_rows(database, account.tenant_id)
    assert second[5]["equipment"] == first[5]["equipment"]
    assert second[5]["sensors"] == []


def test_a_partly_new_upload_counts_only_the_readings_it_stored(processor, blobs, database, make_account):
    account = make_account()
    items = recent_sample("ha-bulk-small.json")
    half = [{**item, "sensor": item["sensor"][: len(item["sensor"]) // 2]} for item in items]
    processor.process(stage(blobs, account, half))

    processor.process(stage(blobs, account, items))

    _, second = outbox_rows(database, account.tenant_id)
    assert {s["sensor_uuid"]: s["count"] for s in second[5]["sensors"]} == +(
        stored_readings(items) - stored_readings(half)
    )


def test_a_redelivered_claim_check_of_a_done_batch_writes_nothing(processor, blobs, database, make_account):
    account = make_account()
    claim = stage(blobs, account, recent_sample("ha-bulk-small.json"))
    processor.process(claim)

    assert processor.process(claim).redelivery

    assert len(outbox_rows(database, account.tenant_id)) == 1


def test_a_failed_batch_writes_no_event(processor, blobs, database, make_account):
    account = make_account()
    with pytest.raises(BatchFailedError):
        processor.process(stage(blobs, account, [{"equip_uuid": "x"}]))
    assert outbox_rows(database, account.tenant_id) == []
