"""Both database modes give the same aggregates for the same readings, and the analytics
queries run on TimescaleDB.

Each mode's migrations are applied in a fresh schema: the plain ones on the local PostgreSQL
(DATABASE_URL), the TimescaleDB ones on TimescaleDB 2.23 in WebAssembly (infra/timescale; one
connection at a time, so its pool has one connection and is closed afterwards). Identical
readings go into both, partly after a first refresh (late data); after a refresh of each, every
statistic of every hourly and daily bucket is compared.
"""

from __future__ import annotations

import math
import os
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import psycopg2
import pytest

from easysmart.aggregates import PlainAggregates, TimescaleAggregates
from easysmart.analytics import AnalyticsService
from easysmart.collector import DatabaseSource, PlainFigures, TimescaleFigures
from easysmart.config import AggregateSettings, RetentionSettings
from easysmart.db import Database, migrations_for
from easysmart.identity import Principal
from easysmart.metrics import DB_AGGREGATE_BYTES, DB_PARTITIONS, DB_RAW_BYTES, RAW_OLDEST_DAY
from easysmart.retention import RetentionService

TIMESCALE_URL = os.environ.get(
    "TIMESCALE_URL", "postgresql://postgres:postgres@127.0.0.1:55433/postgres?sslmode=disable"
)
ZONE = "America/Sao_Paulo"
STATISTICS = (
    "avg_value",
    "min_value",
    "max_value",
    "sample_count",
    "stddev_value",
    "median_value",
    "p95_value",
    "p99_value",
    "value_count",
    "value_sum",
)
EQUIPMENT_ID = 1
# sensor id -> kind: numbers, on/off (1/0 with a state) and a text-state sensor (value NULL)
SENSORS = {1: "temperature", 2: "door", 3: "status"}


class SchemaDatabase(Database):
    """A pool whose connections resolve names in one schema first."""

    def __init__(self, dsn: str, schema: str, max_connections: int, timescale: bool) -> None:
        super().__init__(dsn, max_connections)
        self.schema = schema
        self.timescale = timescale

    def _checkout(self):
        conn = super()._checkout()
        with conn.cursor() as cursor:
            # Plain mode: not public, where the stack's own partitions of the same names live;
            # TimescaleDB's functions are in public.
            cursor.execute(f"SET search_path = {self.schema}{', public' if self.timescale else ''}")
        conn.commit()
        return conn


def _reachable(url: str) -> bool:
    try:
        psycopg2.connect(url, connect_timeout=5).close()
        return True
    except psycopg2.OperationalError:
        return False


