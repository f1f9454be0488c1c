"""A demo upload in the real client's format, sent through the public API, then what was stored."""

from __future__ import annotations

import gzip
import math
import time
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import psycopg2
import requests

DEMO_NAMESPACE = uuid.UUID("6f1d2c3b-4a59-4e68-8d7c-0b1a2c3d4e5f")


def _sensor(equip: str, name: str, tipo: str, unit: str) -> dict:
    return {
        "uuid": str(uuid.uuid5(DEMO_NAMESPACE, f"{equip}/{name}")),
        "name": f"{equip} {name}",
        "tipo": tipo,
        "unit": unit,
    }


def demo_upload(now: datetime, zone: str, minutes: int = 30, equipments: int = 2, step_s: int = 60) -> list[dict]:
    """Freezers with temperature, door and humidity sensors, a reading every `step_s` seconds per
    sensor over the last `minutes`, in naive local time as the Home Assistant client sends it
    (datetime.now().isoformat()). Also sized up for benchmarks and large-upload tests."""
    local_now = now.astimezone(ZoneInfo(zone)).replace(tzinfo=None, microsecond=0)
    steps = max(1, minutes * 60 // step_s)
    times = [
        (local_now - timedelta(seconds=step_s * (steps - 1 - step))).isoformat(timespec="microseconds")
        for step in range(steps)
    ]
    items = []
    for number in range(1, equipments + 1):
        equip_name = f"Freezer Demo {number}"
        base_temp = -18.0 if number % 2 else 2.0
        equip_uuid = str(uuid.uuid5(DEMO_NAMESPACE, equip_name))
        sensors = [
            _sensor(equip_name, "Temperatura", "temperature", "°C"),
            _sensor(equip_name, "Porta", "door", ""),
            _sensor(equip_name, "Umidade", "umidade", "%"),
        ]
        readings = []
        for step, taken in enumerate(times):
            values = (f"{base_temp + math.sin(step / 5):.2f}", "on" if step % 10 == 3 else "off", f"{60 + step % 7},5")
            for sensor, value in zip(sensors, values):
                readings.append(
                    {
                        "sensor_uuid": sensor["uuid"],
                        "sensor_nome": sensor["name"],
                        "sensor_status": "ATIVO",
                        "sensor_tipo": sensor["tipo"],
                        "sensor_unidade": sensor["unit"],
                        "sensor_telemetria": value,
                        "sensor_datahora_coleta": taken,
                        "sensor_bateria_pct": 90.0,
                        "sensor_sinal_lqi": 120.0,
                        "sensor_sinal_rssi": -60.0,
                        "sensor_voltagem_bateria": 3.0,
                        "sensor_voltagem": None,
                        "sensor_corrente": None,
                        "sensor_potencia": None,
                        "sensor_fabricante": "Aqara",
                        "sensor_modelo": "WSDCGQ11LM",
                        "sensor_firmware": "N/A",
                        "sensor_id_hardware": f"0x00158d00{number:08x}",
                        "sensor_via_hub": True,
                    }
                )
        items.append(
            {
                "equip_uuid": equip_uuid,
                "equip_nome": equip_name,
                "equip_local": "Loja Demo",
                "equip_status": "ATIVO",
                "equip_intervalo_coleta": step_s,
                "equip_sirene_ativa": "NÃO",
                "equip_sirete_tempo": 120,
                "sensor": readings,
            }
        )
    return items


def run_demo(
    base_url: str, username: str, password: str, zone: str, database_url: str | None, timeout_s: float = 60.0, say=print
) -> dict:
    session = requests.Session()
    say(f"==> logging in as device {username!r} at {base_url}")
    login = session.post(
        f"{base_url}/api/v1/auth/device/login", json={"username": username, "password": password}, timeout=10
    )
    login.raise_for_status()
    token = login.json()["access_token"]
    items = demo_upload(datetime.now().astimezone(), zone)
    body = gzip.compress(orjson.dumps(items))
    say(
        f"==> uploading {sum(len(i['sensor']) for i in items)} readings of {len(items)} equipment"
        f" ({len(body)} bytes gzip)"
    )
    upload = session.post(
        f"{base_url}/api/v1/telemetry/bulk",
        data=body,
        timeout=30,
        headers={"Authorization": f"Bearer {token}", "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    say(f"    {upload.status_code} {upload.json()}")
    upload.raise_for_status()
    location = upload.headers["Location"]
    deadline = time.monotonic() + timeout_s
    while True:
        status = session.get(f"{base_url}{location}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        batch = status.json() if status.ok else {}
        if batch.get("status") in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    say(
        f"==> batch {batch.get('batch_id')}: {batch.get('status')}; stored {batch.get('stored')},"
        f" duplicate {batch.get('duplicate')}, skipped {batch.get('skipped')}, rejected {batch.get('rejected')}"
    )
    if batch.get("status") != "done":
        raise RuntimeError(f"the demo batch did not finish in {timeout_s} s: {batch or status.text}")
    if database_url:
        _print_stored(database_url, [i["equip_uuid"] for i in items], say)
    return batch


def _print_stored(database_url: str, equipment_uuids: list[str], say) -> None:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT e.name, s.name, s.kind, count(*), min(t.value), max(t.value), max(t.ts)"
            " FROM telemetry_data t JOIN sensors s ON s.id = t.sensor_id JOIN equipment e ON e.id = s.equipment_id"
            " WHERE e.uuid = ANY(%s) GROUP BY e.name, s.name, s.kind ORDER BY e.name, s.name",
            (equipment_uuids,),
        )
        say("==> stored in telemetry_data:")
        for equip, sensor, kind, count, low, high, latest in cursor.fetchall():
            say(
                f"    {equip:18} {sensor:34} {kind:12} {count:4} readings"
                f"  min {low}  max {high}  latest {latest:%Y-%m-%d %H:%M}Z"
            )
    conn.close()
