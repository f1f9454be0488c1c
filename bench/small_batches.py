"""Small batches through the whole stack, and the floor of the same work, alternating in one run.

A fleet sends many small uploads: here 40 readings in the client's real shape (one equipment, every reading its
own microsecond `datetime.now().isoformat()`, naive local time), gzip as the client sends them, unique uploads
from several devices, POSTed through the front door at concurrency 8. Through the stack: from the first 201 to
the last batch `done` in the ledger (ingest -> telemetry.raw -> kafka-bridge -> process). The floor, the same
bytes doing the least the same work needs: PUT to the S3 server and a claim-check-sized record produced with
acks=all (concurrency 8), consumed from a topic with as many partitions as telemetry.raw, the blob fetched back,
inflated and parsed, and its 40 rows COPYed into telemetry_data in one transaction (8 at a time). Prints one JSON
line per round and one with the medians and the ratio stack / floor. With --backlog, each round also measures
process and the kafka-bridge alone (the uploads accepted while the bridge is stopped, then drained: first to last
`done`), which ingest's own rate does not bound.

    python bench/small_batches.py --uploads 400 --devices 16 --rounds 2 [--backlog]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import statistics
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import kafka
import orjson
import psycopg2
import requests
import urllib3
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError
from uploads import client_item, client_reading

from easysmart import accounts
from easysmart.config import DatabaseSettings, KafkaSettings, ObjectStoreSettings
from easysmart.storage import make_s3_client

ROOT = Path(__file__).resolve().parent.parent
BASE = os.environ.get("ESM_BASE_URL", "http://127.0.0.1:8080")
ZONE = "America/Sao_Paulo"
READINGS = 40
SENSORS_PER_EQUIPMENT = 4
CONCURRENCY = 8
FLOOR_TOPIC = "bench.small-floor"
_COLUMNS = "sensor_id, equipment_id, ts, value, state, battery_pct, lqi, rssi, battery_voltage, voltage, current, power"


def small_upload(device: int, sequence: int, end: datetime, rng: random.Random) -> list[dict]:
    """One equipment's 40 readings (4 sensors), each stamped as the client stamps it: its own naive local
    datetime.now().isoformat() with microseconds, a little apart from the one before."""
    name = f"Freezer {device}"
    sensors = [
        (str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-small/{device}/{label}")), label, kind, unit)
        for label, kind, unit in (
            ("Temperatura", "temperature", "°C"),
            ("Porta", "door", ""),
            ("Umidade", "umidade", "%"),
            ("Energia", "power", "W"),
        )
    ]
    taken = end - timedelta(seconds=60)
    readings = []
    for step in range(READINGS):
        sensor_uuid, label, kind, unit = sensors[step % SENSORS_PER_EQUIPMENT]
        taken += timedelta(microseconds=rng.randint(1_000, 1_500_000))
        value = (
            f"{-18 + rng.random():.2f}"
            if kind == "temperature"
            else "off"
            if kind == "door"
            else f"{rng.random() * 90:.1f}"
        )
        readings.append(
            client_reading(
                sensor_uuid, f"{name} {label}", kind, unit, value, taken.isoformat(), f"0x00158d0000{device:06x}", rng
            )
        )
    return [client_item(str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-small/{device}")), name, readings)]


def bodies(devices: int, uploads: int, seed: int) -> list[tuple[int, bytes]]:
    """(device, gzip body) round-robin over the devices; each device's successive uploads a minute apart, so every
    upload is unique and every reading new."""
    rng = random.Random(seed)
    start = datetime.now() - timedelta(hours=2, minutes=uploads // devices + 2) + timedelta(seconds=seed)
    made = []
    for index in range(uploads):
        device, sequence = index % devices, index // devices
        items = small_upload(device, sequence, start + timedelta(minutes=sequence, milliseconds=seed), rng)
        made.append((device, gzip.compress(orjson.dumps(items))))
    return made


def device_tokens(db_url: str, devices: int) -> list[str]:
    suffix = uuid.uuid4().hex[:8]
    name = f"bench-small-{suffix}"
    conn = psycopg2.connect(db_url)
    with conn, conn.cursor() as cursor:
        accounts.create_tenant(cursor, name, ZONE)
        for device in range(devices):
            accounts.create_account(cursor, name, "device", f"{name}-{device}", "bench-pass")
    conn.close()
    tokens = []
    for device in range(devices):
        answer = requests.post(
            f"{BASE}/api/v1/auth/device/login",
            json={"username": f"{name}-{device}", "password": "bench-pass"},
            timeout=10,
        )
        answer.raise_for_status()
        tokens.append(answer.json()["access_token"])
    return tokens


def stack_service(action: str, name: str, env: dict | None = None) -> None:
    subprocess.run(
        ["bash", str(ROOT / "infra/local/stack.sh"), action, name],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def drained(db_url: str, batch_ids: list[str], wait_s: float) -> tuple[float, float]:
    """The wall-clock times (epoch seconds) the first and the last of the batches were done, as the ledger
    recorded them. Polled every 100 ms: the times come from the ledger, not from the poll, so polling faster would
    only spend the machine the stack is measured on (a lookup of 400 ids is a few ms of PostgreSQL)."""
    deadline = time.monotonic() + wait_s
    conn = psycopg2.connect(db_url)
    conn.autocommit = True
    with conn.cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT count(*), extract(epoch FROM min(processed_at)), extract(epoch FROM max(processed_at))"
                " FROM batches WHERE id = ANY(%s::uuid[]) AND status = 'done'",
                (batch_ids,),
            )
            done, first, last = cursor.fetchone()
            if done == len(batch_ids) or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    conn.close()
    if done < len(batch_ids):
        raise RuntimeError(f"{len(batch_ids) - done} batches not done after {wait_s} s")
    return float(first), float(last)


def service_cpu_s(name: str) -> float:
    """CPU seconds used so far by a local service's process and its children (functions-framework's workers)."""
    root = int((ROOT / ".local/run" / f"{name}.pid").read_text())
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        if pid == root or int(fields[1]) == root:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def backlog(db_url: str, tokens: list[str], uploads: list[tuple[int, bytes]], wait_s: float) -> dict:
    """Process and the bridge alone: the uploads are accepted while the kafka-bridge is stopped, then drained.
    CPU per batch of process's workers is steadier than time on a shared machine."""
    stack_service("stop", "kafka-bridge")
    try:
        batch_ids = list(upload_all(tokens, uploads))
    finally:
        stack_service("start", "kafka-bridge")
    cpu_before = {name: service_cpu_s(name) for name in ("process",)}
    first, last = drained(db_url, batch_ids, wait_s)
    return {
        "batches": len(uploads),
        "drain_batches_per_s": round((len(uploads) - 1) / (last - first), 1),
        **{
            f"{name.replace('-', '_')}_cpu_ms_per_batch": round((service_cpu_s(name) - before) * 1000 / len(uploads), 2)
            for name, before in cpu_before.items()
        },
    }


