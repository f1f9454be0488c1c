"""The analytics API and retention through the public front door, as a dashboard would use them.

Readings are uploaded in the real client's format; every statistic is computed here
independently from the readings the test sent. Retention (cluster-local, not behind the front
door) is triggered directly, as the ping source would.
"""

from __future__ import annotations

import math
import os
import statistics
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import requests
from support.reference import percentile_cont
from support.stack import BASE_URL, db, new_tenant, upload, wait_for_batch

ZONE = ZoneInfo("America/Sao_Paulo")
UTC = timezone.utc
RETENTION_URL = os.environ.get("RETENTION_URL", "http://127.0.0.1:8085/")


def assert_bucket(row: dict, values: list[float]) -> None:
    assert row["sample_count"] == len(values)
    assert row["avg_value"] == pytest.approx(statistics.fmean(values))
    assert row["min_value"] == pytest.approx(min(values))
    assert row["max_value"] == pytest.approx(max(values))
    if len(values) > 1:
        assert row["stddev_value"] == pytest.approx(statistics.stdev(values))
    else:
        assert row["stddev_value"] is None
    for name, fraction in (("median_value", 0.5), ("p95_value", 0.95), ("p99_value", 0.99)):
        assert row[name] == pytest.approx(percentile_cont(values, fraction)), name


