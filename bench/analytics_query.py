"""Analytics through the aggregates vs the same answer from raw rows, the HTTP endpoint, and a refresh.

Loads `equipments` x `sensors` x one reading a minute over `days` days (default 100 x 4 x 18
days = 10.4 million readings) for a throwaway tenant, refreshes the aggregates, then prints
one JSON line per figure:
  * p50/p95 of a 30-day hourly history of one equipment as the analytics code runs it
    (AnalyticsService, through telemetry_hourly) and of the same answer computed from raw rows;
  * p50/p95 of GET /api/v1/analytics/equipment/{uuid}/history through the front door;
  * the time a refresh takes after one hour of new data from all equipments.
The tenant and its rows are removed afterwards (--keep leaves them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from datetime import datetime, timedelta, timezone

import requests

from easysmart import accounts, aggregates
from easysmart.aggregates import PlainAggregates
from easysmart.analytics import AnalyticsService
from easysmart.config import AggregateSettings
from easysmart.db import Database
from easysmart.identity import Principal

BASE_URL = os.environ.get("ESM_BASE_URL", "http://127.0.0.1:8080")
ZONE = AggregateSettings.from_env().aggregate_timezone

RAW_EQUIVALENT = """
SELECT date_bin('1 hour', t.ts, timestamptz '2000-01-01 00:00:00+00') AS bucket, t.sensor_id, s.uuid, s.name, s.kind,
       s.unit, avg(t.value), min(t.value), max(t.value), count(*), stddev_samp(t.value),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY t.value), percentile_cont(0.95) WITHIN GROUP (ORDER BY t.value),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY t.value)
