"""A demo upload in the real client's format, sent through the public API, then what was stored; with the demo
user's credentials, also the demo's alert rule and the alert it raises (a freezer above its threshold)."""

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
# Every temperature sensor of the demo tenant: Freezer Demo 2 (about 2 °C) is above it for the whole upload, Freezer
# Demo 1 (about -18 °C) never. Found again by its name, so a rerun makes no second rule; the open alert stays one.
DEMO_RULE = {
    "type": "threshold",
    "name": "demo: freezer above -15 °C for 10 minutes",
    "sensor_type": "temperature",
    "above": -15.0,
    "for_s": 600,
    "severity": "critical",
}


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
    base_url: str,
    username: str,
    password: str,
    zone: str,
    database_url: str | None,
    timeout_s: float = 60.0,
    say=print,
    admin: tuple[str, str] | None = None,
) -> dict:
    """Uploads as the device; with `admin` (the demo user's name and password), first makes sure the demo's rule
    exists, and afterwards waits for the alert the upload raises and prints it."""
    session = requests.Session()
    user_token = _ensure_demo_rule(session, base_url, *admin, say) if admin else None
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
    if user_token:
        _print_demo_alert(session, base_url, user_token, items, deadline + timeout_s, say)
    return batch


def _ensure_demo_rule(session: requests.Session, base_url: str, username: str, password: str, say) -> str:
    """Logs the demo user in, makes the demo rule unless it exists; the user's token."""
    login = session.post(f"{base_url}/api/v1/auth/login", json={"username": username, "password": password}, timeout=10)
    login.raise_for_status()
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    listed = session.get(f"{base_url}/api/v1/alerts/rules", params={"type": "threshold"}, headers=headers, timeout=10)
    listed.raise_for_status()
    if not any(rule.get("name") == DEMO_RULE["name"] for rule in listed.json()["rules"]):
        made = session.post(f"{base_url}/api/v1/alerts/rules", json=DEMO_RULE, headers=headers, timeout=10)
        made.raise_for_status()
        say(f"==> alert rule {DEMO_RULE['name']!r} created ({made.json()['id']})")
    return headers["Authorization"].removeprefix("Bearer ")


def _print_demo_alert(
    session: requests.Session, base_url: str, token: str, items: list[dict], deadline: float, say
) -> None:
    """Waits for the open alerts of the demo's temperature sensors (process -> outbox relay -> telemetry.stored ->
    alerts) and prints them."""
    names = {
        r["sensor_uuid"]: r["sensor_nome"]
        for item in items
        for r in item["sensor"]
        if r["sensor_tipo"] == "temperature"
    }
    while True:
        answer = session.get(
            f"{base_url}/api/v1/alerts",
            params={"state": "open"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        answer.raise_for_status()
        alerts = [alert for alert in answer.json()["alerts"] if alert["sensor_uuid"] in names]
        if alerts or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if not alerts:
        raise RuntimeError(
            "the demo's alert did not appear: see .local/log/outbox-relay.log, kafka-bridge.log, alerts.log"
        )
    say("==> open alerts:")
    for alert in alerts:
        say(
            f"    {names[alert['sensor_uuid']]:34} {alert['state']:8} {alert['severity']:8} since"
            f" {alert['started_at']}  trigger {alert['trigger_value']}  peak {alert['peak_value']}"
        )


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
