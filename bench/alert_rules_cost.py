"""The cost of rule evaluation per stored batch (AlertEngine.on_stored, in-process) in a tenant with 10,000 rules.

A tenant gets 10,000 temperature sensors (setup uploads through the local stack: 1,000 equipments of 10) and
one threshold rule on each; then a batch of 40 readings (one equipment's 4 sensors, 10 readings each) is stored
through the stack, and its telemetry.stored data is handed to on_stored again and again, each time under a new
batch id (a redelivery would be answered at once). Measured first with only the 4 rules of that batch's sensors,
then with the other 9,996 too. CPU is this process's (the engine and its driver); the database's is in the wall
time. Prints one JSON line per case.

    python bench/alert_rules_cost.py --rules 10000 --calls 21
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import time
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import requests

from easysmart import accounts
from easysmart.alerting.engine import AlertEngine
from easysmart.config import AlertSettings, DatabaseSettings
from easysmart.db import Database

BASE_URL = os.environ.get("ESM_BASE_URL", "http://127.0.0.1:8080")
ZONE = "America/Sao_Paulo"
SENSORS_PER_EQUIPMENT = 10
FLEET_EQUIPMENTS_PER_UPLOAD = 50


def item(equip_uuid: str, sensor_uuids: list[str], per_sensor: int, value: float) -> dict:
    now = datetime.now(ZoneInfo(ZONE)).replace(tzinfo=None)
    return {
        "equip_uuid": equip_uuid,
        "equip_nome": f"Freezer {equip_uuid[:8]}",
        "equip_local": "Loja bench",
        "equip_status": "ATIVO",
        "equip_intervalo_coleta": 60,
        "equip_sirene_ativa": "NÃO",
        "equip_sirete_tempo": 120,
        "sensor": [
            {
                "sensor_uuid": sensor_uuid,
                "sensor_nome": f"Temperatura {sensor_uuid[:8]}",
                "sensor_status": "ATIVO",
                "sensor_tipo": "temperature",
                "sensor_unidade": "°C",
                "sensor_telemetria": f"{value + step / 10:.1f}",
                "sensor_datahora_coleta": (now - timedelta(minutes=per_sensor - step)).isoformat(
                    timespec="microseconds"
                ),
            }
            for sensor_uuid in sensor_uuids
            for step in range(per_sensor)
        ],
    }


def stored(token: str, items: list[dict]) -> str:
    """Uploads through the stack and waits until process stored it; the batch id."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Content-Encoding": "gzip"}
    answer = requests.post(
        f"{BASE_URL}/api/v1/telemetry/bulk", data=gzip.compress(orjson.dumps(items)), headers=headers, timeout=120
    )
    if answer.status_code != 201:
        raise SystemExit(f"upload answered {answer.status_code}: {answer.text[:300]}")
    batch_id = answer.json()["batch_id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = requests.get(
            f"{BASE_URL}/api/v1/telemetry/batches/{batch_id}",
            headers={"Authorization": headers["Authorization"]},
            timeout=10,
        )
        if status.ok and status.json()["status"] in ("done", "failed"):
            return batch_id
        time.sleep(0.5)
    raise SystemExit(f"batch {batch_id} not processed within 300 s")


def measure(engine: AlertEngine, data: dict, calls: int) -> dict:
    walls, cpus, evaluated = [], [], 0
    engine.on_stored({**data, "batch_id": str(uuid.uuid4())})  # warm: connections, plans
    for _ in range(calls):
        started, cpu_started = time.perf_counter(), time.process_time()
        report = engine.on_stored({**data, "batch_id": str(uuid.uuid4())})
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu_started)
        evaluated = report["rules_evaluated"]
    return {
        "calls": calls,
        "rules_evaluated_per_batch": evaluated,
        "on_stored_wall_ms_median": round(1000 * statistics.median(walls), 2),
        "on_stored_cpu_ms_median": round(1000 * statistics.median(cpus), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=21)
    args = parser.parse_args()
    db = Database(DatabaseSettings.from_env().database_url, 2)
    suffix = uuid.uuid4().hex[:10]
    name = f"bench-rules-{suffix}"
    with db.transaction() as cursor:
        tenant_id = accounts.create_tenant(cursor, name, ZONE)
        accounts.create_account(cursor, name, "device", f"{name}-dev", suffix)
    login = requests.post(
        f"{BASE_URL}/api/v1/auth/device/login", json={"username": f"{name}-dev", "password": suffix}, timeout=10
    )
    login.raise_for_status()
    token = login.json()["access_token"]

    # The batch measured: one equipment's 4 sensors, 10 readings each, inside the bound.
    watched = [str(uuid.uuid4()) for _ in range(4)]
    batch_id = stored(token, [item(str(uuid.uuid4()), watched, 10, -18.0)])
    # Its rules are made after it was stored, so the stack's own evaluation of it found none.
    with db.transaction() as cursor:
        cursor.execute(
            "SELECT data FROM event_outbox WHERE topic = 'telemetry.stored' AND data->>'batch_id' = %s", (batch_id,)
        )
        data = cursor.fetchone()[0]
        add_rules(cursor, tenant_id, "s.uuid = ANY(%(watched)s)", {"watched": watched})
    engine = AlertEngine(db, AlertSettings.from_env())
    print(json.dumps({"tenant_rules": len(watched), **measure(engine, data, args.calls)}), flush=True)

    others = args.rules - len(watched)
    sensors = [str(uuid.uuid4()) for _ in range(others)]
    fleet = [
        item(str(uuid.uuid4()), sensors[first : first + SENSORS_PER_EQUIPMENT], 1, -18.0)
        for first in range(0, others, SENSORS_PER_EQUIPMENT)
    ]
    # In uploads of 500 sensors: the stored event lists every sensor a batch touched, and one for 10,000 would
    # exceed Kafka's largest message (1 MiB), which holds the outbox relay up for everyone.
    for first in range(0, len(fleet), FLEET_EQUIPMENTS_PER_UPLOAD):
        stored(token, fleet[first : first + FLEET_EQUIPMENTS_PER_UPLOAD])
    with db.transaction() as cursor:
        add_rules(cursor, tenant_id, "NOT (s.uuid = ANY(%(watched)s))", {"watched": watched})
        cursor.execute("SELECT count(*) FROM alert_rules WHERE tenant_id = %s", (tenant_id,))
        rules = cursor.fetchone()[0]
    print(json.dumps({"tenant_rules": rules, **measure(engine, data, args.calls)}), flush=True)


def add_rules(cursor, tenant_id: str, which: str, params: dict) -> None:
    """One threshold rule (above -15 °C for 10 minutes) on each of the tenant's sensors `which` selects."""
    cursor.execute(
        "INSERT INTO alert_rules (id, tenant_id, type, severity, equipment_id, sensor_id, above, for_s)"
        " SELECT gen_random_uuid(), s.tenant_id, 'threshold', 'critical', s.equipment_id, s.id, -15.0, 600"
        f" FROM sensors s WHERE s.tenant_id = %(tenant)s AND {which}",
        {"tenant": tenant_id, **params},
    )


if __name__ == "__main__":
    main()