def readings(start: datetime, hours: int, offset: int) -> list[tuple]:
    """(sensor_id, equipment_id, ts, value, state), every 7 minutes from `offset` minutes on."""
    rows = []
    for minute in range(offset, hours * 60, 7):
        moment = start + timedelta(minutes=minute)
        rows.append((1, EQUIPMENT_ID, moment, round(-18 + 5 * math.sin(minute / 37) + (minute % 11) * 0.1, 3), None))
        door = (minute // 7) % 4 == 0
        rows.append((2, EQUIPMENT_ID, moment, 1.0 if door else 0.0, "on" if door else "off"))
        rows.append((3, EQUIPMENT_ID, moment, None, "ok" if minute % 3 else "alarm"))
    return rows


def insert(db: Database, rows: list[tuple]) -> None:
    """Multi-row INSERTs (COPY kills the wasm server), with the range logged as process does."""
    with db.transaction() as cursor:
        for day in sorted({row[2].date() for row in rows}):
            cursor.execute("SELECT esm_ensure_telemetry_partition(%s)", (day,))
        for first in range(0, len(rows), 500):
            chunk = rows[first : first + 500]
            cursor.execute(
                "INSERT INTO telemetry_data (sensor_id, equipment_id, ts, value, state) VALUES "
                + ", ".join(["(%s, %s, %s, %s, %s)"] * len(chunk)),
                [value for row in chunk for value in row],
            )
        cursor.execute(
            "INSERT INTO aggregate_touched (lo, hi) VALUES (%s, %s)",
            (min(row[2] for row in rows), max(row[2] for row in rows)),
        )


def buckets(db: Database, relation: str, start: datetime, end: datetime) -> dict:
    with db.transaction() as cursor:
        cursor.execute(
            f"SELECT bucket, sensor_id, {', '.join(STATISTICS)} FROM {relation}"
            " WHERE bucket >= %s AND bucket < %s ORDER BY bucket, sensor_id",
            (start, end),
        )
        return {(row[0], row[1]): dict(zip(STATISTICS, row[2:])) for row in cursor.fetchall()}


def same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


@pytest.fixture(scope="module")
def modes():
    if not os.environ.get("DATABASE_URL"):
        pytest.skip("DATABASE_URL is not set: the plain side needs the local PostgreSQL")
    if not _reachable(TIMESCALE_URL):
        if os.environ.get("TIMESCALE_REQUIRED") == "1":
            raise RuntimeError(f"TimescaleDB (wasm) server not reachable at {TIMESCALE_URL}")
        pytest.skip("TimescaleDB (wasm) server not reachable; start it with: bash infra/timescale/start.sh")
    schema = f"parity_{uuid.uuid4().hex[:10]}"
    databases = {
        "postgres": SchemaDatabase(os.environ["DATABASE_URL"], schema, 4, False),
        "timescaledb": SchemaDatabase(TIMESCALE_URL, schema, 1, True),
    }
    for mode, db in databases.items():
        with db.transaction() as cursor:
            cursor.execute(f"CREATE SCHEMA {schema}")
            cursor.execute(f"SET search_path = {schema}{', public' if db.timescale else ''}")
            for _, _, sql in migrations_for(mode):
                cursor.execute(sql)
            cursor.execute(
                "INSERT INTO tenants (id, name, timezone) VALUES (%s, 'parity', %s)", (uuid.UUID(int=1), ZONE)
            )
            cursor.execute(
                "INSERT INTO equipment (id, tenant_id, uuid, name) VALUES (%s, %s, 'parity-equipment', 'p')",
                (EQUIPMENT_ID, uuid.UUID(int=1)),
            )
            for sensor_id, kind in SENSORS.items():
                cursor.execute(
                    "INSERT INTO sensors (id, tenant_id, equipment_id, uuid, name, kind)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (sensor_id, uuid.UUID(int=1), EQUIPMENT_ID, f"parity-{sensor_id}", kind, kind),
                )
    yield databases
    for db in databases.values():
        with db.transaction() as cursor:
            cursor.execute("SET search_path = public")
            cursor.execute(f"DROP SCHEMA {schema} CASCADE")
        db.close()


@pytest.fixture(scope="module")
def loaded(modes):
    now = datetime.now(timezone.utc)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=5)
    backends = {"postgres": PlainAggregates(), "timescaledb": TimescaleAggregates()}
    for mode, db in modes.items():
        insert(db, readings(start, 60, 0))
        backends[mode].refresh(db, ZONE)
        insert(db, readings(start, 60, 3))  # late data in buckets already materialised
        backends[mode].refresh(db, ZONE)
    return modes, start, now.replace(minute=0, second=0, microsecond=0) - timedelta(days=2)


@pytest.mark.parametrize("relation", ["telemetry_hourly", "telemetry_daily"])
def test_both_modes_give_the_same_statistics_for_every_bucket(loaded, relation):
    modes, start, end = loaded

    plain = buckets(modes["postgres"], relation, start - timedelta(days=1), end)
    timescale = buckets(modes["timescaledb"], relation, start - timedelta(days=1), end)

    assert plain and set(plain) == set(timescale)
    for key, statistics in plain.items():
        for name, value in statistics.items():
            assert same(value, timescale[key][name]), (relation, key, name, value, timescale[key][name])


