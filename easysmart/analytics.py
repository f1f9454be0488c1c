"""The analytics API: equipment lists, histories (raw or through the aggregates), stats and the
Home Assistant view. Tenant-scoped: another tenant's ids are 404 exactly like unknown ones.

Response shapes are those of the product's earlier API, which dashboard clients read. Times
are ISO-8601 in UTC; statistics are JSON numbers or null. Every list is paged by keyset
(`limit`, opaque `cursor` / `next_cursor`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Mapping
from zoneinfo import ZoneInfo

import orjson

from easysmart.aggregates import CACHE_GENERATION_KEY, buckets_since_sql
from easysmart.alerting.api import open_alerts
from easysmart.analytics_cache import HistoryCache, MaterialisedPart, cache_key
from easysmart.config import AggregateSettings
from easysmart.db import Database
from easysmart.errors import ForbiddenError, NotFoundError
from easysmart.identity import Principal
from easysmart.metrics import ANALYTICS_CACHE_LOOKUPS
from easysmart.params import (
    MAX_LIMIT,
    bad_parameter,
    decode_cursor,
    encode_cursor,
    iso,
    parse_int,
    parse_limit,
    parse_time,
)
from easysmart.payload import canonical_kind

DEFAULT_WINDOW = timedelta(hours=24)
RAW_UP_TO = timedelta(days=2)
HOURLY_UP_TO = timedelta(days=60)
PERIODS = ("raw", "hour", "day", "auto")
STATS_PERIODS = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "1y": timedelta(days=365),
}
_RELATIONS = {"hour": "telemetry_hourly", "day": "telemetry_daily"}


@dataclass(frozen=True)
class PeriodSpans:
    """The longest window a history may cover per period, so no request walks unbounded rows."""

    raw: timedelta = timedelta(days=7)
    hour: timedelta = timedelta(days=93)
    day: timedelta = timedelta(days=5 * 366)

    def of(self, period: str) -> timedelta:
        return {"raw": self.raw, "hour": self.hour, "day": self.day}[period]


_METADATA = ("battery_pct", "lqi", "rssi", "battery_voltage", "voltage", "current", "power")


# Parameters (pure functions: unit-tested without a database)


def parse_window(args: Mapping[str, str], now: datetime) -> tuple[datetime, datetime]:
    """start_date/end_date; the last 24 hours by default, 24 hours around the one given."""
    start_text, end_text = args.get("start_date"), args.get("end_date")
    if start_text:
        start = parse_time("start_date", start_text)
        end = parse_time("end_date", end_text) if end_text else start + DEFAULT_WINDOW
    else:
        end = parse_time("end_date", end_text) if end_text else now
        start = end - DEFAULT_WINDOW
    if start >= end:
        raise bad_parameter("start_date", "must be before end_date")
    return start, end


def parse_period(raw: str | None, start: datetime, end: datetime, spans: PeriodSpans = PeriodSpans()) -> str:
    """The period asked for (auto: by the span), refused when the window is longer than it may cover."""
    period = (raw or "auto").strip().lower()
    if period not in PERIODS:
        raise bad_parameter("period", f"must be one of {', '.join(PERIODS)}, not {(raw or '')[:32]!r}")
    span = end - start
    if period == "auto":
        period = "raw" if span <= RAW_UP_TO else "hour" if span <= HOURLY_UP_TO else "day"
    longest = spans.of(period)
    if span > longest:
        raise bad_parameter(
            "period",
            f"{period} covers at most {longest.days} days; ask for a shorter window"
            f" between start_date and end_date or a coarser period",
        )
    return period


def parse_sensor_type(raw: str | None) -> str | None:
    if raw is None:
        return None
    kind = canonical_kind(raw)
    if kind is None:
        raise bad_parameter("sensor_type", "must not be empty")
    return kind


def hour_floor(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class _Page:
    """A keyset page: at most `limit` rows after the cursor's position (None: from the start)."""

    limit: int
    after: tuple | None

    @classmethod
    def from_args(cls, args: Mapping[str, str], tag: str, types: tuple[type, ...]) -> "_Page":
        """`limit` and `cursor` of a request; the cursor must be one this kind of request issued."""
        return cls(parse_limit(args.get("limit")), decode_cursor(args.get("cursor"), tag, types))

    def after_clause(self, time_column: str, sensor_column: str, params: dict) -> list[str]:
        """The condition for rows past the cursor's (time, sensor), its values put in params."""
        if not self.after:
            return []
        params.update(after_time=self.after[0], after_sensor=self.after[1])
        return [f"({time_column}, {sensor_column}) > (%(after_time)s, %(after_sensor)s)"]

    def split(self, rows: list) -> tuple[list, bool]:
        """The page's rows out of a query asked for limit + 1, and whether more follow."""
        return rows[: self.limit], len(rows) > self.limit


