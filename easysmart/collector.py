"""The collector: figures that live outside a request, read on a schedule and served from a snapshot.

Each source (the object store, the database, the watched filesystems) is read by a thread of its own every
`interval_s`; a scrape of /metrics only renders the last figures each source read, so it never waits for a
listing or a query. A source that fails keeps its last figures, and esm_collector_last_success_timestamp_seconds
{source} says when it last worked. The object store is counted by key prefix and day (ingest's keys are
`raw/YYYY/MM/DD/<tenant>/<batch>.json.gz`), never by tenant.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterator, Protocol

import psycopg2.extensions
from prometheus_client import CollectorRegistry, Gauge, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector as PrometheusCollector
from psycopg2 import sql

from easysmart import partitions
from easysmart.aggregates import backend_for
from easysmart.clock import Clock, MonotonicClock, utc_now
from easysmart.config import ConfigError
from easysmart.db import Database, one_row
from easysmart.metrics import (
    AGGREGATE_WATERMARK_AGE,
    BATCHES_STUCK,
    COLLECTOR_LAST_SUCCESS,
    DB_AGGREGATE_BYTES,
    DB_DATABASE_BYTES,
    DB_PARTITIONS,
    DB_RAW_BYTES,
    FILESYSTEM_FREE,
    FILESYSTEM_SIZE,
    HTTP_LATENCY,
    HTTP_REQUESTS,
    METRICS_DIR,
    OBJECT_STORE_BYTES,
    OBJECT_STORE_OBJECTS,
    OUTBOX_OLDEST_WAITING_AGE,
    OUTBOX_REFUSED,
    RAW_OLDEST_DAY,
)

logger = logging.getLogger(__name__)

# A source's figures: per gauge, per label values, the value. AGGREGATE_WATERMARK_AGE holds when each aggregate
# was last refreshed (epoch seconds): the age is taken at each scrape, so it grows between reads as it should.
Figures = dict[Gauge, dict[tuple[str, ...], float]]

# Batches received longer ago than this are not looked at: their blobs are gone (BLOB_RETENTION_DAYS, 7 by
# default) and the range keeps the count on the batches_received index.
STUCK_LOOKBACK = timedelta(days=7)
_RAW_TABLE = "telemetry_data"
_DATED_KEY = re.compile(r"^(?P<prefix>[^/]+)/(?P<year>\d{4})/(?P<month>\d{2})/(?P<day>\d{2})/")


class Source(Protocol):
    name: str
    interval_s: float

    def read(self) -> Figures: ...


def key_group(key: str) -> tuple[str, str]:
    """(prefix, day) of an object key: its first segment and, for a dated key, its YYYY-MM-DD; `none` otherwise."""
    match = _DATED_KEY.match(key)
    if match:
        return match["prefix"], f"{match['year']}-{match['month']}-{match['day']}"
    prefix, slash, _ = key.partition("/")
    return (prefix if slash else "none"), "none"


@dataclass
class ObjectStoreSource:
    """Lists the whole bucket and counts objects and bytes by key prefix and day."""

    client: object  # a boto3 S3 client
    bucket: str
    interval_s: float
    name: str = "object_store"

    def read(self) -> Figures:
        objects: dict[tuple[str, ...], float] = {}
        sizes: dict[tuple[str, ...], float] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):  # type: ignore[attr-defined]
            for item in page.get("Contents", ()):
                group = key_group(item["Key"])
                objects[group] = objects.get(group, 0) + 1
                sizes[group] = sizes.get(group, 0) + item["Size"]
        return {OBJECT_STORE_OBJECTS: objects, OBJECT_STORE_BYTES: sizes}


class DatabaseFigures:
    """What differs between the database modes: the raw table's partitions or chunks, the aggregates' storage
    and their last refresh. Each method runs on a read-only transaction's cursor."""

    def raw(self, cursor: psycopg2.extensions.cursor) -> tuple[float, int, datetime | None]:
        """Bytes of the raw readings, their partitions or chunks, and the start of the oldest day holding any."""
        raise NotImplementedError

    def aggregate_bytes(self, cursor: psycopg2.extensions.cursor) -> dict[str, float]:
        raise NotImplementedError

    def last_refreshes(self, cursor: psycopg2.extensions.cursor) -> dict[str, float]:
        """When each aggregate was last refreshed (epoch seconds); an aggregate never refreshed is left out."""
        raise NotImplementedError


