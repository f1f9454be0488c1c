"""Hourly and daily aggregates per database mode: refreshing them, and dropping the raw data they have materialised.

Both modes expose the relations `telemetry_hourly` and `telemetry_daily` with the same
columns (migrations 0004). On plain PostgreSQL they are views over materialised tables below a
watermark plus live aggregation above it, and this module's refresh keeps them: it
re-materialises every bucket that a batch logged in `aggregate_touched` and moves the watermark
to the start of the current bucket. On TimescaleDB they are continuous aggregates and the
refresh is TimescaleDB's own.

Hourly buckets are UTC hours; daily buckets are days in AGGREGATE_TIMEZONE, recorded in
aggregate_settings so that the live part of the view uses the zone the buckets were made in.
Both modes, and why raw data never goes before it is materialised: docs/architecture.md §5.5, §6.6.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from easysmart import partitions
from easysmart.db import Database, one_row
from easysmart.errors import DatabaseTimeoutError

logger = logging.getLogger(__name__)

REFRESH_LOCK = "esm_aggregate_refresh"
# aggregate_settings key of the generation of materialised buckets a cache may rely on (easysmart.analytics_cache)
CACHE_GENERATION_KEY = "cache_generation"

# (relation, materialised table, bucket of a timestamptz expression, bucket width)
# The daily bucket relies on the transaction's TimeZone being the aggregate zone (SET LOCAL).
_AGGREGATES = (
    ("telemetry_hourly", "telemetry_hourly_mat", "esm_hour_bucket({ts})", "1 hour"),
    ("telemetry_daily", "telemetry_daily_mat", "date_trunc('day', {ts})", "1 day"),
)

_STATISTICS = (
    "avg(value), min(value), max(value), count(*), stddev_samp(value),"
    " percentile_cont(0.5) WITHIN GROUP (ORDER BY value), percentile_cont(0.95) WITHIN GROUP (ORDER BY value),"
    " percentile_cont(0.99) WITHIN GROUP (ORDER BY value), count(value), sum(value)"
)
_COLUMNS = (
    "bucket, equipment_id, sensor_id, avg_value, min_value, max_value, sample_count, stddev_value,"
    " median_value, p95_value, p99_value, value_count, value_sum"
)


@dataclass
class RefreshReport:
    mode: str
    late_ranges: int = 0
    buckets_written: dict[str, int] = field(default_factory=dict)
    watermarks: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict:
        return {
            "mode": self.mode,
            "late_ranges": self.late_ranges,
            "buckets_written": self.buckets_written,
            "watermarks": self.watermarks,
        }


class AggregateBackend:
    """What a database mode must provide; the public functions below hold the shared logic."""

    mode = ""

    def refresh(self, db: Database, zone: str) -> RefreshReport:
        raise NotImplementedError

    def materialised_before_sql(self) -> str:
        """SQL for the time before which every aggregate has materialised the raw data."""
        raise NotImplementedError

    def ensure_raw_partitions(self, db: Database, first: date, last: date, lock_timeout_s: float) -> dict:
        """Make the raw table ready for readings from day first to day last; returns what was done, for the
        retention report (a step whose lock was not free within lock_timeout_s is left to the next run)."""
        raise NotImplementedError

    def drop_raw_before(self, db: Database, cutoff: datetime, lock_timeout_s: float) -> dict:
        """Drop raw rows older than cutoff that every aggregate has materialised, with no refresh running
        meanwhile (REFRESH_LOCK), waiting at most lock_timeout_s for the raw table's locks (what could not
        go then goes in the next run); returns what was dropped, for the retention report."""
        raise NotImplementedError


class PlainAggregates(AggregateBackend):
    """Plain PostgreSQL: watermarks, a log of late ranges, re-materialisation by DELETE + INSERT."""

    mode = "postgres"

    def refresh(self, db: Database, zone: str) -> RefreshReport:
        report = RefreshReport(self.mode)
        with db.transaction() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (REFRESH_LOCK,))
            cursor.execute("SELECT set_config('TimeZone', %s, true)", (zone,))
            past_rewritten = self._apply_zone(cursor, zone)
            cursor.execute("SELECT max(id), count(*) FROM aggregate_touched")
            max_id, logged = one_row(cursor)
            report.late_ranges = logged
            for name, table, bucket, width in _AGGREGATES:
                written, late = self._refresh_one(cursor, name, table, bucket, width, max_id or 0)
                report.buckets_written[name] = written
                past_rewritten = past_rewritten or late
            if past_rewritten:
                # Buckets below a watermark changed: cached history answers made before are not used again
                # (easysmart.analytics_cache). Moving a watermark on changes none of them.
                cursor.execute(
                    "INSERT INTO aggregate_settings (key, value) VALUES (%(key)s, '1') ON CONFLICT (key)"
                    " DO UPDATE SET value = (aggregate_settings.value::bigint + 1)::text",
                    {"key": CACHE_GENERATION_KEY},
                )
            cursor.execute("DELETE FROM aggregate_touched WHERE id <= %s", (max_id or 0,))
            cursor.execute(
                "SELECT name, CASE WHEN isfinite(watermark) THEN to_char(watermark AT TIME ZONE 'UTC',"
                ' \'YYYY-MM-DD"T"HH24:MI:SS"Z"\') END FROM aggregate_watermarks ORDER BY name'
            )
            report.watermarks = dict(cursor.fetchall())
        logger.info("aggregates refreshed", extra=report.body())
        return report

    def _apply_zone(self, cursor, zone: str) -> bool:
        """Whether the daily buckets were rebuilt for a new zone."""
        cursor.execute("SELECT value FROM aggregate_settings WHERE key = 'daily_timezone' FOR UPDATE")
        (stored,) = cursor.fetchone()
        if stored == zone:
            return False
        # Daily buckets in the old zone are rebuilt from the raw data that is still there;
        # older ones (their raw rows are gone) stay as they were made.
        logger.warning("daily aggregate zone changes from %s to %s", stored, zone)
        cursor.execute("UPDATE aggregate_settings SET value = %s WHERE key = 'daily_timezone'", (zone,))
        floor = self._floor_sql("date_trunc('day', {ts})", "1 day")
        cursor.execute(f"DELETE FROM telemetry_daily_mat WHERE bucket >= ({floor})")
        cursor.execute(f"UPDATE aggregate_watermarks SET watermark = ({floor}) WHERE name = 'telemetry_daily'")
        return True

    @staticmethod
    def _floor_sql(bucket: str, width: str) -> str:
        """The first bucket whose raw data is complete (starts at or after the raw horizon)."""
        at = bucket.format(ts="h")
        return (
            f"SELECT CASE WHEN h = '-infinity' THEN h WHEN {at} < h THEN {at} + interval '{width}' ELSE {at} END"
            " FROM (SELECT value::timestamptz AS h FROM aggregate_settings WHERE key = 'raw_horizon') s"
        )

    def _refresh_one(self, cursor, name: str, table: str, bucket: str, width: str, max_id: int) -> tuple[int, bool]:
        """Buckets written, and whether any was below the old watermark (late data)."""
        written = 0
        old = "(SELECT watermark FROM aggregate_watermarks WHERE name = %(name)s)"
        # Logged ranges below the old watermark, as whole buckets, merged (range_agg).
        cursor.execute(
            f"WITH bounds AS (SELECT greatest({bucket.format(ts='lo')}, ({self._floor_sql(bucket, width)})) AS a,"
            f" least({bucket.format(ts='hi')} + interval '{width}', {old}) AS e"
            " FROM aggregate_touched WHERE id <= %(max_id)s)"
            " SELECT lower(r), upper(r) FROM (SELECT unnest(range_agg(tstzrange(a, e))) AS r"
            " FROM bounds WHERE a < e) x",
            {"name": name, "max_id": max_id},
        )
        ranges = cursor.fetchall()
        for start, end in ranges:
            written += self._materialise(cursor, table, bucket, "%(start)s", "%(end)s", {"start": start, "end": end})
        # Everything from the old watermark to the start of the current bucket.
        new = bucket.format(ts="now()")
        cursor.execute(f"SELECT {old} < {new}", {"name": name})
        if cursor.fetchone()[0]:
            written += self._materialise(cursor, table, bucket, old, new, {"name": name})
            cursor.execute(
                f"UPDATE aggregate_watermarks SET watermark = {new}, refreshed_at = now() WHERE name = %(name)s",
                {"name": name},
            )
        else:
            cursor.execute("UPDATE aggregate_watermarks SET refreshed_at = now() WHERE name = %(name)s", {"name": name})
        return written, bool(ranges)

    @staticmethod
    def _materialise(cursor, table: str, bucket: str, start: str, end: str, params: dict) -> int:
        cursor.execute(f"DELETE FROM {table} WHERE bucket >= {start} AND bucket < {end}", params)
        cursor.execute(
            f"INSERT INTO {table} ({_COLUMNS})"
            f" SELECT {bucket.format(ts='ts')}, equipment_id, sensor_id, {_STATISTICS}"
            f" FROM telemetry_data WHERE ts >= {start} AND ts < {end} GROUP BY 1, 2, 3",
            params,
        )
        return cursor.rowcount

    def materialised_before_sql(self) -> str:
        return "(SELECT min(watermark) FROM aggregate_watermarks)"

    def ensure_raw_partitions(self, db: Database, first: date, last: date, lock_timeout_s: float) -> dict:
        return partitions.create_window(db, first, last, lock_timeout_s)

    def drop_raw_before(self, db: Database, cutoff: datetime, lock_timeout_s: float) -> dict:
        """Drops whole daily partitions, oldest first, and stops at the first one not yet materialised.

        The raw horizon first moves past the days that go, under the refresh lock, so that no refresh
        rebuilds their buckets from what is left of them; then each day is detached and dropped outside
        any transaction (partitions.drop_day), and one whose locks are not free in time is left, with
        the days after it, to the next run."""
        with db.transaction() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (REFRESH_LOCK,))
            droppable, kept_unmaterialised = [], []
            for day in partitions.tables_before(cursor, cutoff.astimezone(timezone.utc).date()):
                end = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)
                if end > cutoff:
                    break
                cursor.execute(
                    f"SELECT %(end)s <= {self.materialised_before_sql()}"
                    " AND NOT EXISTS (SELECT 1 FROM aggregate_touched WHERE lo < %(end)s)",
                    {"end": end},
                )
                if not one_row(cursor)[0]:
                    kept_unmaterialised.append(day.isoformat())
                    break
                droppable.append(day)
            if droppable:
                cursor.execute(
                    "UPDATE aggregate_settings SET value = greatest(value::timestamptz, %s)::text"
                    " WHERE key = 'raw_horizon'",
                    (datetime.combine(droppable[-1] + timedelta(days=1), datetime.min.time(), timezone.utc),),
                )
        if kept_unmaterialised:
            logger.warning(
                "raw partitions past retention kept: not yet materialised", extra={"days": kept_unmaterialised}
            )
        dropped: list[str] = []
        for day in droppable:
            try:
                partitions.drop_day(db, day, lock_timeout_s)
            except DatabaseTimeoutError:
                deferred = [later.isoformat() for later in droppable[len(dropped) :]]
                logger.warning(
                    "raw partitions past retention not dropped yet: a lock was not free in time; the next run retries",
                    extra={"days": deferred},
                )
                break
            dropped.append(day.isoformat())
        return {
            "raw_partitions_dropped": dropped,
            "raw_partitions_kept_unmaterialised": kept_unmaterialised,
            "raw_partitions_drop_deferred": [day.isoformat() for day in droppable[len(dropped) :]],
        }


class TimescaleAggregates(AggregateBackend):
    """TimescaleDB: continuous aggregates refresh themselves (policies); a refresh on demand
    covers the raw retention window. Needs the 0004_aggregates.timescaledb.sql migration."""

    mode = "timescaledb"

    def __init__(self, window_days: int = 30) -> None:
        self.window_days = window_days

    def refresh(self, db: Database, zone: str) -> RefreshReport:
        report = RefreshReport(self.mode)
        with db.connection() as conn:
            # refresh_continuous_aggregate cannot run inside a transaction block.
            conn.autocommit = True
            try:
                with conn.cursor() as cursor:
                    for name, _, _, _ in _AGGREGATES:
                        cursor.execute(
                            "CALL refresh_continuous_aggregate(%s, now() - make_interval(days => %s), now())",
                            (name, self.window_days + 1),
                        )
                        report.buckets_written[name] = -1
                    cursor.execute("DELETE FROM aggregate_touched")
            finally:
                conn.autocommit = False
        return report

    def materialised_before_sql(self) -> str:
        # Continuous aggregates with real-time aggregation: refreshed windows are materialised.
        return (
            "(SELECT coalesce(min(_timescaledb_functions.to_timestamp("
            "_timescaledb_functions.cagg_watermark_materialized(mat_hypertable_id))), '-infinity'::timestamptz)"
            " FROM _timescaledb_catalog.continuous_agg WHERE user_view_schema = current_schema()"
            " AND user_view_name IN ('telemetry_hourly', 'telemetry_daily'))"
        )

    def ensure_raw_partitions(self, db: Database, first: date, last: date, lock_timeout_s: float) -> dict:
        return {}  # TimescaleDB makes the chunks itself

    def drop_raw_before(self, db: Database, cutoff: datetime, lock_timeout_s: float) -> dict:
        """Drops hypertable chunks older than both the cutoff and the continuous aggregates' watermark."""
        try:
            with db.transaction() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (REFRESH_LOCK,))
                cursor.execute("SELECT set_config('lock_timeout', %s, true)", (f"{round(lock_timeout_s * 1000)}ms",))
                cursor.execute(
                    f"SELECT count(*) FROM drop_chunks('telemetry_data', older_than => least(%s,"
                    f" {self.materialised_before_sql()}))",
                    (cutoff,),
                )
                return {"raw_chunks_dropped": one_row(cursor)[0], "raw_chunks_drop_deferred": False}
        except DatabaseTimeoutError:
            logger.warning(
                "raw chunks past retention not dropped yet: a lock was not free in time; the next run retries"
            )
            return {"raw_chunks_dropped": 0, "raw_chunks_drop_deferred": True}