def test_analytics_queries_answer_alike_on_both_modes(loaded):
    modes, start, end = loaded
    user = Principal(account_id=str(uuid.UUID(int=2)), tenant_id=uuid.UUID(int=1), kind="user")
    args = {"start_date": start.isoformat(), "end_date": end.isoformat()}
    answers = {}
    for mode, db in modes.items():
        service = AnalyticsService(db, AggregateSettings(aggregate_timezone=ZONE))
        answers[mode] = [
            service.equipment_history(user, "parity-equipment", {**args, "period": period}, now=end)
            for period in ("hour", "day")
        ] + [
            service.equipment_history(user, "parity-equipment", {**args, "period": "raw", "limit": "50"}, now=end),
            service.sensor_history(user, "parity-1", {**args, "period": "hour", "sensor_type": "temperatura"}, now=end),
            service.equipment_stats(user, "parity-equipment", {"period": "7d"}, now=end),
            service.home_assistant(user, "parity-equipment", {"hours": "168"}, now=end),
            service.equipments(user, {}),
        ]

    def rounded(value):
        if isinstance(value, float):
            return round(value, 6)
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rounded(v) for v in value]
        return value

    # As the client reads them (aggregate rows come as JSON text already).
    read = {mode: orjson.loads(orjson.dumps(answer)) for mode, answer in answers.items()}
    assert read["postgres"][0]["data"]
    assert rounded(read["postgres"]) == rounded(read["timescaledb"])


def test_expiry_drops_old_raw_data_in_both_modes_and_the_aggregates_stay_alike(loaded):
    modes, start, end = loaded
    retention = RetentionSettings(raw_retention_days=3)
    backends = {"postgres": PlainAggregates(), "timescaledb": TimescaleAggregates()}
    before = {mode: buckets(db, "telemetry_hourly", start, end) for mode, db in modes.items()}

    for mode, db in modes.items():
        RetentionService(retention, AggregateSettings(), db, blobs=None, backend=backends[mode]).expire(
            backends[mode], datetime.now(timezone.utc)
        )

    for mode, db in modes.items():
        with db.transaction() as cursor:
            cursor.execute("SELECT count(*) FROM telemetry_data WHERE ts < %s", (start + timedelta(days=1),))
            assert cursor.fetchone()[0] == 0, mode
        assert buckets(db, "telemetry_hourly", start, end) == before[mode]


def test_the_collector_reads_the_same_raw_days_and_its_sizes_in_both_modes(loaded):
    modes, _, _ = loaded
    oldest_days = {}
    for mode, db in modes.items():
        backend = TimescaleFigures() if mode == "timescaledb" else PlainFigures()
        figures = DatabaseSource(db, stuck_after_s=600, interval_s=60, figures=backend).read()
        with db.transaction() as cursor:
            if mode == "timescaledb":
                cursor.execute("SELECT hypertable_size('telemetry_data'), count(*) FROM show_chunks('telemetry_data')")
            else:
                cursor.execute(
                    "SELECT sum(pg_total_relation_size(inhrelid)), count(*) FROM pg_inherits"
                    " WHERE inhparent = 'telemetry_data'::regclass"
                )
            raw_bytes, raw_partitions = cursor.fetchone()
            cursor.execute(
                "SELECT extract(epoch FROM date_trunc('day', min(ts) AT TIME ZONE 'UTC')) FROM telemetry_data"
            )
            first_day = float(cursor.fetchone()[0])

        oldest_days[mode] = figures[RAW_OLDEST_DAY]
        assert figures[RAW_OLDEST_DAY] == {(): first_day}, mode
        assert figures[DB_RAW_BYTES] == {(): raw_bytes}, mode
        assert figures[DB_PARTITIONS] == {("telemetry_data",): raw_partitions}, mode
        assert set(figures[DB_AGGREGATE_BYTES]) == {("telemetry_hourly",), ("telemetry_daily",)}, mode
        assert all(size > 0 for size in figures[DB_AGGREGATE_BYTES].values()), mode
    assert oldest_days["postgres"] == oldest_days["timescaledb"]
