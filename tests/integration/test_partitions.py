"""Day partitions of telemetry_data (plain PostgreSQL) against the real database, tried as the attack: a
transaction holding a lock on telemetry_data while retention creates and drops day partitions.

Retention must return at once saying what it left for the next run, readers and batches must still be
answered meanwhile, and the next run after the blocker ends must finish the job.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone

import psycopg2
import pytest
from support.claims import TEST_KEYRING, stage
from support.samples import recent_sample

from easysmart import cli, partitions
from easysmart.aggregates import PlainAggregates
from easysmart.config import AggregateSettings, ProcessSettings, RetentionSettings, UploadLimits
from easysmart.db import Database
from easysmart.process import BatchProcessor
from easysmart.retention import RetentionService

# A lock_timeout the blocked steps give up after; the run after the blocker is given longer, since other
# work on the shared database may hold telemetry_data for a moment too.
SHORT_S, PATIENT_S = 0.3, 10.0


@pytest.fixture(scope="module")
def plain_mode(database):
    with database.transaction() as cursor:
        cursor.execute("SELECT mode FROM schema_migrations ORDER BY version LIMIT 1")
        if cursor.fetchone()[0] != "postgres":
            pytest.skip("plain-PostgreSQL partitions only")


@pytest.fixture
def blocker(database_url):
    """blocker(mode) opens a transaction that holds `LOCK TABLE telemetry_data IN <mode> MODE` (as a long report
    or a maintenance command would) until release() or the end of the test."""
    conns: list = []

    def hold(mode: str):
        conn = psycopg2.connect(database_url)
        conns.append(conn)
        with conn.cursor() as cursor:
            cursor.execute(f"LOCK TABLE telemetry_data IN {mode} MODE")
        return conn.rollback

    yield hold
    for conn in conns:
        conn.close()


def retention(database, lock_timeout_s: float, raw_retention_days: int = 30) -> RetentionService:
    return RetentionService(
        RetentionSettings(raw_retention_days=raw_retention_days),
        AggregateSettings(),
        database,
        blobs=None,
        backend=PlainAggregates(),
        partition_lock_timeout_s=lock_timeout_s,
    )


def exists(database, day: date) -> bool:
    with database.transaction() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (partitions.name_of(day),))
        return cursor.fetchone()[0]


def detach_pending(database, day: date) -> bool:
    with database.transaction() as cursor:
        cursor.execute(
            "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass(%s)", (partitions.name_of(day),)
        )
        row = cursor.fetchone()
        return bool(row and row[0])


def reader_and_batch_answer(database_url, database, blobs, make_account) -> None:
    """An analytics-style read (analytics' own timeouts) and a whole process batch both complete."""
    # Short timeouts: a read or batch queued behind the blocker fails the test instead of hanging it.
    pool = Database(database_url, 2, statement_timeout_s=5, lock_timeout_s=2)
    try:
        with pool.transaction() as cursor:
            cursor.execute("SELECT count(*) FROM telemetry_data WHERE ts > now() - interval '1 day'")
            assert cursor.fetchone()[0] >= 0
        processor = BatchProcessor(
            ProcessSettings(), UploadLimits(), RetentionSettings(), pool, blobs, keyring=TEST_KEYRING
        )
        result = processor.process(stage(blobs, make_account(), recent_sample("ha-bulk-small.json")))
        assert (result.status, result.stored) == ("done", 40)
    finally:
        pool.close()


@pytest.fixture
def far_future(database, plain_mode):
    """A `now` far enough ahead that no partition of its window exists yet; the ones a test makes go afterwards."""
    now = datetime.now(timezone.utc) + timedelta(days=3000 + uuid.uuid4().int % 3000)
    yield now
    first, last = partitions.accepted_window(now, 1)
    for offset in range((last - first).days + 1):
        partitions.drop_day(database, first + timedelta(days=offset), PATIENT_S)


def test_creating_the_window_does_not_wait_for_a_reader_s_open_transaction(database, far_future, blocker):
    first, last = partitions.accepted_window(far_future, 1)
    release = blocker("ACCESS SHARE")

    report = retention(database, SHORT_S, raw_retention_days=1).run("refresh", now=far_future)
    release()

    # Created and attached while the reader held its lock: nothing queued behind it, nothing deferred.
    window = [(first + timedelta(days=offset)).isoformat() for offset in range((last - first).days + 1)]
    assert report["partitions"] == {"raw_partitions_created": window, "raw_partitions_creation_deferred": []}
    assert all(exists(database, date.fromisoformat(day)) for day in window)


def test_a_conflicting_lock_defers_creation_to_the_next_run_and_readers_and_batches_still_answer(
    database, database_url, blobs, make_account, far_future, blocker
):
    first, last = partitions.accepted_window(far_future, 1)
    # Today's window is made, as retention keeps it, so the batch below needs no partition of its own.
    partitions.create_window(database, *partitions.accepted_window(datetime.now(timezone.utc), 30), PATIENT_S)
    release = blocker("SHARE UPDATE EXCLUSIVE")  # what a VACUUM or another partition's ATTACH holds

    deferred = retention(database, SHORT_S, raw_retention_days=1).run("refresh", now=far_future)

    assert deferred["partitions"]["raw_partitions_created"] == []
    assert deferred["partitions"]["raw_partitions_creation_deferred"][0] == first.isoformat()
    assert not exists(database, first)
    reader_and_batch_answer(database_url, database, blobs, make_account)

    release()
    done = retention(database, PATIENT_S, raw_retention_days=1).run("refresh", now=far_future)

    assert done["partitions"]["raw_partitions_creation_deferred"] == []
    assert exists(database, first) and exists(database, last)


@pytest.fixture
def expired_day(database, make_account, plain_mode):
    """A day past the raw retention with two readings in it (as process stored them when they were recent)."""
    account = make_account("user")
    old = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=40)
    with database.transaction() as cursor:
        # An earlier expiry may have moved the raw horizon past this day; pretend it has not.
        cursor.execute(
            "UPDATE aggregate_settings SET value = least(value::timestamptz, %s)::text WHERE key = 'raw_horizon'",
            (old.replace(hour=0),),
        )
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
        cursor.execute("SELECT esm_ensure_telemetry_partition(%s)", (old.date(),))
        cursor.executemany(
            "INSERT INTO telemetry_data (sensor_id, equipment_id, ts, value) VALUES (%s, %s, %s, %s)",
            [(sensor_id, equipment_id, old + timedelta(minutes=m), float(m)) for m in (5, 6)],
        )
        cursor.execute("INSERT INTO aggregate_touched (lo, hi) VALUES (%s, %s)", (old, old + timedelta(minutes=6)))
    yield old.date(), sensor_id
    with database.transaction() as cursor:
        for table in ("telemetry_data", "telemetry_hourly_mat", "telemetry_daily_mat"):
            cursor.execute(f"DELETE FROM {table} WHERE sensor_id = %s", (sensor_id,))
        cursor.execute("DELETE FROM sensors WHERE id = %s", (sensor_id,))
        cursor.execute("DELETE FROM equipment WHERE id = %s", (equipment_id,))


