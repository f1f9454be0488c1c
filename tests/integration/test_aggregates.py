"""Plain-PostgreSQL aggregates against the real database: refresh, views, expiry.

Rows are written as process writes them: into telemetry_data, with the batch's time range
logged in aggregate_touched in the same transaction.
"""

from __future__ import annotations

import statistics
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from support.reference import percentile_cont

from easysmart import aggregates
from easysmart.aggregates import PlainAggregates
from easysmart.config import AggregateSettings, RetentionSettings
from easysmart.retention import RetentionService

ZONE = "America/Sao_Paulo"


def expected(values: list[float]) -> dict:
    return {
        "avg_value": statistics.fmean(values),
        "min_value": min(values),
        "max_value": max(values),
        "sample_count": len(values),
        "stddev_value": statistics.stdev(values) if len(values) > 1 else None,
        "median_value": percentile_cont(values, 0.5),
        "p95_value": percentile_cont(values, 0.95),
        "p99_value": percentile_cont(values, 0.99),
    }


def assert_statistics(actual: dict, values: list[float]) -> None:
    for name, wanted in expected(values).items():
        if wanted is None:
            assert actual[name] is None, name
        else:
            assert actual[name] == pytest.approx(wanted, rel=1e-9, abs=1e-9), name


@pytest.fixture(scope="module")
def plain_mode(database):
    with database.transaction() as cursor:
        cursor.execute("SELECT mode FROM schema_migrations ORDER BY version LIMIT 1")
        if cursor.fetchone()[0] != "postgres":
            pytest.skip("plain-PostgreSQL aggregates only")


@pytest.fixture
def sensor(database, make_account, plain_mode):
    """(equipment_id, sensor_id) of a fresh temperature sensor; its rows go afterwards."""
    account = make_account("user")
    with database.transaction() as cursor:
        cursor.execute(
            "INSERT INTO equipment (tenant_id, uuid, name) VALUES (%s, %s, 'it') RETURNING id",
            (account.tenant_id, str(uuid.uuid4())),
        )
        equipment_id = cursor.fetchone()[0]
        cursor.execute(
            "INSERT INTO sensors (tenant_id, equipment_id, uuid, name, kind, unit)"
            " VALUES (%s, %s, %s, 't', 'temperature', '°C') RETURNING id",
            (account.tenant_id, equipment_id, str(uuid.uuid4())),
        )
        sensor_id = cursor.fetchone()[0]
    yield equipment_id, sensor_id
    with database.transaction() as cursor:
        for table in ("telemetry_data", "telemetry_hourly_mat", "telemetry_daily_mat"):
            cursor.execute(f"DELETE FROM {table} WHERE sensor_id = %s", (sensor_id,))
        cursor.execute("DELETE FROM sensors WHERE id = %s", (sensor_id,))
        cursor.execute("DELETE FROM equipment WHERE id = %s", (equipment_id,))


def store(database, sensor, rows: list[tuple[datetime, float]]) -> None:
    """What process does for a batch: the rows and, in the same transaction, their time range."""
    equipment_id, sensor_id = sensor
    with database.transaction() as cursor:
        cursor.execute(
            "SELECT esm_ensure_telemetry_partition(d::date) FROM generate_series(%s::date, %s::date,"
            " interval '1 day') d",
            (min(ts for ts, _ in rows), max(ts for ts, _ in rows)),
        )
        cursor.executemany(
            "INSERT INTO telemetry_data (sensor_id, equipment_id, ts, value) VALUES (%s, %s, %s, %s)",
            [(sensor_id, equipment_id, ts, value) for ts, value in rows],
        )
        cursor.execute(
            "INSERT INTO aggregate_touched (lo, hi) VALUES (%s, %s)",
            (min(ts for ts, _ in rows), max(ts for ts, _ in rows)),
        )


def buckets(database, relation: str, sensor_id: int) -> dict[datetime, dict]:
    with database.transaction() as cursor:
        cursor.execute(
            f"SELECT bucket, avg_value, min_value, max_value, sample_count, stddev_value, median_value,"
            f" p95_value, p99_value FROM {relation} WHERE sensor_id = %s ORDER BY bucket",
            (sensor_id,),
        )
        names = [column.name for column in cursor.description]
        return {row[0]: dict(zip(names, row)) for row in cursor.fetchall()}


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def test_current_hour_reading_is_in_the_hourly_view_before_any_refresh(database, sensor):
    aggregates.refresh(database, ZONE, PlainAggregates())
    now = datetime.now(timezone.utc)

    store(database, sensor, [(now - timedelta(seconds=5), 4.5)])

    hourly = buckets(database, "telemetry_hourly", sensor[1])
    assert_statistics(hourly[hour_of(now - timedelta(seconds=5))], [4.5])