class Equipment:
    """One freezer with a temperature and a door sensor, and the readings sent for it."""

    def __init__(self) -> None:
        self.uuid = str(uuid.uuid4())
        self.sensors = {"temperature": str(uuid.uuid4()), "door": str(uuid.uuid4())}
        self.readings: list[tuple[str, datetime, float]] = []  # (sensor uuid, UTC time, stored value)

    def item(self, times: list[datetime], seed: int = 0) -> dict:
        sensor = []
        for step, moment in enumerate(times):
            temperature = round(-18 + 3 * math.sin(step + seed) + (step % 4) * 0.25, 2)
            door_open = (step + seed) % 3 == 0
            local = moment.astimezone(ZONE).replace(tzinfo=None).isoformat()
            for kind, tipo, unit, value, stored in (
                ("temperature", "temperatura", "°C", f"{temperature}", temperature),
                ("door", "porta", "", "aberta" if door_open else "fechada", 1.0 if door_open else 0.0),
            ):
                sensor.append(
                    {
                        "sensor_uuid": self.sensors[kind],
                        "sensor_nome": f"{kind} sensor",
                        "sensor_tipo": tipo,
                        "sensor_unidade": unit,
                        "sensor_status": "ATIVO",
                        "sensor_telemetria": value,
                        "sensor_datahora_coleta": local,
                        "sensor_bateria_pct": 80.0,
                    }
                )
                self.readings.append((self.sensors[kind], moment, stored))
        return {
            "equip_uuid": self.uuid,
            "equip_nome": "Freezer e2e",
            "equip_local": "Loja",
            "equip_status": "ATIVO",
            "equip_intervalo_coleta": 300,
            "sensor": sensor,
        }

    def values(self, sensor_uuid: str, start: datetime, end: datetime) -> list[float]:
        return [v for s, t, v in self.readings if s == sensor_uuid and start <= t < end]

    def by_bucket(self, bucket_of) -> dict[tuple[datetime, str], list[float]]:
        grouped: dict[tuple[datetime, str], list[float]] = defaultdict(list)
        for sensor_uuid, moment, value in self.readings:
            grouped[(bucket_of(moment), sensor_uuid)].append(value)
        return grouped


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def local_day_of(moment: datetime) -> datetime:
    local = moment.astimezone(ZONE)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def get(path: str, token: str, **params) -> requests.Response:
    return requests.get(BASE_URL + path, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def send(token: str, item: dict) -> None:
    response = upload(token, [item])
    assert response.status_code == 201, response.text
    status = wait_for_batch(token, response.json()["batch_id"])
    assert status["status"] == "done" and status["rejected"] == 0, status


def run_retention(job: str) -> dict:
    response = requests.post(RETENTION_URL, json={"job": job}, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def when(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.fixture(scope="module")
def world():
    tenant = new_tenant()
    device, user = tenant.device_token(), tenant.user_token()
    equipment = Equipment()
    now = datetime.now(UTC).replace(microsecond=0)
    # Every 10 minutes over the last 3 hours, and one reading 5 s ago: the current hour.
    times = [now - timedelta(minutes=10 * step) for step in range(18, 0, -1)] + [now - timedelta(seconds=5)]
    send(device, equipment.item(times))
    # Hours below the aggregates' watermark show the upload after the next refresh (the ping
    # source's job); the current hour shows it at once (test below).
    run_retention("refresh")
    return tenant, device, user, equipment, now


def test_a_reading_for_the_current_hour_is_in_the_hourly_answer_at_once(world):
    _, device, user, _, _ = world
    equipment = Equipment()
    moment = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2)
    send(device, equipment.item([moment]))

    body = get(f"/api/v1/analytics/equipment/{equipment.uuid}/history", user, period="hour").json()

    got = {(when(row["time"]), row["sensor_uuid"]): row for row in body["data"]}
    for (bucket, sensor_uuid), values in equipment.by_bucket(hour_of).items():
        assert_bucket(got[(bucket, sensor_uuid)], values)


def test_hourly_history_has_the_statistics_of_the_readings_including_the_current_hour(world):
    _, _, user, equipment, now = world

    response = get(
        f"/api/v1/analytics/equipment/{equipment.uuid}/history",
        user,
        period="hour",
        start_date=(now - timedelta(hours=4)).isoformat(),
        end_date=(now + timedelta(hours=1)).isoformat(),
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["equipment_uuid"] == equipment.uuid and body["period"] == "hour" and body["next_cursor"] is None
    wanted = equipment.by_bucket(hour_of)
    got = {(when(row["time"]), row["sensor_uuid"]): row for row in body["data"]}
    assert set(got) == set(wanted)
    for key, values in wanted.items():
        assert_bucket(got[key], values)
    assert (hour_of(now), equipment.sensors["temperature"]) in got
    door = next(row for row in body["data"] if row["sensor_uuid"] == equipment.sensors["door"])
    assert door["sensor_type"] == "door"  # canonical, though sent as "porta"


def test_raw_history_pages_through_every_reading(world):
    _, _, user, equipment, now = world
    sensor = equipment.sensors["temperature"]
    rows, cursor = [], None
    while True:
        params = {"period": "raw", "limit": 7, **({"cursor": cursor} if cursor else {})}
        body = get(f"/api/v1/analytics/sensor/{sensor}/history", user, **params).json()
        assert len(body["data"]) <= 7
        rows.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert [(when(r["time"]), r["value"]) for r in rows] == [(t, v) for s, t, v in equipment.readings if s == sensor]
    assert rows[0]["status"] is None and rows[0]["metadata"] == {"battery_pct": 80.0}


def test_daily_history_filters_by_sensor_type_in_either_vocabulary(world):
    _, _, user, equipment, now = world

    body = get(
        f"/api/v1/analytics/equipment/{equipment.uuid}/history",
        user,
        period="day",
        sensor_type="temperatura",
        start_date=(now - timedelta(days=1)).isoformat(),
    ).json()

    wanted = {
        key: values
        for key, values in equipment.by_bucket(local_day_of).items()
        if key[1] == equipment.sensors["temperature"]
    }
    got = {(when(row["time"]), row["sensor_uuid"]): row for row in body["data"]}
    assert set(got) == set(wanted)
    for key, values in wanted.items():
        assert_bucket(got[key], values)


def test_stats_summarise_each_sensor_over_the_period(world):
    _, _, user, equipment, now = world

    body = get(f"/api/v1/analytics/equipment/{equipment.uuid}/stats", user, period="24h").json()

    assert body["period"] == "24h" and len(body["sensors"]) == 2
    for row in body["sensors"]:
        values = equipment.values(row["sensor_uuid"], now - timedelta(days=1), now + timedelta(hours=1))
        assert row["total_samples"] == len(values)
        assert row["overall_avg"] == pytest.approx(statistics.fmean(values))
        assert (row["overall_min"], row["overall_max"]) == (pytest.approx(min(values)), pytest.approx(max(values)))


def test_home_assistant_view_answers_a_device_token_from_the_hourly_aggregate(world):
    _, device, _, equipment, now = world

    body = get(f"/api/v1/analytics/home-assistant/{equipment.uuid}", device, hours=6).json()

    assert body["equipment_uuid"] == equipment.uuid and body["period_hours"] == 6
    wanted = equipment.by_bucket(hour_of)
    assert {(when(r["time"]), r["sensor_uuid"]) for r in body["data"]} == set(wanted)
    for row in body["data"]:
        values = wanted[(when(row["time"]), row["sensor_uuid"])]
        assert row["samples"] == len(values) and row["value"] == pytest.approx(statistics.fmean(values))
        assert (row["min"], row["max"]) == (pytest.approx(min(values)), pytest.approx(max(values)))


def test_equipments_list_each_sensor_with_its_last_reading(world):
    _, _, user, equipment, now = world

    body = get("/api/v1/analytics/equipments", user).json()

    listed = next(row for row in body["equipments"] if row["equipment_uuid"] == equipment.uuid)
    assert listed["name"] == "Freezer e2e" and listed["location"] == "Loja"
    last = {row["sensor_uuid"]: row for row in listed["sensors"]}
    temperature = last[equipment.sensors["temperature"]]
    assert when(temperature["last_time"]) == now - timedelta(seconds=5)
    assert temperature["last_value"] == equipment.readings[-2][2]
    assert last[equipment.sensors["door"]]["last_status"] in ("on", "off")


def test_device_tokens_may_not_read_histories(world):
    _, device, _, equipment, _ = world

    response = get(f"/api/v1/analytics/equipment/{equipment.uuid}/history", device)

    assert response.status_code == 403, response.text


def test_another_tenants_equipment_is_404_like_an_unknown_one(world):
    _, _, _, equipment, _ = world
    stranger = new_tenant().user_token()

    foreign = get(f"/api/v1/analytics/equipment/{equipment.uuid}/history", stranger)
    unknown = get(f"/api/v1/analytics/equipment/{uuid.uuid4()}/history", stranger)

    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["error"] == unknown.json()["error"] == "not_found"
    assert get(f"/api/v1/analytics/home-assistant/{equipment.uuid}", stranger).status_code == 404


@pytest.mark.parametrize(
    "params, parameter",
    [
        ({"limit": "0"}, "limit"),
        ({"period": "week"}, "period"),
        ({"start_date": "yesterday"}, "start_date"),
        ({"cursor": "garbage"}, "cursor"),
        ({"start_date": "9999-12-31T23:00:00Z"}, "start_date"),
        ({"end_date": "0001-01-01T01:00:00Z"}, "end_date"),
        ({"period": "raw", "start_date": "2000-01-01T00:00:00Z", "end_date": "2099-12-31T00:00:00Z"}, "period"),
    ],
)
def test_invalid_parameters_are_400_naming_the_parameter(world, params, parameter):
    _, _, user, equipment, _ = world

    response = get(f"/api/v1/analytics/equipment/{equipment.uuid}/history", user, **params)

    assert response.status_code == 400 and response.json()["parameter"] == parameter, response.text


def test_late_readings_change_their_buckets_after_the_next_refresh(world):
    tenant, device, user, _, now = world
    equipment = Equipment()
    hour = hour_of(now) - timedelta(days=3)
    send(device, equipment.item([hour + timedelta(minutes=m) for m in (1, 11, 21)]))
    run_retention("refresh")

    send(device, equipment.item([hour + timedelta(minutes=m) for m in (31, 41)], seed=5))  # hours late
    run_retention("refresh")

    body = get(
        f"/api/v1/analytics/equipment/{equipment.uuid}/history",
        user,
        period="hour",
        start_date=hour.isoformat(),
        end_date=(hour + timedelta(hours=1)).isoformat(),
    ).json()
    wanted = equipment.by_bucket(hour_of)
    assert {(when(r["time"]), r["sensor_uuid"]) for r in body["data"]} == set(wanted)
    for row in body["data"]:
        assert row["sample_count"] == 5
        assert_bucket(row, wanted[(hour, row["sensor_uuid"])])


def test_expired_raw_readings_are_gone_while_their_aggregates_remain(world):
    _, _, user, equipment, _ = world
    sensor = equipment.sensors["temperature"]
    # Process refuses readings past the raw retention, so backdated rows go in as process would
    # write them: with their time range logged for the refresh.
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=45)
    values = [2.0, 4.0, 9.0]
    conn = db()
    try:
        with conn, conn.cursor() as cursor:
            cursor.execute(
                "UPDATE aggregate_settings SET value = least(value::timestamptz, %s)::text WHERE key = 'raw_horizon'",
                (noon.replace(hour=0),),
            )  # an earlier run's horizon
            cursor.execute("SELECT esm_ensure_telemetry_partition(%s::date)", (noon,))
            cursor.execute("SELECT id, equipment_id FROM sensors WHERE uuid = %s", (sensor,))
            sensor_id, equipment_id = cursor.fetchone()
            for minute, value in enumerate(values):
                cursor.execute(
                    "INSERT INTO telemetry_data (sensor_id, equipment_id, ts, value) VALUES (%s, %s, %s, %s)",
                    (sensor_id, equipment_id, noon + timedelta(minutes=minute), value),
                )
            cursor.execute(
                "INSERT INTO aggregate_touched (lo, hi) VALUES (%s, %s)", (noon, noon + timedelta(minutes=2))
            )
    finally:
        conn.close()

    report = run_retention("expire")

    assert noon.date().isoformat() in report["expire"]["raw_partitions_dropped"]
    window = {"start_date": noon.replace(hour=0).isoformat(), "end_date": (noon + timedelta(hours=12)).isoformat()}
    raw = get(f"/api/v1/analytics/sensor/{sensor}/history", user, period="raw", **window).json()
    assert raw["data"] == []
    (hourly,) = get(f"/api/v1/analytics/sensor/{sensor}/history", user, period="hour", **window).json()["data"]
    assert_bucket(hourly, values)
    (daily,) = get(f"/api/v1/analytics/sensor/{sensor}/history", user, period="day", **window).json()["data"]
    assert_bucket(daily, values)


def test_blobs_past_their_retention_are_gone_but_an_unfinished_batch_s_stay_for_replay():
    from easysmart.config import ObjectStoreSettings, RetentionSettings
    from easysmart.storage import make_s3_client

    config, retention = ObjectStoreSettings.from_env(), RetentionSettings.from_env()
    s3 = make_s3_client(config, timeout_s=5)
    today = datetime.now(UTC)
    # No batch of the ledger is done with these: kept past the blob retention, as long as the dead-letter topic.
    past_dlq = today - timedelta(days=max(retention.blob_retention_days, retention.dlq_retention_days) + 3)
    past_blob = today - timedelta(days=retention.blob_retention_days + 3)
    gone_key = f"raw/{past_dlq:%Y/%m/%d}/e2e/{uuid.uuid4()}.json.gz"
    kept_key = f"raw/{past_blob:%Y/%m/%d}/e2e/{uuid.uuid4()}.json.gz"
    new_key = f"raw/{today:%Y/%m/%d}/e2e/{uuid.uuid4()}.json.gz"
    for key in (gone_key, kept_key, new_key):
        s3.put_object(Bucket=config.s3_bucket, Key=key, Body=b"x")

    report = run_retention("expire")

    assert report["expire"]["blobs_deleted"] >= 1
    listed = {
        key
        for key in (gone_key, kept_key, new_key)
        if s3.list_objects_v2(Bucket=config.s3_bucket, Prefix=key).get("KeyCount", 0)
    }
    assert listed == {kept_key, new_key}
    for key in listed:
        s3.delete_object(Bucket=config.s3_bucket, Key=key)