def test_a_reader_s_open_transaction_defers_the_drop_then_the_next_run_finalizes_it(
    database, database_url, blobs, make_account, expired_day, blocker
):
    day, sensor_id = expired_day
    release = blocker("ACCESS SHARE")

    deferred = retention(database, SHORT_S).run("expire")

    # DETACH ... CONCURRENTLY marked the partition and then gave up waiting for the reader: no queue formed.
    waiting = deferred["expire"]["raw_partitions_drop_deferred"]
    assert day.isoformat() in waiting and day.isoformat() not in deferred["expire"]["raw_partitions_dropped"]
    assert detach_pending(database, date.fromisoformat(waiting[0]))  # the first one tried: ours unless older exist
    reader_and_batch_answer(database_url, database, blobs, make_account)

    release()
    done = retention(database, PATIENT_S).run("expire")

    assert day.isoformat() in done["expire"]["raw_partitions_dropped"]
    assert done["expire"]["raw_partitions_drop_deferred"] == []
    assert not exists(database, day)
    with database.transaction() as cursor:
        cursor.execute("SELECT sum(sample_count) FROM telemetry_hourly WHERE sensor_id = %s", (sensor_id,))
        assert cursor.fetchone()[0] == 2  # materialised before the raw rows went


def test_a_partition_detached_but_not_dropped_is_dropped_by_the_next_run(database, expired_day):
    day, _ = expired_day
    retention(database, PATIENT_S).run("refresh")  # materialises the day
    with database.connection() as conn:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f"ALTER TABLE telemetry_data DETACH PARTITION {partitions.name_of(day)} CONCURRENTLY")
        conn.autocommit = False

    report = retention(database, PATIENT_S).run("expire")

    assert day.isoformat() in report["expire"]["raw_partitions_dropped"]
    assert not exists(database, day)


def test_esm_migrate_makes_the_window_so_a_fresh_stack_s_first_upload_needs_none(database, plain_mode, capsys):
    cli.main(["migrate"])

    days = RetentionSettings.from_env().raw_retention_days
    first, last = partitions.accepted_window(datetime.now(timezone.utc), days)
    assert f"day partitions {first}..{last}" in capsys.readouterr().out
    assert all(exists(database, first + timedelta(days=offset)) for offset in range((last - first).days + 1))