FROM telemetry_data t JOIN sensors s ON s.id = t.sensor_id
WHERE t.equipment_id = %s AND t.ts >= %s AND t.ts < %s
GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2 LIMIT 10001
"""


def percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 2),
        "runs": len(ordered),
    }


def timed(call, runs: int) -> list[float]:
    call()  # warm
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def load(db: Database, tenant_id: str, equipments: int, sensors: int, start: datetime, end: datetime) -> list[str]:
    uuids = []
    with db.transaction() as cursor:
        for number in range(equipments):
            equipment_uuid = str(uuid.uuid4())
            cursor.execute(
                "INSERT INTO equipment (tenant_id, uuid, name, location) VALUES (%s, %s, %s, 'bench') RETURNING id",
                (tenant_id, equipment_uuid, f"bench {number}"),
            )
            equipment_id = cursor.fetchone()[0]
            for kind in ("temperature", "humidity", "door", "power")[:sensors]:
                cursor.execute(
                    "INSERT INTO sensors (tenant_id, equipment_id, uuid, name, kind, unit)"
                    " VALUES (%s, %s, %s, %s, %s, '')",
                    (tenant_id, equipment_id, str(uuid.uuid4()), kind, kind),
                )
            uuids.append(equipment_uuid)
        cursor.execute(
            "SELECT esm_ensure_telemetry_partition(d::date) FROM generate_series(%s::date, %s::date,"
            " interval '1 day') d",
            (start, end),
        )
    day = start
    while day < end:
        until = min(day + timedelta(days=1), end)
        insert_minutes(db, tenant_id, day, until)
        day = until
    return uuids


def insert_minutes(db: Database, tenant_id: str, start: datetime, end: datetime) -> None:
    """One reading a minute per sensor in [start, end), logged for the refresh as process does."""
    with db.transaction() as cursor:
        cursor.execute(
            "INSERT INTO telemetry_data (sensor_id, equipment_id, ts, value, state)"
            " SELECT s.id, s.equipment_id, t, CASE WHEN s.kind = 'door' THEN (random() < 0.1)::int"
            "  ELSE 20 + 5 * sin(extract(epoch FROM t) / 3600 + s.id) + random() END,"
            "  CASE WHEN s.kind = 'door' THEN 'off' END"
            " FROM sensors s, generate_series(%s::timestamptz, %s::timestamptz - interval '1 minute',"
            " interval '1 minute') t"
            " WHERE s.tenant_id = %s",
            (start, end, tenant_id),
        )
        cursor.execute("INSERT INTO aggregate_touched (lo, hi) VALUES (%s, %s)", (start, end - timedelta(minutes=1)))


def cleanup(db: Database, tenant_id: str) -> None:
    with db.transaction() as cursor:
        cursor.execute("SELECT id FROM equipment WHERE tenant_id = %s", (tenant_id,))
        ids = [row[0] for row in cursor.fetchall()]
        for table in ("telemetry_data", "telemetry_hourly_mat", "telemetry_daily_mat"):
            cursor.execute(f"DELETE FROM {table} WHERE equipment_id = ANY(%s)", (ids,))
        cursor.execute("DELETE FROM sensors WHERE tenant_id = %s", (tenant_id,))
        cursor.execute("DELETE FROM equipment WHERE tenant_id = %s", (tenant_id,))
        cursor.execute("DELETE FROM accounts WHERE tenant_id = %s", (tenant_id,))
        cursor.execute("DELETE FROM tenants WHERE id = %s", (tenant_id,))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--equipments", type=int, default=100)
    parser.add_argument("--sensors", type=int, default=4)
    parser.add_argument("--days", type=int, default=18)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    db = Database(os.environ["DATABASE_URL"], 4)
    suffix = uuid.uuid4().hex[:10]
    with db.transaction() as cursor:
        tenant_id = accounts.create_tenant(cursor, f"bench-{suffix}", ZONE)
        accounts.create_account(cursor, f"bench-{suffix}", "user", f"bench-user-{suffix}", f"pw-{suffix}-bench")
    # The data ends an hour before the current hour, which is then the "one hour of new data".
    now = datetime.now(timezone.utc)
    end = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    start = end - timedelta(days=args.days)
    try:
        started = time.perf_counter()
        uuids = load(db, str(tenant_id), args.equipments, args.sensors, start, end)
        readings = args.equipments * args.sensors * args.days * 24 * 60
        print(
            json.dumps({"figure": "load", "readings": readings, "seconds": round(time.perf_counter() - started, 1)}),
            flush=True,
        )
        started = time.perf_counter()
        aggregates.refresh(db, ZONE, PlainAggregates())
        print(json.dumps({"figure": "initial refresh", "seconds": round(time.perf_counter() - started, 1)}), flush=True)

        service = AnalyticsService(db, AggregateSettings(aggregate_timezone=ZONE))
        user = Principal(account_id=str(uuid.uuid4()), tenant_id=tenant_id, kind="user")
        window = {
            "period": "hour",
            "start_date": (now - timedelta(days=30)).isoformat(),
            "end_date": now.isoformat(),
            "limit": "10000",
        }
        equipment = uuids[len(uuids) // 2]
        answer = service.equipment_history(user, equipment, window, now=now)
        through = percentiles(timed(lambda: service.equipment_history(user, equipment, window, now=now), args.runs))
        with db.transaction() as cursor:
            cursor.execute("SELECT id FROM equipment WHERE uuid = %s", (equipment,))
            equipment_id = cursor.fetchone()[0]

        def raw() -> None:
            with db.transaction() as cursor:
                cursor.execute(RAW_EQUIVALENT, (equipment_id, now - timedelta(days=30), now))
                rows = cursor.fetchall()
            assert len(rows) == len(answer["data"])

        from_raw = percentiles(timed(raw, max(5, args.runs // 5)))
        print(
            json.dumps(
                {
                    "figure": "30-day hourly history of one equipment",
                    "rows": len(answer["data"]),
                    "through_aggregates": through,
                    "from_raw_rows": from_raw,
                    "speedup_p50": round(from_raw["p50_ms"] / max(through["p50_ms"], 1e-6), 1),
                }
            ),
            flush=True,
        )

        session = requests.Session()
        token = session.post(
            f"{BASE_URL}/api/v1/auth/login",
            json={"username": f"bench-user-{suffix}", "password": f"pw-{suffix}-bench"},
            timeout=10,
        ).json()["access_token"]
        url = f"{BASE_URL}/api/v1/analytics/equipment/{equipment}/history"

        def http() -> None:
            response = session.get(url, params=window, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            assert response.status_code == 200, response.text

        print(
            json.dumps(
                {
                    "figure": "GET .../equipment/{uuid}/history?period=hour (30 days) via :8080",
                    **percentiles(timed(http, args.runs)),
                }
            ),
            flush=True,
        )

        insert_minutes(db, str(tenant_id), end, end + timedelta(hours=1))
        started = time.perf_counter()
        report = aggregates.refresh(db, ZONE, PlainAggregates())
        print(
            json.dumps(
                {
                    "figure": "refresh after one hour of new data from all equipments",
                    "readings": args.equipments * args.sensors * 60,
                    "seconds": round(time.perf_counter() - started, 2),
                    "buckets_written": report.buckets_written,
                }
            ),
            flush=True,
        )
    finally:
        if not args.keep:
            cleanup(db, str(tenant_id))
        db.close()


if __name__ == "__main__":
    main()