def upload_all(tokens: list[str], uploads: list[tuple[int, bytes]]) -> dict[str, float]:
    """Uploads at concurrency 8; when each batch's 201 came back (epoch seconds), by batch id. Sent through urllib3's
    pool rather than requests, whose own work per request (~0.5 ms) would be spent on the machine measured, where a
    fleet's uploads cost it nothing."""
    pool = urllib3.PoolManager(maxsize=CONCURRENCY, timeout=60.0, retries=False)
    answered: dict[str, float] = {}

    def send(upload: tuple[int, bytes]) -> None:
        device, body = upload
        response = pool.request(
            "POST",
            f"{BASE}/api/v1/telemetry/bulk",
            body=body,
            headers={
                "Authorization": f"Bearer {tokens[device]}",
                "Content-Encoding": "gzip",
                "Content-Type": "application/json",
            },
        )
        if response.status != 201:
            raise RuntimeError(f"upload answered {response.status}: {response.data[:200]!r}")
        answered[orjson.loads(response.data)["batch_id"]] = time.time()  # wall clock, as the ledger's processed_at

    with ThreadPoolExecutor(CONCURRENCY) as senders:
        list(senders.map(send, uploads))
    pool.clear()
    return answered


def through_stack(db_url: str, tokens: list[str], uploads: list[tuple[int, bytes]], wait_s: float) -> dict:
    started = time.monotonic()
    answered = upload_all(tokens, uploads)
    sent = time.monotonic()
    first_201 = min(answered.values())
    _, last_done = drained(db_url, list(answered), wait_s)
    return {
        "batches": len(uploads),
        "batches_per_s": round(len(uploads) / (last_done - first_201), 1),
        "upload_phase_s": round(sent - started, 2),
        "first_201_to_last_done_s": round(last_done - first_201, 2),
    }


ASSIGNMENT_WAIT_S, ASSIGNMENT_ATTEMPTS = 30.0, 3