class AnalyticsService:
    def __init__(
        self,
        db: Database,
        aggregates: AggregateSettings,
        spans: PeriodSpans = PeriodSpans(),
        cache: HistoryCache | None = None,
    ) -> None:
        """cache: of the materialised part of aggregate answers; plain-PostgreSQL mode only (TimescaleDB's
        continuous aggregates refresh on their own schedule, which bumps no cache generation)."""
        self.db = db
        self.zone = aggregates.aggregate_timezone  # of the daily buckets
        self.spans = spans
        self.cache = cache

    # Endpoints

    def equipments(self, principal: Principal, args: Mapping[str, str]) -> dict:
        _require_user(principal)
        page = _Page.from_args(args, "e", (int,))
        with self.db.transaction() as cursor:
            cursor.execute(
                # Retired equipment is hidden; names and locations set over the admin API win over the uploads'.
                "SELECT id, uuid, coalesce(display_name, name), coalesce(display_location, location), status"
                " FROM equipment WHERE tenant_id = %s AND retired_at IS NULL AND id > %s ORDER BY id LIMIT %s",
                (principal.tenant_id, page.after[0] if page.after else 0, page.limit + 1),
            )
            rows, more = page.split(cursor.fetchall())
            cursor.execute(
                "SELECT s.equipment_id, s.uuid, s.name, s.kind, s.unit, s.status, l.ts, l.value, l.state"
                " FROM sensors s LEFT JOIN LATERAL (SELECT ts, value, state FROM telemetry_data t"
                "  WHERE t.sensor_id = s.id ORDER BY ts DESC LIMIT 1) l ON true"
                " WHERE s.equipment_id = ANY(%s) ORDER BY s.equipment_id, s.id",
                ([row[0] for row in rows],),
            )
            sensors: dict[int, list[dict]] = {}
            for equipment_id, uuid, name, kind, unit, status, ts, value, state in cursor.fetchall():
                sensors.setdefault(equipment_id, []).append(
                    {
                        "sensor_uuid": uuid,
                        "name": name,
                        "sensor_type": kind,
                        "unit": unit,
                        "last_time": iso(ts),
                        "last_value": value,
                        "last_status": state if ts is not None else status,
                    }
                )
        return {
            "equipments": [
                {
                    "equipment_uuid": uuid,
                    "name": name,
                    "location": location,
                    "status": status,
                    "sensors": sensors.get(equipment_id, []),
                }
                for equipment_id, uuid, name, location, status in rows
            ],
            "next_cursor": encode_cursor("e", rows[-1][0]) if more else None,
        }

    def equipment_history(
        self, principal: Principal, equipment_uuid: str, args: Mapping[str, str], now: datetime | None = None
    ) -> dict:
        _require_user(principal)
        with self.db.transaction() as cursor:
            equipment_id = self._equipment_id(cursor, principal, equipment_uuid)
            body = self._history(cursor, principal, args, now, "equipment_id", equipment_id)
        return {"equipment_uuid": equipment_uuid, **body}

    def sensor_history(
        self, principal: Principal, sensor_uuid: str, args: Mapping[str, str], now: datetime | None = None
    ) -> dict:
        _require_user(principal)
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT id FROM sensors WHERE tenant_id = %s AND uuid = %s", (principal.tenant_id, sensor_uuid)
            )
            row = cursor.fetchone()
            if row is None:
                raise NotFoundError(f"sensor {sensor_uuid} not found")
            body = self._history(cursor, principal, args, now, "sensor_id", row[0])
        return {"sensor_uuid": sensor_uuid, **body}

    def equipment_stats(
        self, principal: Principal, equipment_uuid: str, args: Mapping[str, str], now: datetime | None = None
    ) -> dict:
        _require_user(principal)
        raw_period = args.get("period") or "24h"
        if raw_period not in STATS_PERIODS:
            raise bad_parameter("period", f"must be one of {', '.join(STATS_PERIODS)}, not {raw_period!r}")
        end = now or datetime.now(timezone.utc)
        start = end - STATS_PERIODS[raw_period]
        relation = "telemetry_daily" if raw_period == "1y" else "telemetry_hourly"
        with self.db.transaction() as cursor:
            equipment_id = self._equipment_id(cursor, principal, equipment_uuid)
            cursor.execute(
                f"SELECT s.uuid, s.name, s.kind, s.unit, a.overall_avg, a.overall_min, a.overall_max,"
                f" coalesce(a.total_samples, 0)"
                f" FROM sensors s LEFT JOIN (SELECT sensor_id, (sum(value_sum) / nullif(sum(value_count), 0))::float8"
                f"  AS overall_avg, min(min_value) AS overall_min, max(max_value) AS overall_max,"
                f"  sum(sample_count)::bigint AS total_samples FROM {relation}"
                f"  WHERE equipment_id = %(equipment)s AND bucket >= {self._bucket_floor(relation)}"
                f" AND bucket < %(end)s"
                f"  GROUP BY sensor_id) a ON a.sensor_id = s.id"
                f" WHERE s.equipment_id = %(equipment)s ORDER BY s.id LIMIT %(limit)s",
                {"equipment": equipment_id, "start": start, "end": end, "zone": self.zone, "limit": MAX_LIMIT},
            )
            sensors = [
                {
                    "sensor_uuid": uuid,
                    "sensor_name": name,
                    "sensor_type": kind,
                    "sensor_unit": unit,
                    "overall_avg": avg,
                    "overall_min": low,
                    "overall_max": high,
                    "total_samples": samples,
                }
                for uuid, name, kind, unit, avg, low, high, samples in cursor.fetchall()
            ]
        return {
            "equipment_uuid": equipment_uuid,
            "period": raw_period,
            "start_date": iso(start),
            "end_date": iso(end),
            "sensors": sensors,
        }

    def home_assistant(
        self, principal: Principal, equipment_uuid: str, args: Mapping[str, str], now: datetime | None = None
    ) -> dict:
        hours = parse_int("hours", args.get("hours"), 24, 1, 168)
        page = _Page.from_args(args, "ha", (str, int))
        start = hour_floor((now or datetime.now(timezone.utc)) - timedelta(hours=hours))
        with self.db.transaction() as cursor:
            equipment_id = self._equipment_id(cursor, principal, equipment_uuid)
            data, next_cursor = self._aggregate_rows(
                cursor,
                principal,
                _Selection("telemetry_hourly", "equipment_id", equipment_id, start, None, None),
                page,
                "ha",
                _home_assistant_row,
            )
            alerts = open_alerts(cursor, equipment_id)
        return {
            "equipment_uuid": equipment_uuid,
            "period_hours": hours,
            "data": data,
            "next_cursor": next_cursor,
            "open_alerts": alerts,
        }

    # Queries

    def _equipment_id(self, cursor, principal: Principal, equipment_uuid: str) -> int:
        cursor.execute(
            "SELECT id FROM equipment WHERE tenant_id = %s AND uuid = %s", (principal.tenant_id, equipment_uuid)
        )
        row = cursor.fetchone()
        if row is None:
            raise NotFoundError(f"equipment {equipment_uuid} not found")
        return row[0]

    def _history(
        self, cursor, principal: Principal, args: Mapping[str, str], now: datetime | None, column: str, key: int
    ) -> dict:
        start, end = parse_window(args, now or datetime.now(timezone.utc))
        period = parse_period(args.get("period"), start, end, self.spans)
        kind = parse_sensor_type(args.get("sensor_type"))
        tag = period[0]
        page = _Page.from_args(args, tag, (str, int))
        data: list[dict] | orjson.Fragment
        if period == "raw":
            data, next_cursor = self._raw_rows(cursor, column, key, start, end, kind, page)
        else:
            data, next_cursor = self._aggregate_rows(
                cursor,
                principal,
                _Selection(_RELATIONS[period], column, key, start, end, kind),
                page,
                tag,
                _history_row,
            )
        return {
            "period": period,
            "start_date": iso(start),
            "end_date": iso(end),
            "data": data,
            "next_cursor": next_cursor,
        }

    def _bucket_floor(self, relation: str) -> str:
        """SQL: the start of the bucket holding %(start)s."""
        if relation == "telemetry_hourly":
            return "date_bin('1 hour', %(start)s::timestamptz, timestamptz '2000-01-01 00:00:00+00')"
        return "date_trunc('day', %(start)s::timestamptz, %(zone)s)"

    def _aggregate_rows(
        self, cursor, principal: Principal, selection: _Selection, page: _Page, tag: str, shape: _Shape
    ) -> tuple[orjson.Fragment, str | None]:
        """The page's rows (shape: the object of one) as a JSON array, and the next cursor.

        With a cache, the rows below the watermark come from it when it has them (easysmart.analytics_cache)."""
        if self.cache is None:
            parts = self._page_parts(cursor, selection, page, shape, page.limit, None)
            return _page(parts[True], parts[False], page.limit, tag)
        # The tag names the rows' shape: two endpoints selecting the same rows must not share an entry.
        key = cache_key(principal.tenant_id, tag, *self._cached_selection(selection), page)
        cached = self.cache.get(key)
        # The generation, the watermark, and what the sensors of the cached rows say now.
        cursor.execute(
            "SELECT watermark, coalesce((SELECT value FROM aggregate_settings WHERE key = %s), '0'),"
            " (SELECT coalesce(json_agg(json_build_array(id, uuid, name, kind, unit) ORDER BY id), '[]')"
            "  FROM sensors WHERE id = ANY(%s))"
            " FROM aggregate_watermarks WHERE name = %s",
            (CACHE_GENERATION_KEY, [sensor[0] for sensor in cached.sensors] if cached else [], selection.relation),
        )
        watermark, generation, sensors_now = cursor.fetchone()
        stale = cached is not None and (cached.generation, cached.sensors) != (generation, sensors_now)
        ANALYTICS_CACHE_LOOKUPS.labels("miss" if cached is None else "stale" if stale else "hit").inc()
        if cached is None or stale:
            parts = self._page_parts(cursor, selection, page, shape, page.limit, watermark, ("-infinity", watermark))
            rows_json, count, last, sensors = parts[True]
            cached = MaterialisedPart(generation, watermark, rows_json, count, last, sensors)
            self.cache.put(key, cached)
            live: _Part | None = parts[False]
        elif cached.count > page.limit or (selection.end is not None and selection.end <= cached.watermark):
            live = None
        else:
            # Rows from the entry's watermark on, wherever they are now (the watermark may have moved since).
            take = page.limit - cached.count
            live = self._page_parts(
                cursor, selection, page, shape, take, cached.watermark, (cached.watermark, watermark)
            )[False]
        return _page((cached.rows_json, cached.count, cached.last, cached.sensors), live, page.limit, tag)

    def _cached_selection(self, selection: _Selection) -> tuple:
        """What selects the rows: the first bucket and the last (not the times within them)."""
        first = self._bucket_of(selection.relation, selection.start)
        # bucket < end: the last bucket is the one holding the instant just before end.
        last = self._bucket_of(selection.relation, selection.end - timedelta(microseconds=1)) if selection.end else None
        return selection.relation, selection.column, selection.key, first, last, selection.kind

    def _bucket_of(self, relation: str, moment: datetime) -> str:
        if relation == "telemetry_hourly":
            return hour_floor(moment).isoformat()
        return f"{moment.astimezone(ZoneInfo(self.zone)).date().isoformat()} {self.zone}"

    def _page_parts(
        self,
        cursor,
        selection: _Selection,
        page: _Page,
        shape: _Shape,
        take: int,
        watermark: datetime | None,
        read_from: tuple[datetime | str, datetime] | None = None,
    ) -> dict[bool, _Part]:
        """The first `take` rows of the page (and whether more follow), in two parts: below the watermark
        (True) and from it on (False; every row when there is no watermark). read_from: (the first bucket to
        read, the aggregate's watermark read in this transaction), to read with aggregates.buckets_since_sql."""
        params = {
            "key": selection.key,
            "start": selection.start,
            "end": selection.end,
            "zone": self.zone,
            "kind": selection.kind,
            "limit": take + 1,
            "watermark": watermark,
        }
        where = [f"a.{selection.column} = %(key)s", f"a.bucket >= {self._bucket_floor(selection.relation)}"]
        if selection.end is not None:
            where.append("a.bucket < %(end)s")
        if selection.kind is not None:
            where.append("a.sensor_id IN (SELECT id FROM sensors WHERE kind = %(kind)s)")
        source = selection.relation
        if read_from is not None:
            source = buckets_since_sql(selection.relation, selection.column)
            params.update(since=read_from[0], current_watermark=read_from[1])
        where += page.after_clause("a.bucket", "a.sensor_id", params)
        # Times as text and sensor details looked up once: parsing and formatting a datetime
        # per row, and a join per row, cost more than the aggregate read itself.
        cursor.execute(
            f"SELECT {_UTC_TEXT.format('a.bucket')}, a.sensor_id, a.avg_value, a.min_value, a.max_value,"
            " a.sample_count, a.stddev_value, a.median_value, a.p95_value, a.p99_value,"
            " coalesce(a.bucket < %(watermark)s, false)"
            f" FROM {source} a WHERE {' AND '.join(where)}"
            " ORDER BY a.bucket, a.sensor_id LIMIT %(limit)s",
            params,
        )
        rows = cursor.fetchall()
        sensors = _sensors(cursor, {row[1] for row in rows[:take]})
        # Rows below the watermark come first (ordered by bucket).
        split = next((number for number, row in enumerate(rows) if not row[10]), len(rows))
        parts = {}
        for materialised, part, count in (
            (True, rows[: min(split, take)], split),
            (False, rows[split:take], len(rows) - split),
        ):
            parts[materialised] = (
                orjson.dumps([shape(row[0], sensors[row[1]], *row[2:10]) for row in part])[1:-1],
                count,
                (part[-1][0], part[-1][1]) if part else None,
                [[sensor_id, *sensors[sensor_id]] for sensor_id in sorted({row[1] for row in part})],
            )
        return parts

    def _raw_rows(
        self, cursor, column: str, key: int, start: datetime, end: datetime, kind: str | None, page: _Page
    ) -> tuple[list[dict], str | None]:
        params = {"key": key, "start": start, "end": end, "kind": kind, "limit": page.limit + 1}
        where = [f"t.{column} = %(key)s", "t.ts >= %(start)s", "t.ts < %(end)s"]
        if kind is not None:
            where.append("s.kind = %(kind)s")
        where += page.after_clause("t.ts", "t.sensor_id", params)
        cursor.execute(
            "SELECT t.ts, t.sensor_id, s.uuid, s.name, s.kind, s.unit, t.value, t.state, "
            + ", ".join(f"t.{name}" for name in _METADATA)
            + f" FROM telemetry_data t JOIN sensors s ON s.id = t.sensor_id WHERE {' AND '.join(where)}"
            " ORDER BY t.ts, t.sensor_id LIMIT %(limit)s",
            params,
        )
        rows, more = page.split(cursor.fetchall())
        data = [
            {
                "time": iso(row[0]),
                "sensor_uuid": row[2],
                "sensor_name": row[3],
                "sensor_type": row[4],
                "sensor_unit": row[5],
                "value": row[6],
                "status": row[7],
                "metadata": {name: value for name, value in zip(_METADATA, row[8:]) if value is not None},
            }
            for row in rows
        ]
        next_cursor = encode_cursor("r", iso(rows[-1][0]), rows[-1][1]) if more else None
        return data, next_cursor


