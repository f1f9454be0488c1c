"""The collector's figures against the real PostgreSQL and object store: what pg_total_relation_size, pg_inherits
and a boto3 listing report, in the session's database and a bucket of the test's own."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support.clock import SetClock

from easysmart import aggregates, partitions
from easysmart.collector import Collector, DatabaseSource, ObjectStoreSource
from easysmart.config import ConfigError, ObjectStoreSettings
from easysmart.db import Database, one_row
from easysmart.storage import make_s3_client


def scrape(collector: Collector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }


@pytest.fixture
def bucket():
    """A bucket of this test's own on the stack's object store, emptied and removed afterwards."""
    try:
        store = ObjectStoreSettings.from_env()
    except ConfigError as error:
        pytest.skip(f"the local stack's object store is not configured ({error})")
    client = make_s3_client(store, timeout_s=5)
    name = f"esm-it-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield client, name
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", ()):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)


def test_object_store_figures_match_a_listing_of_each_day(bucket):
    client, name = bucket
    puts = {
        "raw/2026/11/30/tenant-a/b1.json.gz": 100,
        "raw/2026/11/30/tenant-b/b2.json.gz": 40,
        "raw/2026/12/01/tenant-a/b3.json.gz": 7,
    }
    for key, size in puts.items():
        client.put_object(Bucket=name, Key=key, Body=b"x" * size)
    collector = Collector([ObjectStoreSource(client, name, 300)])

    collector.refresh_due()
    seen = scrape(collector)

    for day in ("2026/11/30", "2026/12/01"):
        listed = client.list_objects_v2(Bucket=name, Prefix=f"raw/{day}/")["Contents"]
        labels = (("day", day.replace("/", "-")), ("prefix", "raw"))
        assert seen[("esm_object_store_objects", labels)] == len(listed)
        assert seen[("esm_object_store_bytes", labels)] == sum(item["Size"] for item in listed)
    assert seen[("esm_object_store_objects", (("day", "2026-11-30"), ("prefix", "raw")))] == 2


@pytest.fixture
def stuck_batches(database: Database, make_account):
    """Three batches of a fresh tenant: processing for 20 minutes, processing for 1 minute, done for 20 minutes."""
    account = make_account()
    now = datetime.now(timezone.utc)
    rows = [("processing", now - timedelta(minutes=20)), ("processing", now - timedelta(minutes=1))]
    rows.append(("done", now - timedelta(minutes=20)))
    ids = [uuid.uuid4() for _ in rows]
    with database.transaction() as cursor:
        for batch_id, (status, received_at) in zip(ids, rows):
            cursor.execute(
                "INSERT INTO batches (id, tenant_id, account_id, sha256, status, bucket, object_key, size_bytes,"
                " received_at) VALUES (%s, %s, %s, 'sha', %s, 'b', 'k', 1, %s)",
                (batch_id, account.tenant_id, account.account_id, status, received_at),
            )
    yield now
    with database.transaction() as cursor:
        cursor.execute("DELETE FROM batches WHERE id = ANY(%s)", (ids,))


def test_database_figures_match_what_postgresql_reports(database: Database, stuck_batches: datetime):
    today = datetime.now(timezone.utc).date()
    oldest = today - timedelta(days=3)
    partitions.create_window(database, oldest, today, lock_timeout_s=5)
    with database.transaction() as cursor:
        cursor.execute(
            "INSERT INTO telemetry_data (sensor_id, equipment_id, ts, value) VALUES (%s, 1, %s, 1.5)"
            " ON CONFLICT DO NOTHING",
            (
                900_000_000 + uuid.uuid4().int % 1_000_000,
                datetime(oldest.year, oldest.month, oldest.day, 6, tzinfo=timezone.utc),
            ),
        )
    aggregates.refresh(database, "America/Sao_Paulo")
    clock = SetClock(stuck_batches)
    collector = Collector(
        [DatabaseSource(database, stuck_after_s=600, interval_s=60, clock=clock)], clock, clock.monotonic
    )

    collector.refresh_due()
    seen = scrape(collector)

    with database.transaction() as cursor:
        cursor.execute(
            "SELECT count(*), sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
            " WHERE inhparent = 'telemetry_data'::regclass"
        )
        partition_count, raw_bytes = one_row(cursor)
        cursor.execute(
            "SELECT pg_total_relation_size('telemetry_hourly_mat'), pg_total_relation_size('telemetry_daily_mat')"
        )
        hourly_bytes, daily_bytes = one_row(cursor)
        cursor.execute("SELECT pg_database_size(current_database())")
        database_bytes = one_row(cursor)[0]
        cursor.execute("SELECT min(ts) FROM telemetry_data")
        first_reading = one_row(cursor)[0]
        cursor.execute("SELECT name, refreshed_at FROM aggregate_watermarks")
        refreshed = dict(cursor.fetchall())
        cursor.execute(
            "SELECT count(*) FROM batches WHERE status = 'processing' AND received_at < %s",
            (stuck_batches - timedelta(seconds=600),),
        )
        stuck = one_row(cursor)[0]

    assert seen[("esm_db_partitions", (("table", "telemetry_data"),))] == partition_count >= 4
    assert seen[("esm_db_raw_bytes", ())] == raw_bytes
    assert seen[("esm_db_aggregate_bytes", (("aggregate", "telemetry_hourly"),))] == hourly_bytes
    assert seen[("esm_db_aggregate_bytes", (("aggregate", "telemetry_daily"),))] == daily_bytes
    assert seen[("esm_db_database_bytes", ())] == pytest.approx(database_bytes, rel=0.05)
    first_day = first_reading.astimezone(timezone.utc).date()
    assert first_day <= oldest
    assert (
        seen[("esm_raw_oldest_day_timestamp_seconds", ())]
        == datetime(first_day.year, first_day.month, first_day.day, tzinfo=timezone.utc).timestamp()
    )
    for name in ("telemetry_hourly", "telemetry_daily"):
        age = seen[("esm_aggregate_watermark_age_seconds", (("aggregate", name),))]
        assert age == pytest.approx((stuck_batches - refreshed[name]).total_seconds(), abs=1e-3)  # epoch floats
    assert seen[("esm_batches_stuck_processing", ())] == stuck >= 1
    assert (
        seen[("esm_collector_last_success_timestamp_seconds", (("source", "database"),))] == stuck_batches.timestamp()
    )


def test_a_database_that_cannot_be_reached_keeps_the_last_figures(database_url: str):
    reachable = Database(database_url, max_connections=1)
    clock = SetClock()
    source = DatabaseSource(reachable, stuck_after_s=600, interval_s=60, clock=clock)
    collector = Collector([source], clock, clock.monotonic)
    collector.refresh_due()
    before = scrape(collector)[("esm_db_database_bytes", ())]

    source.db = Database("postgresql://esm:esm@127.0.0.1:1/none", connect_timeout_s=1)
    clock.advance(60)
    collector.refresh_due()
    after = scrape(collector)
    reachable.close()

    assert after[("esm_db_database_bytes", ())] == before
    assert (
        after[("esm_collector_last_success_timestamp_seconds", (("source", "database"),))] == clock.now.timestamp() - 60
    )


def test_the_outbox_figures_count_refused_events_by_topic_and_age_the_oldest_waiting_one(database: Database):
    topic = f"test.collector.{uuid.uuid4().hex[:8]}"
    now = datetime.now(timezone.utc)
    with database.transaction() as cursor:
        for refused_at in (now, now, None):
            cursor.execute(
                "INSERT INTO event_outbox (event_id, topic, kafka_key, type, source, data, created_at, refused_at)"
                " VALUES (%s, %s, 'tenant', 'com.easysmart.test', '/test', '{}', %s, %s)",
                (str(uuid.uuid4()), topic, now - timedelta(hours=1), refused_at),
            )
        cursor.execute(
            "SELECT created_at FROM event_outbox WHERE published_at IS NULL AND refused_at IS NULL ORDER BY id LIMIT 1"
        )
        first_waiting = one_row(cursor)[0]  # this test's row, or one another test left waiting before it
    clock = SetClock(now + timedelta(minutes=5))
    collector = Collector(
        [DatabaseSource(database, stuck_after_s=600, interval_s=60, clock=clock)], clock, clock.monotonic
    )
    try:
        collector.refresh_due()
        seen = scrape(collector)
    finally:
        with database.transaction() as cursor:
            cursor.execute("DELETE FROM event_outbox WHERE topic = %s", (topic,))

    assert seen[("esm_outbox_events_refused", (("topic", topic),))] == 2
    age = seen[("esm_outbox_oldest_waiting_age_seconds", ())]
    assert age == pytest.approx((clock() - first_waiting).total_seconds(), abs=1e-3) and age >= 300