class Floor:
    """The same bytes through the least the same work needs (see the module's docstring)."""

    def __init__(self, db_url: str, partitions: int) -> None:
        self.db_url = db_url
        store = ObjectStoreSettings.from_env()
        self.bucket = store.s3_bucket
        self.s3 = make_s3_client(store, 30.0)
        self.bootstrap = KafkaSettings.from_env().kafka_bootstrap_servers.split(",")
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.create_topics([NewTopic(FLOOR_TOPIC, partitions, 1)])
        except TopicAlreadyExistsError:
            pass
        admin.close()
        self.producer = kafka.KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0)
        self.sensor_ids: dict[str, str] = {}
        self.conn_pool: list = []
        self.conn_lock = threading.Lock()

    def prepare_sensors(self, uploads: list[tuple[int, bytes]]) -> None:
        """The floor's own tenant with the uploads' equipment and sensors, so its COPY meets the same keys."""
        conn = psycopg2.connect(self.db_url)
        suffix = uuid.uuid4().hex[:8]
        with conn, conn.cursor() as cursor:
            tenant_id = accounts.create_tenant(cursor, f"bench-floor-{suffix}", ZONE)
            for device, body in {device: body for device, body in uploads}.items():
                item = orjson.loads(gzip.decompress(body))[0]
                cursor.execute(
                    "INSERT INTO equipment (tenant_id, uuid, name) VALUES (%s, %s, %s) RETURNING id",
                    (tenant_id, item["equip_uuid"], item["equip_nome"]),
                )
                (equipment_id,) = cursor.fetchone()
                for reading in item["sensor"][:SENSORS_PER_EQUIPMENT]:
                    cursor.execute(
                        "INSERT INTO sensors (tenant_id, equipment_id, uuid, name, kind) VALUES (%s, %s, %s, %s, %s)"
                        " RETURNING id",
                        (tenant_id, equipment_id, reading["sensor_uuid"], reading["sensor_nome"], "temperature"),
                    )
                    self.sensor_ids[reading["sensor_uuid"]] = f"{cursor.fetchone()[0]}\t{equipment_id}"
        conn.close()

    def _connection(self):
        with self.conn_lock:
            if self.conn_pool:
                return self.conn_pool.pop()
        return psycopg2.connect(self.db_url)

    def _store(self, key: bytes) -> None:
        body = self.s3.get_object(Bucket=self.bucket, Key=key.decode())["Body"].read()
        items = orjson.loads(gzip.decompress(body))
        lines = []
        for reading in items[0]["sensor"]:
            ts = datetime.fromisoformat(reading["sensor_datahora_coleta"]).astimezone(timezone.utc).isoformat()
            value, state = reading["sensor_telemetria"], "\\N"
            if value in ("on", "off"):
                value, state = ("1.0" if value == "on" else "0.0"), value
            lines.append(
                f"{self.sensor_ids[reading['sensor_uuid']]}\t{ts}\t{value}\t{state}\t"
                f"{reading['sensor_bateria_pct']}\t{reading['sensor_sinal_lqi']}\t{reading['sensor_sinal_rssi']}\t"
                f"{reading['sensor_voltagem_bateria']}\t\\N\t\\N\t\\N\n"
            )
        conn = self._connection()
        try:
            with conn.cursor() as cursor:
                cursor.copy_expert(f"COPY telemetry_data ({_COLUMNS}) FROM STDIN", io.BytesIO("".join(lines).encode()))
            conn.commit()
        finally:
            with self.conn_lock:
                self.conn_pool.append(conn)

    def _assigned_consumer(self) -> kafka.KafkaConsumer:
        """A consumer of a new group holding its partitions. kafka-python can wait for a group coordinator forever
        (seen right after Kafka starts): after ASSIGNMENT_WAIT_S it is closed and another one tried."""
        for _ in range(ASSIGNMENT_ATTEMPTS):
            group = f"bench-small-floor-{uuid.uuid4().hex[:8]}"
            consumer = kafka.KafkaConsumer(
                FLOOR_TOPIC, bootstrap_servers=self.bootstrap, group_id=group, auto_offset_reset="latest"
            )
            deadline = time.monotonic() + ASSIGNMENT_WAIT_S
            while not consumer.assignment() and time.monotonic() < deadline:
                consumer.poll(timeout_ms=100)
            if consumer.assignment():
                return consumer
            consumer.close()
        raise RuntimeError(f"no partitions of {FLOOR_TOPIC} assigned after {ASSIGNMENT_ATTEMPTS} consumer groups")

    def run(self, uploads: list[tuple[int, bytes]], wait_s: float) -> dict:
        consumer = self._assigned_consumer()
        consumer.seek_to_end()
        for partition in consumer.assignment():
            consumer.position(partition)  # resolved now: a record produced from here on is consumed
        run_id = uuid.uuid4().hex[:8]
        produced: list[float] = []
        stored: list[float] = []
        stored_lock = threading.Lock()
        errors: list[BaseException] = []

        def send(indexed: tuple[int, tuple[int, bytes]]) -> None:
            index, (_, body) = indexed
            key = f"bench/small-floor/{run_id}/{index}.json.gz"
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
            claim = key.encode().ljust(1024, b" ")  # a claim check is about 1 KB
            self.producer.send(FLOOR_TOPIC, key=str(index).encode(), value=claim).get(timeout=30)
            produced.append(time.monotonic())

        def store(value: bytes) -> None:
            try:
                self._store(value.rstrip())
            except BaseException as error:  # reported after the run
                errors.append(error)
            with stored_lock:
                stored.append(time.monotonic())

        with ThreadPoolExecutor(CONCURRENCY) as producers, ThreadPoolExecutor(CONCURRENCY) as storers:
            sending = producers.map(send, enumerate(uploads))
            deadline = time.monotonic() + wait_s
            seen = 0
            while seen < len(uploads) and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=50).values():
                    for record in records:
                        storers.submit(store, record.value)
                        seen += 1
            list(sending)
        consumer.close()
        if errors:
            raise errors[0]
        if len(stored) < len(uploads):
            raise RuntimeError(f"the floor stored {len(stored)} of {len(uploads)} batches")
        elapsed = max(stored) - min(produced)
        return {"batches": len(uploads), "batches_per_s": round(len(uploads) / elapsed, 1)}

    def close(self) -> None:
        self.producer.close()
        for conn in self.conn_pool:
            conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uploads", type=int, default=400)
    parser.add_argument("--devices", type=int, default=16, help="each device is held to its own rate limit")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds: the stack, then the floor")
    parser.add_argument("--warmup-rounds", type=int, default=1, help="unmeasured rounds of both first")
    parser.add_argument("--partitions", type=int, default=3, help="the floor topic's (telemetry.raw's locally)")
    parser.add_argument("--wait", type=float, default=300.0)
    parser.add_argument(
        "--backlog",
        action="store_true",
        help="also per round: process and the bridge alone, draining the uploads accepted while the bridge was stopped",
    )
    args = parser.parse_args()
    db_url = DatabaseSettings.from_env().database_url
    # Every upload comes from this one address, faster than its rate limit allows a real one.
    stack_service("restart", "ingest", env={"RATELIMIT_ADDRESS_PER_MINUTE": "1000000"})
    try:
        run_rounds(args, db_url)
    finally:
        stack_service("restart", "ingest")