_UTC_TEXT = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"')"""


def _history_row(time: str, sensor: tuple, avg, low, high, count, stddev, median, p95, p99) -> dict:
    uuid, name, kind, unit = sensor
    return {
        "time": time,
        "sensor_uuid": uuid,
        "sensor_name": name,
        "sensor_type": kind,
        "sensor_unit": unit,
        "avg_value": avg,
        "min_value": low,
        "max_value": high,
        "sample_count": count,
        "stddev_value": stddev,
        "median_value": median,
        "p95_value": p95,
        "p99_value": p99,
    }


def _home_assistant_row(time: str, sensor: tuple, avg, low, high, count, *_) -> dict:
    uuid, name, kind, unit = sensor
    return {
        "time": time,
        "sensor_uuid": uuid,
        "sensor_name": name,
        "sensor_type": kind,
        "unit": unit,
        "value": avg,
        "max": high,
        "min": low,
        "samples": count,
    }


# The object of one aggregate row: (time text, (sensor uuid, name, kind, unit), avg, min, max, count, stddev,
# median, p95, p99) -> dict.
_Shape = Callable[..., dict]


def _sensors(cursor, ids: set[int]) -> dict[int, tuple]:
    """sensor id -> (uuid, name, kind, unit)"""
    if not ids:
        return {}
    cursor.execute("SELECT id, uuid, name, kind, unit FROM sensors WHERE id = ANY(%s)", (list(ids),))
    return {row[0]: row[1:] for row in cursor.fetchall()}