class PlainFigures(DatabaseFigures):
    """Plain PostgreSQL: day partitions of telemetry_data, materialised tables below a watermark."""

    _MATERIALISED = {"telemetry_hourly": "telemetry_hourly_mat", "telemetry_daily": "telemetry_daily_mat"}

    def raw(self, cursor: psycopg2.extensions.cursor) -> tuple[float, int, datetime | None]:
        cursor.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass",
            (_RAW_TABLE,),
        )
        sizes = dict(cursor.fetchall())
        oldest = None
        # Retention makes the partitions of the whole accepted window ahead of time: the oldest day kept is the
        # oldest partition holding a row (one cheap EXISTS per partition, oldest first).
        for day, name in sorted((partitions.day_of(name), name) for name in sizes if partitions.day_of(name)):
            cursor.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.Identifier(name)))
            if one_row(cursor)[0]:
                oldest = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)  # type: ignore[union-attr]
                break
        return float(sum(sizes.values())), len(sizes), oldest

    def aggregate_bytes(self, cursor: psycopg2.extensions.cursor) -> dict[str, float]:
        out = {}
        for aggregate, table in self._MATERIALISED.items():
            cursor.execute("SELECT pg_total_relation_size(%s::regclass)", (table,))
            out[aggregate] = float(one_row(cursor)[0])
        return out

    def last_refreshes(self, cursor: psycopg2.extensions.cursor) -> dict[str, float]:
        cursor.execute(
            "SELECT name, extract(epoch FROM refreshed_at) FROM aggregate_watermarks WHERE refreshed_at IS NOT NULL"
        )
        return {name: float(at) for name, at in cursor.fetchall()}


class TimescaleFigures(DatabaseFigures):
    """TimescaleDB: chunks of the telemetry_data hypertable, continuous aggregates refreshed by their policies."""

    def raw(self, cursor: psycopg2.extensions.cursor) -> tuple[float, int, datetime | None]:
        cursor.execute("SELECT hypertable_size(%s::regclass)", (_RAW_TABLE,))
        size = float(one_row(cursor)[0] or 0)
        # Chunks are made by inserts, so each holds rows; one spans a UTC day (chunk_time_interval, migration 0003).
        cursor.execute(
            "SELECT count(*), min(range_start) FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = current_schema() AND hypertable_name = %s",
            (_RAW_TABLE,),
        )
        count, oldest = one_row(cursor)
        return size, int(count), oldest

    def aggregate_bytes(self, cursor: psycopg2.extensions.cursor) -> dict[str, float]:
        cursor.execute(
            "SELECT view_name, hypertable_size(format('%I.%I', materialization_hypertable_schema,"
            " materialization_hypertable_name)::regclass) FROM timescaledb_information.continuous_aggregates"
            " WHERE view_schema = current_schema()"
        )
        return {name: float(size or 0) for name, size in cursor.fetchall()}

    def last_refreshes(self, cursor: psycopg2.extensions.cursor) -> dict[str, float]:
        # The policies' last successful run (a refresh on demand, `esm` or retention's, is not recorded there).
        cursor.execute(
            "SELECT a.view_name, extract(epoch FROM max(s.last_successful_finish))"
            " FROM timescaledb_information.continuous_aggregates a"
            # A policy's job names the continuous aggregate, or its materialisation hypertable in some releases.
            " JOIN timescaledb_information.jobs j ON (j.hypertable_schema, j.hypertable_name) IN"
            " ((a.view_schema, a.view_name), (a.materialization_hypertable_schema, a.materialization_hypertable_name))"
            " JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id"
            " WHERE a.view_schema = current_schema() AND j.proc_name = 'policy_refresh_continuous_aggregate'"
            " AND s.last_successful_finish > '-infinity' GROUP BY a.view_name"
        )
        return {name: float(at) for name, at in cursor.fetchall() if at is not None}


