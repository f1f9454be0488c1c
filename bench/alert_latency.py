"""Time from an upload's 201 to its alert's webhook received, through the whole local stack.

Small batches (40 readings of a new temperature sensor, above the tenant's rule from the first reading) are
uploaded through the front door at a steady rate; each fires one alert, whose `fired` CloudEvent notify POSTs to
a webhook receiver this script runs on 127.0.0.1 (the local stack lets webhooks call loopback). The path:
ingest -> telemetry.raw -> process -> outbox relay -> telemetry.stored -> alerts -> outbox relay -> alerts.events
-> notify -> webhook. A channel gets at most NOTIFY_CHANNEL_MAX_PER_WINDOW (10) messages per window before they
are folded into a digest, so the uploads go round-robin to enough tenants that none reaches it. Prints one JSON
line: p50/p95/max of the latency, and how many arrived.

    python bench/alert_latency.py --rate 5 --seconds 30
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import orjson
import requests

from easysmart import accounts
from easysmart.config import DatabaseSettings
from easysmart.db import Database

BASE_URL = os.environ.get("ESM_BASE_URL", "http://127.0.0.1:8080")
ZONE = "America/Sao_Paulo"
READINGS = 40
# Below NOTIFY_CHANNEL_MAX_PER_WINDOW (10): no channel's notifications are folded into a digest.
ALERTS_PER_TENANT = 8


class Receiver:
    """Records when each fired alert's webhook arrived, by the alert's sensor uuid."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        arrived = self.arrived

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                now = time.monotonic()
                if body.get("type") == "com.easysmart.alert.fired":
                    arrived.setdefault(body["data"]["alert"]["sensor_uuid"], now)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def login(path: str, username: str, password: str) -> str:
    answer = requests.post(f"{BASE_URL}{path}", json={"username": username, "password": password}, timeout=10)
    answer.raise_for_status()
    return answer.json()["access_token"]


def make_tenant(db: Database, receiver: Receiver) -> str:
    """A tenant with a webhook to the receiver and a tenant-wide rule every temperature above -15 °C fires at once;
    its device's token."""
    suffix = uuid.uuid4().hex[:10]
    name, password = f"bench-alerts-{suffix}", f"pw-{suffix}"
    with db.transaction() as cursor:
        accounts.create_tenant(cursor, name, ZONE)
        accounts.create_account(cursor, name, "device", f"{name}-dev", password)
        accounts.create_account(cursor, name, "user", f"{name}-usr", password)
    user = {"Authorization": f"Bearer {login('/api/v1/auth/login', f'{name}-usr', password)}"}
    for path, body in (
        ("channels", {"type": "webhook", "url": receiver.url()}),
        ("rules", {"type": "threshold", "sensor_type": "temperature", "above": -15.0, "for_s": 0}),
    ):
        made = requests.post(f"{BASE_URL}/api/v1/alerts/{path}", json=body, headers=user, timeout=10)
        made.raise_for_status()
    return login("/api/v1/auth/device/login", f"{name}-dev", password)


def warm_batch(sensor_uuid: str) -> bytes:
    """40 readings of one new sensor, a second apart up to now, all above the bound: the gzip body."""
    now = datetime.now(ZoneInfo(ZONE)).replace(tzinfo=None)
    readings = [
        {
            "sensor_uuid": sensor_uuid,
            "sensor_nome": "Freezer bench Temperatura",
            "sensor_status": "ATIVO",
            "sensor_tipo": "temperature",
            "sensor_unidade": "°C",
            "sensor_telemetria": f"{2.0 + step / 10:.1f}",
            "sensor_datahora_coleta": (now - timedelta(seconds=READINGS - step)).isoformat(timespec="microseconds"),
            "sensor_bateria_pct": 90.0,
        }
        for step in range(READINGS)
    ]
    item = {
        "equip_uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, sensor_uuid)),
        "equip_nome": "Freezer bench",
        "equip_local": "Loja bench",
        "equip_status": "ATIVO",
        "equip_intervalo_coleta": 1,
        "equip_sirene_ativa": "NÃO",
        "equip_sirete_tempo": 120,
        "sensor": readings,
    }
    return gzip.compress(orjson.dumps([item]))


def upload(token: str, sensor_uuid: str) -> float:
    """Uploads; the monotonic time its 201 came back."""
    answer = requests.post(
        f"{BASE_URL}/api/v1/telemetry/bulk",
        data=warm_batch(sensor_uuid),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Content-Encoding": "gzip"},
        timeout=30,
    )
    if answer.status_code != 201:
        raise SystemExit(f"upload answered {answer.status_code}: {answer.text[:300]}")
    return time.monotonic()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=5.0, help="uploads per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--wait", type=float, default=120.0, help="how long to wait for the last webhooks")
    args = parser.parse_args()
    uploads = int(args.rate * args.seconds)
    receiver = Receiver()
    db = Database(DatabaseSettings.from_env().database_url, 2)
    tokens = [make_tenant(db, receiver) for _ in range(math.ceil(uploads / ALERTS_PER_TENANT))]
    sensors = [str(uuid.uuid4()) for _ in range(uploads)]
    answered: dict[str, float] = {}

    def send(index: int, due: float) -> None:
        time.sleep(max(0.0, due - time.monotonic()))
        answered[sensors[index]] = upload(tokens[index % len(tokens)], sensors[index])

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(send, index, started + index / args.rate) for index in range(uploads)]
        for future in futures:
            future.result()
    deadline = time.monotonic() + args.wait
    while len(receiver.arrived) < uploads and time.monotonic() < deadline:
        time.sleep(0.2)
    latencies = [receiver.arrived[sensor] - answered[sensor] for sensor in sensors if sensor in receiver.arrived]
    receiver.server.shutdown()
    if not latencies:
        raise SystemExit("no webhook arrived")
    print(
        json.dumps(
            {
                "uploads": uploads,
                "readings_per_upload": READINGS,
                "rate_per_s": args.rate,
                "webhooks_received": len(latencies),
                "upload_201_to_webhook_p50_s": round(statistics.median(latencies), 3),
                "upload_201_to_webhook_p95_s": round(percentile(latencies, 0.95), 3),
                "upload_201_to_webhook_max_s": round(max(latencies), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