@dataclass(frozen=True)
class _Selection:
    """The aggregate rows a page is read from."""

    relation: str
    column: str  # equipment_id or sensor_id
    key: int
    start: datetime
    end: datetime | None
    kind: str | None


# A part of a page: its rows within the page as JSON objects joined by commas, how many rows of it were read
# (of at most the page's limit + 1), the (time text, sensor id) of its last within the page, and its sensors
# as [id, uuid, name, kind, unit].
_Part = tuple[bytes, int, "tuple[str, int] | None", list[list]]


def _page(materialised: _Part, live: _Part | None, limit: int, tag: str) -> tuple[orjson.Fragment, str | None]:
    """The page (a JSON array) and the next cursor out of its two parts (easysmart.analytics_cache)."""
    rows_json, count, last, _ = materialised
    if count <= limit and live is not None:
        live_json, live_count, live_last, _ = live
        rows_json = b",".join(part for part in (rows_json, live_json) if part)
        count += live_count
        last = live_last or last
    next_cursor = encode_cursor(tag, *last) if count > limit and last is not None else None
    return orjson.Fragment(b"[" + rows_json + b"]"), next_cursor


def _require_user(principal: Principal) -> None:
    if principal.kind != "user":
        raise ForbiddenError("device tokens may read only /api/v1/analytics/home-assistant/{uuid}; log in as a user")