@dataclass
class DatabaseSource:
    """Sizes, partitions, the aggregates' last refresh, the oldest raw day, stuck batches and the outbox's oldest
    waiting and refused events, in one read-only transaction of catalogue lookups and small counts. `figures` is the
    mode's (found from the migrations unless given)."""

    db: Database
    stuck_after_s: float
    interval_s: float
    clock: Clock = utc_now
    name: str = "database"
    figures: DatabaseFigures | None = None

    def read(self) -> Figures:
        if self.figures is None:
            self.figures = TimescaleFigures() if backend_for(self.db).mode == "timescaledb" else PlainFigures()
        now = self.clock()
        with self.db.transaction() as cursor:
            cursor.execute("SET TRANSACTION READ ONLY")
            raw_bytes, raw_partitions, oldest = self.figures.raw(cursor)
            aggregate_bytes = self.figures.aggregate_bytes(cursor)
            refreshed = self.figures.last_refreshes(cursor)
            cursor.execute("SELECT pg_database_size(current_database())")
            database_bytes = float(one_row(cursor)[0])
            cursor.execute(
                "SELECT count(*) FROM batches WHERE status = 'processing' AND received_at >= %s AND received_at < %s",
                (now - STUCK_LOOKBACK, now - timedelta(seconds=self.stuck_after_s)),
            )
            stuck = float(one_row(cursor)[0])
            # The relay's partial index gives the oldest waiting row; refused rows are few (kept a week).
            cursor.execute(
                "SELECT created_at FROM event_outbox WHERE published_at IS NULL AND refused_at IS NULL"
                " ORDER BY id LIMIT 1"
            )
            oldest_waiting = cursor.fetchone()
            cursor.execute("SELECT topic, count(*) FROM event_outbox WHERE refused_at IS NOT NULL GROUP BY topic")
            refused: dict[tuple[str, ...], float] = {(topic,): float(count) for topic, count in cursor.fetchall()}
        figures: Figures = {
            DB_RAW_BYTES: {(): raw_bytes},
            DB_PARTITIONS: {(_RAW_TABLE,): float(raw_partitions)},
            DB_AGGREGATE_BYTES: {(name,): size for name, size in aggregate_bytes.items()},
            AGGREGATE_WATERMARK_AGE: {(name,): at for name, at in refreshed.items()},
            DB_DATABASE_BYTES: {(): database_bytes},
            BATCHES_STUCK: {(): stuck},
            OUTBOX_OLDEST_WAITING_AGE: {
                (): max(0.0, (now - oldest_waiting[0]).total_seconds()) if oldest_waiting else 0.0
            },
            OUTBOX_REFUSED: refused,
        }
        if oldest is not None:
            figures[RAW_OLDEST_DAY] = {(): oldest.timestamp()}
        return figures


def watch_paths(spec: tuple[str, ...]) -> dict[str, str]:
    """COLLECTOR_WATCH_PATHS's name=path pairs."""
    out = {}
    for entry in spec:
        name, _, path = entry.partition("=")
        if not name or not path:
            raise ConfigError(f"COLLECTOR_WATCH_PATHS: {entry!r} is not name=path")
        out[name] = path
    return out


@dataclass
class FilesystemSource:
    """Free and total bytes of each watched path's filesystem (as an unprivileged writer sees them)."""

    paths: dict[str, str]
    interval_s: float
    name: str = "filesystem"

    def read(self) -> Figures:
        free: dict[tuple[str, ...], float] = {}
        size: dict[tuple[str, ...], float] = {}
        for volume, path in self.paths.items():
            stat = os.statvfs(path)
            free[(volume,)] = float(stat.f_bavail * stat.f_frsize)
            size[(volume,)] = float(stat.f_blocks * stat.f_frsize)
        return {FILESYSTEM_FREE: free, FILESYSTEM_SIZE: size}


