"""The TimescaleDB-in-WebAssembly harness (infra/timescale) does what the TimescaleDB mode needs.

The server is TimescaleDB 2.23 inside PGlite (PostgreSQL 17, compiled to WebAssembly), served
over the wire protocol by pglite-socket: `bash infra/timescale/start.sh` starts it. Its limits,
which every suite using it must respect (see infra/timescale/README.md):

* one client connection at a time: a second connection waits (up to 60 s) until the first is
  closed, so use ONE connection at a time and close it (never a pool of more than one);
* background workers never run: call refresh_continuous_aggregate / run_job explicitly;
* COPY ... FROM STDIN kills the server: load data with multi-row INSERTs;
* refresh_continuous_aggregate cannot run inside a transaction block: use autocommit.

TIMESCALE_URL overrides the URL; TIMESCALE_REQUIRED=1 turns "server not reachable" from a skip
into a failure.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import statistics
import uuid
from collections import defaultdict
from contextlib import contextmanager
from zoneinfo import ZoneInfo

import pytest
from support.reference import percentile_cont

psycopg2 = pytest.importorskip("psycopg2")

URL = os.environ.get("TIMESCALE_URL", "postgresql://postgres:postgres@127.0.0.1:55433/postgres?sslmode=disable")
UTC = dt.timezone.utc
SAO_PAULO = ZoneInfo("America/Sao_Paulo")
# Fixed, old enough that no policy window relative to now() reaches it by accident.
T0 = dt.datetime(2025, 3, 1, 0, 0, tzinfo=UTC)
SENSORS = (1, 2, 3)
DAYS = 3
STEP = dt.timedelta(minutes=5)


def _reachable() -> str | None:
    try:
        conn = psycopg2.connect(URL, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        return str(exc).strip()
    conn.close()
    return None


_PROBLEM = _reachable()
if _PROBLEM is not None:
    if os.environ.get("TIMESCALE_REQUIRED") == "1":
        raise RuntimeError(f"TimescaleDB server not reachable at {URL}: {_PROBLEM}")
    pytest.skip(
        f"TimescaleDB (wasm) server not reachable at {URL} ({_PROBLEM}); start it with: bash infra/timescale/start.sh",
        allow_module_level=True,
    )


@contextmanager
def connect(autocommit: bool = True):
    conn = psycopg2.connect(URL, connect_timeout=10)
    conn.autocommit = autocommit
    try:
        yield conn
    finally:
        conn.close()


def value_of(sensor: int, i: int) -> float:
    """Deterministic, varied readings (so that percentiles interpolate)."""
    return round(20 + sensor * 3 + 7 * math.sin(i / 9.0) + (i * 37 % 11) / 4.0, 3)


def readings() -> list[tuple[int, dt.datetime, float]]:
    n = int(dt.timedelta(days=DAYS) / STEP)
    return [(s, T0 + i * STEP, value_of(s, i)) for s in SENSORS for i in range(n)]


def insert_rows(cur, table: str, rows, chunk: int = 500) -> int:
    """Multi-row INSERT ... ON CONFLICT DO NOTHING (COPY FROM STDIN crashes this server)."""
    inserted = 0
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        values = ",".join(cur.mogrify("(%s,%s,%s)", r).decode() for r in part)
        cur.execute(
            f"INSERT INTO {table} (sensor_id, ts, value) VALUES {values} ON CONFLICT (sensor_id, ts) DO NOTHING"
        )
        inserted += cur.rowcount
    return inserted


def expected_stats(rows, bucket_of):
    groups: dict[tuple, list[float]] = defaultdict(list)
    for sensor, ts, value in rows:
        groups[(sensor, bucket_of(ts))].append(value)
    out = {}
    for key, vs in groups.items():
        out[key] = {
            "avg": statistics.fmean(vs),
            "min": min(vs),
            "max": max(vs),
            "n": len(vs),
            "sd": statistics.stdev(vs) if len(vs) > 1 else None,
            "p50": percentile_cont(vs, 0.5),
            "p95": percentile_cont(vs, 0.95),
            "p99": percentile_cont(vs, 0.99),
        }
    return out


def hour_of(ts: dt.datetime) -> dt.datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def sao_paulo_day_of(ts: dt.datetime) -> dt.datetime:
    local = ts.astimezone(SAO_PAULO)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


STATS_SQL = """
    avg(value) AS avg_value, min(value) AS min_value, max(value) AS max_value,
    count(*) AS sample_count, stddev_samp(value) AS stddev_value,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS median_value,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY value) AS p95_value,
    percentile_cont(0.99) WITHIN GROUP (ORDER BY value) AS p99_value