def buckets_since_sql(relation: str, column: str) -> str:
    """SQL: the rows a plain-PostgreSQL aggregate view (0004) has from bucket %(since)s on for the equipment or
    sensor %(key)s (column), %(current_watermark)s being its watermark: materialised buckets below that, raw rows
    aggregated from it on, as the view reads them. The watermark given as a value, not the view's subquery, lets
    the planner leave out every raw partition before it (planning the view's whole raw table costs ten times
    more than reading the current hour)."""
    table = {"telemetry_hourly": "telemetry_hourly_mat", "telemetry_daily": "telemetry_daily_mat"}[relation]
    bucket = {
        "telemetry_hourly": "esm_hour_bucket(ts)",
        "telemetry_daily": "date_trunc('day', ts, esm_daily_timezone())",
    }[relation]
    return (
        f"(SELECT {_COLUMNS} FROM {table} WHERE {column} = %(key)s AND bucket >= %(since)s"
        f" AND bucket < %(current_watermark)s"
        f" UNION ALL SELECT {bucket}, equipment_id, sensor_id, {_STATISTICS} FROM telemetry_data"
        f" WHERE {column} = %(key)s AND ts >= %(current_watermark)s GROUP BY 1, 2, 3)"
    )


def backend_for(db: Database) -> AggregateBackend:
    """The backend of the mode the database was migrated in."""
    with db.transaction() as cursor:
        cursor.execute("SELECT mode FROM schema_migrations ORDER BY version LIMIT 1")
        row = cursor.fetchone()
    return TimescaleAggregates() if row and row[0] == "timescaledb" else PlainAggregates()


def refresh(db: Database, zone: str, backend: AggregateBackend | None = None) -> RefreshReport:
    """Bring telemetry_hourly and telemetry_daily up to date; idempotent and safe to run concurrently."""
    return (backend or backend_for(db)).refresh(db, zone)