# Every gauge the collector serves, in the order of the exposition.
SERVED = (
    OBJECT_STORE_OBJECTS,
    OBJECT_STORE_BYTES,
    DB_RAW_BYTES,
    DB_AGGREGATE_BYTES,
    DB_PARTITIONS,
    DB_DATABASE_BYTES,
    AGGREGATE_WATERMARK_AGE,
    RAW_OLDEST_DAY,
    BATCHES_STUCK,
    OUTBOX_OLDEST_WAITING_AGE,
    OUTBOX_REFUSED,
    FILESYSTEM_FREE,
    FILESYSTEM_SIZE,
)


class Collector(PrometheusCollector):
    """The snapshot of every source, refreshed by `refresh_due` (the threads of `start`), rendered by `collect`.

    `clock` dates the successes and ages the watermarks; `monotonic` says when a source is due.
    """

    def __init__(
        self, sources: list[Source], clock: Clock = utc_now, monotonic: MonotonicClock = time.monotonic
    ) -> None:
        self.sources = sources
        self.clock = clock
        self.monotonic = monotonic
        self._figures: dict[str, Figures] = {}
        self._succeeded_at: dict[str, float] = {}
        self._attempted_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def refresh(self, source: Source) -> None:
        """Reads one source; on failure its last figures stay."""
        self._attempted_at[source.name] = self.monotonic()
        try:
            figures = source.read()
        except Exception:  # any source may fail any way (network, timeouts, permissions); the others go on
            logger.warning(
                "collector source failed; its last figures stay", extra={"source": source.name}, exc_info=True
            )
            return
        with self._lock:
            self._figures[source.name] = figures
            self._succeeded_at[source.name] = self.clock().timestamp()

    def refresh_due(self) -> None:
        """Reads every source whose interval has passed since its last attempt (or never read)."""
        for source in self.sources:
            attempted = self._attempted_at.get(source.name)
            if attempted is None or self.monotonic() - attempted >= source.interval_s:
                self.refresh(source)

    def start(self, stopping: threading.Event) -> None:
        """One daemon thread per source, each reading it now and then every interval until `stopping` is set."""

        def loop(source: Source) -> None:
            while True:
                self.refresh(source)
                if stopping.wait(source.interval_s):
                    return

        for source in self.sources:
            threading.Thread(target=loop, args=(source,), name=f"collector-{source.name}", daemon=True).start()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            snapshots = list(self._figures.values())
            succeeded = dict(self._succeeded_at)
        now = self.clock().timestamp()
        for gauge in (*SERVED, COLLECTOR_LAST_SUCCESS):
            [described] = gauge.describe()
            # The catalogue's label names: the figures' label values are in that order.
            family = GaugeMetricFamily(described.name, described.documentation, labels=gauge._labelnames)
            if gauge is COLLECTOR_LAST_SUCCESS:
                for source, at in sorted(succeeded.items()):
                    family.add_metric([source], at)
            for figures in snapshots:
                for labels, value in sorted(figures.get(gauge, {}).items()):
                    family.add_metric(list(labels), now - value if gauge is AGGREGATE_WATERMARK_AGE else value)
            yield family


def exposition_registry(collector: Collector) -> CollectorRegistry:
    """The collector's /metrics: its own HTTP metrics (summed over workers when PROMETHEUS_MULTIPROC_DIR is set)
    and the snapshot. The rest of the catalogue is not its own to export."""
    registry = CollectorRegistry()
    if METRICS_DIR:
        multiprocess.MultiProcessCollector(registry, METRICS_DIR)
    else:
        registry.register(HTTP_REQUESTS)
        registry.register(HTTP_LATENCY)
    registry.register(collector)
    return registry