"""


@pytest.fixture(scope="module")
def schema():
    """A fresh schema with the hypertable, loaded data and the two continuous aggregates."""
    name = f"tsh_{uuid.uuid4().hex[:10]}"
    rows = readings()
    with connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {name}")
        cur.execute(
            f"""CREATE TABLE {name}.telemetry (
                    sensor_id integer NOT NULL,
                    ts timestamptz NOT NULL,
                    value double precision,
                    UNIQUE (sensor_id, ts))"""
        )
        cur.execute(f"SELECT create_hypertable('{name}.telemetry', 'ts', chunk_time_interval => interval '1 day')")
        assert insert_rows(cur, f"{name}.telemetry", rows) == len(rows)
        cur.execute(
            f"""CREATE MATERIALIZED VIEW {name}.hourly
                WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
                SELECT sensor_id, time_bucket('1 hour', ts) AS bucket, {STATS_SQL}
                FROM {name}.telemetry GROUP BY sensor_id, bucket WITH NO DATA"""
        )
        cur.execute(
            f"""CREATE MATERIALIZED VIEW {name}.daily
                WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
                SELECT sensor_id, time_bucket('1 day', ts, 'America/Sao_Paulo') AS bucket,
                       {STATS_SQL}
                FROM {name}.telemetry GROUP BY sensor_id, bucket WITH NO DATA"""
        )
        cur.execute(f"CALL refresh_continuous_aggregate('{name}.hourly', NULL, NULL)")
        cur.execute(f"CALL refresh_continuous_aggregate('{name}.daily', NULL, NULL)")
    yield name, rows
    with connect() as conn, conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA {name} CASCADE")


def fetch_aggregate(cur, relation: str, where: str = "TRUE"):
    cur.execute(
        f"""SELECT sensor_id, bucket, avg_value, min_value, max_value, sample_count,
                   stddev_value, median_value, p95_value, p99_value
            FROM {relation} WHERE {where} ORDER BY sensor_id, bucket"""
    )
    return {
        (r[0], r[1]): dict(avg=r[2], min=r[3], max=r[4], n=r[5], sd=r[6], p50=r[7], p95=r[8], p99=r[9])
        for r in cur.fetchall()
    }


def assert_same(got: dict, want: dict):
    assert set(got) == set(want)
    for key, stats in want.items():
        for stat, expected in stats.items():
            assert close(got[key][stat], expected), (key, stat, got[key][stat], expected)


def test_extension_is_timescaledb_2_23():
    with connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        (version,) = cur.fetchone()
        assert version.startswith("2.23"), version
        cur.execute("SHOW server_version_num")
        assert int(cur.fetchone()[0]) >= 170000
        cur.execute("SHOW timescaledb.license")
        assert cur.fetchone()[0] == "timescale"  # TSL features: caggs, policies, compression


def test_hypertable_has_one_day_chunks(schema):
    name, _ = schema
    with connect() as conn, conn.cursor() as cur:
        cur.execute(
            """SELECT time_interval FROM timescaledb_information.dimensions
               WHERE hypertable_schema = %s AND hypertable_name = 'telemetry'""",
            (name,),
        )
        assert cur.fetchone()[0] == dt.timedelta(days=1)
        cur.execute(f"SELECT count(*) FROM show_chunks('{name}.telemetry')")
        assert cur.fetchone()[0] == DAYS


def test_multirow_insert_on_conflict_do_nothing(schema):
    name, rows = schema
    with connect() as conn, conn.cursor() as cur:
        again = rows[:10] + [(1, T0 + dt.timedelta(days=DAYS, minutes=1), 1.0)]
        # the ten duplicates are skipped, the one new row lands (outside the aggregates' data:
        # it is removed again below so the other tests see the original readings)
        assert insert_rows(cur, f"{name}.telemetry", again) == 1
        cur.execute(f"SELECT count(*) FROM {name}.telemetry")
        assert cur.fetchone()[0] == len(rows) + 1
        cur.execute(
            f"DELETE FROM {name}.telemetry WHERE sensor_id = 1 AND ts = %s",
            (T0 + dt.timedelta(days=DAYS, minutes=1),),
        )
        assert cur.rowcount == 1


def test_continuous_aggregates_are_finalized_and_real_time(schema):
    name, _ = schema
    with connect() as conn, conn.cursor() as cur:
        cur.execute(
            """SELECT view_name, materialized_only, finalized
               FROM timescaledb_information.continuous_aggregates
               WHERE view_schema = %s ORDER BY view_name""",
            (name,),
        )
        assert cur.fetchall() == [("daily", False, True), ("hourly", False, True)]


def test_hourly_aggregate_with_percentile_cont_matches_raw(schema):
    """avg/min/max/count/stddev_samp and percentile_cont(0.5/0.95/0.99) inside a cagg."""
    name, rows = schema
    with connect() as conn, conn.cursor() as cur:
        got = fetch_aggregate(cur, f"{name}.hourly")
        # it came from the materialisation, not from the real-time part
        cur.execute(f"SELECT count(*) FROM {name}.hourly")
        n_view = cur.fetchone()[0]
        cur.execute(
            "SELECT materialization_hypertable_schema, materialization_hypertable_name "
            "FROM timescaledb_information.continuous_aggregates "
            "WHERE view_schema = %s AND view_name = 'hourly'",
            (name,),
        )
        mat_schema, mat_table = cur.fetchone()
        cur.execute(f'SELECT count(*) FROM "{mat_schema}"."{mat_table}"')
        assert cur.fetchone()[0] == n_view == len(SENSORS) * DAYS * 24
    assert_same(got, expected_stats(rows, hour_of))


def test_daily_aggregate_in_sao_paulo_time(schema):
    """time_bucket('1 day', ts, 'America/Sao_Paulo'): buckets start at local midnight (03:00 UTC)."""
    name, rows = schema
    with connect() as conn, conn.cursor() as cur:
        got = fetch_aggregate(cur, f"{name}.daily")
    assert {b.astimezone(UTC).hour for _, b in got} == {3}
    assert len({b for _, b in got}) == DAYS + 1  # 3 UTC days span 4 local days
    assert_same(got, expected_stats(rows, sao_paulo_day_of))


def test_real_time_aggregation_and_late_data_refresh(schema):
    name, rows = schema
    with connect() as conn, conn.cursor() as cur:
        # Past the watermark: visible at once through the real-time part, no refresh needed.
        fresh_hour = T0 + dt.timedelta(days=DAYS, hours=5)
        fresh = [(2, fresh_hour + dt.timedelta(minutes=m), float(m)) for m in (1, 2, 3, 4)]
        assert insert_rows(cur, f"{name}.telemetry", fresh) == 4
        got = fetch_aggregate(cur, f"{name}.hourly", f"bucket = '{fresh_hour.isoformat()}'")
        assert_same(got, expected_stats(fresh, hour_of))

        # Late data below the watermark: invisible until the range is refreshed.
        late_hour = T0 + dt.timedelta(hours=7)
        late = [(3, late_hour + dt.timedelta(seconds=30), 999.0)]
        assert insert_rows(cur, f"{name}.telemetry", late) == 1
        where = f"sensor_id = 3 AND bucket = '{late_hour.isoformat()}'"
        before = fetch_aggregate(cur, f"{name}.hourly", where)
        assert before[(3, late_hour)]["max"] < 999.0
        cur.execute(
            f"CALL refresh_continuous_aggregate('{name}.hourly', %s, %s)",
            (late_hour - dt.timedelta(hours=1), late_hour + dt.timedelta(hours=2)),
        )
        after = fetch_aggregate(cur, f"{name}.hourly", where)
        in_bucket = [r for r in rows if r[0] == 3 and hour_of(r[1]) == late_hour] + late
        assert_same(after, expected_stats(in_bucket, hour_of))

        # refresh_continuous_aggregate needs autocommit (as on any TimescaleDB).
    with connect(autocommit=False) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.Error, match="cannot run inside a transaction block"):
            cur.execute(f"CALL refresh_continuous_aggregate('{name}.hourly', NULL, NULL)")
        conn.rollback()

    with connect() as conn, conn.cursor() as cur:  # put the data back as it was
        cur.execute(
            f"DELETE FROM {name}.telemetry WHERE (sensor_id = 2 AND ts >= %s) OR (sensor_id = 3 AND value = 999.0)",
            (fresh_hour,),
        )
        assert cur.rowcount == 5
        cur.execute(f"CALL refresh_continuous_aggregate('{name}.hourly', NULL, NULL)")
        assert_same(fetch_aggregate(cur, f"{name}.hourly"), expected_stats(rows, hour_of))


def test_percentile_array_and_on_off_share_in_cagg(schema):
    """Other forms a cagg accepts here: percentile_cont(array[...]) and avg of a boolean cast."""
    name, rows = schema
    with connect() as conn, conn.cursor() as cur:
        cur.execute(
            f"""CREATE MATERIALIZED VIEW {name}.extra
                WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
                SELECT sensor_id, time_bucket('1 hour', ts) AS bucket,
                       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY value) AS p,
                       avg((value > 25)::int) AS share_on
                FROM {name}.telemetry GROUP BY sensor_id, bucket WITH NO DATA"""
        )
        cur.execute(f"CALL refresh_continuous_aggregate('{name}.extra', NULL, NULL)")
        cur.execute(f"SELECT sensor_id, bucket, p, share_on FROM {name}.extra")
        got = {(r[0], r[1]): (r[2], r[3]) for r in cur.fetchall()}
        cur.execute(f"DROP MATERIALIZED VIEW {name}.extra")
    want = expected_stats(rows, hour_of)
    groups = defaultdict(list)
    for s, ts, v in rows:
        groups[(s, hour_of(ts))].append(v)
    assert set(got) == set(want)
    for key, (p, share) in got.items():
        assert [round(x, 9) for x in p] == [round(want[key][k], 9) for k in ("p50", "p95", "p99")]
        vs = groups[key]
        assert close(share, sum(v > 25 for v in vs) / len(vs))


def test_policies_exist_but_only_run_when_called(schema):
    """Policies are accepted and listed; no background worker runs them; run_job does."""
    name, _ = schema
    now = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    old = [(1, now - dt.timedelta(days=40, minutes=m), 1.0 + m) for m in range(1, 6)]
    recent = [(1, now - dt.timedelta(days=1, minutes=m), 2.0 + m) for m in range(1, 6)]
    with connect() as conn, conn.cursor() as cur:
        table = f"{name}.telemetry"
        insert_rows(cur, table, old + recent)
        cur.execute(
            f"""SELECT add_continuous_aggregate_policy('{name}.hourly',
                    start_offset => interval '30 days', end_offset => interval '1 hour',
                    schedule_interval => interval '30 minutes')"""
        )
        refresh_job = cur.fetchone()[0]
        cur.execute(f"SELECT add_retention_policy('{table}', drop_after => interval '30 days')")
        retention_job = cur.fetchone()[0]
        cur.execute(
            """SELECT job_id, proc_name, schedule_interval FROM timescaledb_information.jobs
               WHERE job_id IN (%s, %s) ORDER BY job_id""",
            (refresh_job, retention_job),
        )
        assert cur.fetchall() == [
            (refresh_job, "policy_refresh_continuous_aggregate", dt.timedelta(minutes=30)),
            (retention_job, "policy_retention", dt.timedelta(days=1)),
        ]

        # Materialise everything first (the old rows are outside the policy's 30-day window),
        # then run the retention job: raw rows older than 30 days go, their buckets stay.
        cur.execute(f"CALL refresh_continuous_aggregate('{name}.hourly', NULL, NULL)")
        cur.execute("CALL run_job(%s)", (refresh_job,))
        old_hour = hour_of(old[0][1])
        cur.execute(f"SELECT count(*) FROM {table} WHERE ts < now() - interval '30 days'")
        assert cur.fetchone()[0] > 0
        cur.execute("CALL run_job(%s)", (retention_job,))
        cur.execute(f"SELECT count(*) FROM {table} WHERE ts < now() - interval '30 days'")
        assert cur.fetchone()[0] == 0
        cur.execute(f"SELECT count(*) FROM {table} WHERE ts >= now() - interval '2 days'")
        assert cur.fetchone()[0] == len(recent)
        got = fetch_aggregate(cur, f"{name}.hourly", f"sensor_id = 1 AND bucket = '{old_hour.isoformat()}'")
        assert got[(1, old_hour)]["n"] == len([r for r in old if hour_of(r[1]) == old_hour])

        # drop_chunks is the explicit equivalent of the retention job.
        cur.execute(f"SELECT count(*) FROM drop_chunks('{table}', older_than => interval '30 days')")
        assert cur.fetchone()[0] == 0

        cur.execute("SELECT delete_job(%s)", (refresh_job,))
        cur.execute("SELECT remove_retention_policy(%s)", (table,))


def test_session_is_reset_between_connections():
    """One backend session serves every client; the server resets it on disconnect."""
    with connect(autocommit=False) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE leftover (a int)")
        cur.execute("SET TimeZone = 'Asia/Tokyo'")
        cur.execute("SELECT pg_advisory_lock(424242)")
        # closed without COMMIT, inside a transaction, holding an advisory lock
    with connect() as conn, conn.cursor() as cur:
        assert conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        cur.execute("SELECT to_regclass('pg_temp.leftover') IS NULL, current_setting('TimeZone')")
        assert cur.fetchone() == (True, "GMT")
        cur.execute("SELECT pg_try_advisory_lock(424242)")
        assert cur.fetchone()[0] is True
        cur.execute("SELECT pg_advisory_unlock(424242)")
        cur.execute("SHOW search_path")  # PGlite's own session setting survives the reset
        assert "public" in cur.fetchone()[0]
        cur.execute("SELECT time_bucket('1 hour', now()) IS NOT NULL")
        assert cur.fetchone()[0] is True