def test_views_combine_materialised_buckets_with_live_rows(database, sensor):
    now = datetime.now(timezone.utc)
    earlier = hour_of(now) - timedelta(hours=3)
    old_values = [1.0, 2.0, 4.0, 8.0, 16.0]
    store(database, sensor, [(earlier + timedelta(minutes=i), v) for i, v in enumerate(old_values)])
    aggregates.refresh(database, ZONE, PlainAggregates())

    store(database, sensor, [(now - timedelta(seconds=2), 7.0), (now - timedelta(seconds=1), 9.0)])

    materialised = buckets(database, "telemetry_hourly_mat", sensor[1])
    assert list(materialised) == [earlier]
    hourly = buckets(database, "telemetry_hourly", sensor[1])
    assert_statistics(hourly[earlier], old_values)
    assert_statistics(hourly[hour_of(now - timedelta(seconds=1))], [7.0, 9.0])


def test_refresh_rematerialises_buckets_touched_by_late_batches(database, sensor):
    hour = hour_of(datetime.now(timezone.utc)) - timedelta(days=3)
    store(database, sensor, [(hour + timedelta(minutes=1), 10.0), (hour + timedelta(minutes=2), 20.0)])
    aggregates.refresh(database, ZONE, PlainAggregates())
    assert buckets(database, "telemetry_hourly_mat", sensor[1])[hour]["sample_count"] == 2

    store(database, sensor, [(hour + timedelta(minutes=30), 60.0)])  # a late batch
    aggregates.refresh(database, ZONE, PlainAggregates())

    assert_statistics(buckets(database, "telemetry_hourly_mat", sensor[1])[hour], [10.0, 20.0, 60.0])
    daily = buckets(database, "telemetry_daily", sensor[1])
    assert [row["sample_count"] for row in daily.values()] == [3]


def test_refresh_twice_changes_nothing(database, sensor):
    hour = hour_of(datetime.now(timezone.utc)) - timedelta(days=2)
    store(database, sensor, [(hour + timedelta(minutes=m), float(m)) for m in range(0, 60, 7)])
    aggregates.refresh(database, ZONE, PlainAggregates())
    first = (buckets(database, "telemetry_hourly", sensor[1]), buckets(database, "telemetry_daily", sensor[1]))

    aggregates.refresh(database, ZONE, PlainAggregates())

    assert (buckets(database, "telemetry_hourly", sensor[1]), buckets(database, "telemetry_daily", sensor[1])) == first


def test_expiry_never_drops_a_partition_before_it_is_materialised(database, sensor):
    retention = RetentionSettings()
    # Noon UTC: its day in São Paulo starts after the UTC day does, so its daily bucket is whole.
    old = hour_of(datetime.now(timezone.utc)).replace(hour=12) - timedelta(days=retention.raw_retention_days + 10)
    partition = f"telemetry_data_p{old:%Y%m%d}"
    with database.transaction() as cursor:
        # Process never stores readings this old; an earlier expiry may have moved the raw
        # horizon past this day, and buckets before the horizon are final. Pretend it has not.
        cursor.execute(
            "UPDATE aggregate_settings SET value = least(value::timestamptz, %s)::text WHERE key = 'raw_horizon'",
            (old.replace(hour=0),),
        )
    store(database, sensor, [(old + timedelta(minutes=5), 3.0), (old + timedelta(minutes=6), 5.0)])
    service = RetentionService(retention, AggregateSettings(), database, blobs=None, backend=PlainAggregates())

    report = service._expire_raw(PlainAggregates(), datetime.now(timezone.utc))  # no refresh first

    assert old.date().isoformat() in report["raw_partitions_kept_unmaterialised"]
    with database.transaction() as cursor:
        cursor.execute("SELECT to_regclass(%s)", (partition,))
        assert cursor.fetchone()[0] is not None

    report = service.run("expire")  # refresh, then expiry

    assert old.date().isoformat() in report["expire"]["raw_partitions_dropped"]
    with database.transaction() as cursor:
        cursor.execute("SELECT to_regclass(%s)", (partition,))
        assert cursor.fetchone()[0] is None
    assert_statistics(buckets(database, "telemetry_hourly", sensor[1])[old], [3.0, 5.0])
    assert [row["sample_count"] for row in buckets(database, "telemetry_daily", sensor[1]).values()] == [2]
