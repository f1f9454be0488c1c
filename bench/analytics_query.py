"""Analytics through the aggregates vs the same answer from raw rows, the HTTP endpoint, and a refresh.

Loads `equipments` x `sensors` x one reading a minute over `days` days (default 100 x 4 x 18
days = 10.4 million readings) for a tenant of its own, refreshes the aggregates, then prints
one JSON line per figure:
  * p50/p95 of a 30-day hourly history of one equipment as the analytics code runs it (AnalyticsService
    without a cache, through telemetry_hourly, to the JSON body) and of the same answer from raw rows;
  * p50/p95 of GET /api/v1/analytics/equipment/{uuid}/history through the front door, with every
    request missing analytics' cache and then as a dashboard repeats it (the cache answering);
  * the time a refresh takes after one hour of new data from all equipments.
Loading takes minutes of CPU, so the seed is kept under a tenant named after its shape
(bench-analytics-<equipments>x<sensors>x<days>) and a later run reuses it; --fresh loads it again,
--drop removes it afterwards. The targets (issue 12) are checked on the figures through the front door:
p95 <= 20 ms, and the raw-row answer's p50 at least 20 times the front door's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import requests

from easysmart import accounts, aggregates
from easysmart.aggregates import PlainAggregates
from easysmart.analytics import AnalyticsService
from easysmart.config import AggregateSettings
from easysmart.db import Database
from easysmart.identity import Principal

BASE_URL = os.environ.get("ESM_BASE_URL", "http://127.0.0.1:8080")
ZONE = AggregateSettings.from_env().aggregate_timezone
SEED_PASSWORD = "bench-analytics-seed-password"  # a throwaway account of the local stack's bench tenant
TARGET_P95_MS = 20.0
TARGET_SPEEDUP = 20.0

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
    day = start
    while day < end:
        until = min(day + timedelta(days=1), end)
        insert_minutes(db, tenant_id, day, until)
        day = until
    return uuids


def insert_minutes(db: Database, tenant_id: str, start: datetime, end: datetime) -> int:
    """One reading a minute per sensor in [start, end), logged for the refresh as process does; how many were new."""
    with db.transaction() as cursor:
        cursor.execute(
            "SELECT esm_ensure_telemetry_partition(d::date) FROM generate_series(%s::date, %s::date,"
            " interval '1 day') d",
            (start, end),
        )
        cursor.execute(
            "INSERT INTO telemetry_data (sensor_id, equipment_id, ts, value, state)"
            " SELECT s.id, s.equipment_id, t, CASE WHEN s.kind = 'door' THEN (random() < 0.1)::int"
            "  ELSE 20 + 5 * sin(extract(epoch FROM t) / 3600 + s.id) + random() END,"
            "  CASE WHEN s.kind = 'door' THEN 'off' END"
            " FROM sensors s, generate_series(%s::timestamptz, %s::timestamptz - interval '1 minute',"
            " interval '1 minute') t"
            " WHERE s.tenant_id = %s ON CONFLICT DO NOTHING",
            (start, end, tenant_id),
        )
        inserted = cursor.rowcount
        cursor.execute("INSERT INTO aggregate_touched (lo, hi) VALUES (%s, %s)", (start, end - timedelta(minutes=1)))
    return inserted


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


def seeded(db: Database, name: str) -> tuple[str, list[str]] | None:
    """The kept seed's tenant and equipment; None when there is none or its load did not finish (its
    account is made last), in which case what there is of it is removed."""
    with db.transaction() as cursor:
        tenant = accounts.tenant_by_name(cursor, name)
        if tenant is None:
            return None
        cursor.execute("SELECT 1 FROM accounts WHERE tenant_id = %s AND username = %s", (tenant[0], name))
        complete = cursor.fetchone() is not None
        cursor.execute("SELECT uuid FROM equipment WHERE tenant_id = %s ORDER BY id", (tenant[0],))
        uuids = [row[0] for row in cursor.fetchall()]
    if not complete:
        cleanup(db, str(tenant[0]))
        return None
    return str(tenant[0]), uuids


def seed(db: Database, name: str, args: argparse.Namespace) -> tuple[str, list[str]]:
    with db.transaction() as cursor:
        tenant_id = accounts.create_tenant(cursor, name, ZONE)
    # The data ends an hour before the current hour, which is then the "one hour of new data".
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    started = time.perf_counter()
    uuids = load(db, str(tenant_id), args.equipments, args.sensors, end - timedelta(days=args.days), end)
    readings = args.equipments * args.sensors * args.days * 24 * 60
    print(
        json.dumps({"figure": "load", "readings": readings, "seconds": round(time.perf_counter() - started, 1)}),
        flush=True,
    )
    with db.transaction() as cursor:
        accounts.create_account(cursor, name, "user", name, SEED_PASSWORD)
    return str(tenant_id), uuids


def next_hour_to_load(db: Database, equipment: str, now: datetime) -> datetime:
    """The hour after the seed's last readings, or the last complete hour when they reach it (a rerun)."""
    with db.transaction() as cursor:
        cursor.execute(
            "SELECT max(ts) FROM telemetry_data WHERE equipment_id = (SELECT id FROM equipment WHERE uuid = %s)",
            (equipment,),
        )
        latest = cursor.fetchone()[0]
    last_complete = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    return min(latest.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1), last_complete)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--equipments", type=int, default=100)
    parser.add_argument("--sensors", type=int, default=4)
    parser.add_argument("--days", type=int, default=18)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--fresh", action="store_true", help="load the seed again even when one is kept")
    parser.add_argument("--drop", action="store_true", help="remove the seed afterwards")
    args = parser.parse_args()
    db = Database(os.environ["DATABASE_URL"], 4)
    name = f"bench-analytics-{args.equipments}x{args.sensors}x{args.days}"
    kept = seeded(db, name)
    if kept and args.fresh:
        cleanup(db, kept[0])
        kept = None
    print(json.dumps({"figure": "seed", "tenant": name, "reused": kept is not None}), flush=True)
    tenant_id, uuids = kept or seed(db, name, args)
    now = datetime.now(timezone.utc)
    try:
        started = time.perf_counter()
        aggregates.refresh(db, ZONE, PlainAggregates())
        print(json.dumps({"figure": "refresh before", "seconds": round(time.perf_counter() - started, 1)}), flush=True)

        service = AnalyticsService(db, AggregateSettings(aggregate_timezone=ZONE))
        user = Principal(account_id=str(uuid.uuid4()), tenant_id=tenant_id, kind="user")
        window = {
            "period": "hour",
            "start_date": (now - timedelta(days=30)).isoformat(),
            "end_date": now.isoformat(),
            "limit": "10000",
        }
        equipment = uuids[len(uuids) // 2]

        def in_process() -> bytes:  # the body as the function sends it
            return orjson.dumps(service.equipment_history(user, equipment, window, now=now))

        rows_answered = len(orjson.loads(in_process())["data"])
        through = percentiles(timed(in_process, args.runs))
        with db.transaction() as cursor:
            cursor.execute("SELECT id FROM equipment WHERE uuid = %s", (equipment,))
            equipment_id = cursor.fetchone()[0]

        def raw() -> None:
            with db.transaction() as cursor:
                cursor.execute(RAW_EQUIVALENT, (equipment_id, now - timedelta(days=30), now))
                rows = cursor.fetchall()
            assert len(rows) == rows_answered

        from_raw = percentiles(timed(raw, max(5, args.runs // 5)))
        print(
            json.dumps(
                {
                    "figure": "30-day hourly history of one equipment",
                    "rows": rows_answered,
                    "through_aggregates": through,
                    "from_raw_rows": from_raw,
                    "speedup_p50": round(from_raw["p50_ms"] / max(through["p50_ms"], 1e-6), 1),
                }
            ),
            flush=True,
        )

        session = requests.Session()
        token = session.post(
            f"{BASE_URL}/api/v1/auth/login", json={"username": name, "password": SEED_PASSWORD}, timeout=10
        ).json()["access_token"]
        url = f"{BASE_URL}/api/v1/analytics/equipment/{equipment}/history"

        headers = {"Authorization": f"Bearer {token}"}

        def http() -> None:
            response = session.get(url, params=window, headers=headers, timeout=30)
            assert response.status_code == 200, response.text

        # Each request a first bucket and a limit of its own (the seed's readings start later and the limit is above
        # the rows there are, so the answer is the same): none is answered from the cache, not even by an entry an
        # earlier run made within the hour.
        shifts, salt = iter(range(1, 10 * args.runs)), random.randrange(1_000_000)

        def http_uncached() -> None:
            shift = next(shifts)
            params = {
                **window,
                "start_date": (now - timedelta(days=30, hours=shift)).isoformat(),
                "limit": str(2000 + (salt + shift) % 8000),
            }
            response = session.get(url, params=params, headers=headers, timeout=30)
            assert response.status_code == 200, response.text

        print(
            json.dumps(
                {
                    "figure": "the same via the front door, none from the cache",
                    **percentiles(timed(http_uncached, args.runs)),
                }
            ),
            flush=True,
        )
        via_front_door = percentiles(timed(http, args.runs))
        speedup = round(from_raw["p50_ms"] / max(via_front_door["p50_ms"], 1e-6), 1)
        print(
            json.dumps(
                {
                    "figure": "GET .../equipment/{uuid}/history?period=hour (30 days) via the front door"
                    " (the materialised hours from the cache after the first)",
                    **via_front_door,
                    "speedup_p50_over_raw_rows": speedup,
                    "target": {
                        "p95_ms_at_most": TARGET_P95_MS,
                        "speedup_at_least": TARGET_SPEEDUP,
                        "met": via_front_door["p95_ms"] <= TARGET_P95_MS and speedup >= TARGET_SPEEDUP,
                    },
                }
            ),
            flush=True,
        )

        hour = next_hour_to_load(db, equipment, datetime.now(timezone.utc))
        inserted = insert_minutes(db, tenant_id, hour, hour + timedelta(hours=1))
        started = time.perf_counter()
        report = aggregates.refresh(db, ZONE, PlainAggregates())
        print(
            json.dumps(
                {
                    "figure": "refresh after one hour of new data from all equipments",
                    "readings": inserted,
                    "seconds": round(time.perf_counter() - started, 2),
                    "buckets_written": report.buckets_written,
                }
            ),
            flush=True,
        )
    finally:
        if args.drop:
            cleanup(db, tenant_id)
        db.close()


if __name__ == "__main__":
    main()