def run_rounds(args: argparse.Namespace, db_url: str) -> None:
    tokens = device_tokens(db_url, args.devices)
    floor = Floor(db_url, args.partitions)
    stack_rates, floor_rates = [], []
    # One warm-up batch per device: its equipment and sensors exist from then on, as in a fleet that runs.
    warm = bodies(args.devices, args.devices, seed=10_000)
    through_stack(db_url, tokens, warm, args.wait)
    floor.prepare_sensors(warm)
    # Then unmeasured rounds of both, as a fleet that runs has had: the JVMs' code compiled (S3Proxy, Kafka), every
    # pooled connection's statements prepared.
    for warm_round in range(args.warmup_rounds):
        uploads = bodies(args.devices, args.uploads, seed=20_000 + warm_round)
        through_stack(db_url, tokens, uploads, args.wait)
        floor.run(uploads, args.wait)
    for round_number in range(args.rounds):
        uploads = bodies(args.devices, args.uploads, seed=round_number + 1)
        stack = through_stack(db_url, tokens, uploads, args.wait)
        print(json.dumps({"round": round_number + 1, "stack": stack}), flush=True)
        if args.backlog:
            drain = backlog(db_url, tokens, bodies(args.devices, args.uploads, seed=1_000 + round_number), args.wait)
            print(json.dumps({"round": round_number + 1, "backlog": drain}), flush=True)
        floor_result = floor.run(uploads, args.wait)
        stack_rates.append(stack["batches_per_s"])
        floor_rates.append(floor_result["batches_per_s"])
        print(json.dumps({"round": round_number + 1, "floor": floor_result}), flush=True)
    floor.close()
    stack_median, floor_median = statistics.median(stack_rates), statistics.median(floor_rates)
    print(
        json.dumps(
            {
                "readings_per_batch": READINGS,
                "concurrency": CONCURRENCY,
                "devices": args.devices,
                "stack_batches_per_s": stack_median,
                "floor_batches_per_s": floor_median,
                "ratio": round(stack_median / floor_median, 3),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
