"""make soak: simulated Home Assistant devices upload while the stack's services fail in turn.

Many devices upload in the real client's shape through the public API and keep every refused
upload's readings to send again, as the client does, while the soak SIGKILLs `process` (its
gunicorn master: the supervisor must bring it back), then stops and starts Kafka, PostgreSQL,
Redis and the object store. At the end every reading of every upload answered 201 must be stored
exactly once, every accepted batch must be `done`, and `telemetry.dlq` must hold no record of the
soak's tenants. It prints uploads sent/accepted/refused and readings expected/stored per phase, and
the recovery time of each fault; the exit status is 1 when a check fails.

It acts on the stack of this working tree (infra/local/stack.sh, `.local/`), configured by the same
environment as the stack (infra/local/local.env: ESM_BASE_URL, DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS,
PROCESS_PORT, ...), so a stack on other ports is soaked by exporting those ports. Every phase has a
deadline: the whole run is bounded (a few minutes by default, see --help).

Usage: make soak [SOAK_ARGS="--devices 20 --hold 15"]
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfo

import kafka
import orjson
import psycopg2
import requests
from uploads import client_upload

from easysmart import accounts

ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = ROOT / ".local" / "run"
TENANT_TIMEZONE = "America/Sao_Paulo"
DEVICES_PER_TENANT = 10
# Each cycle the client has collected 4 readings of each of its 12 sensors (3 freezers x 4 kinds), 10 s apart.
EQUIPMENTS, READINGS_PER_CYCLE, CYCLE_SPAN = 3, 48, timedelta(seconds=40)
# The client retries a refused upload a few times, then keeps its readings for the next cycle (it waits
# 10 s between tries; shorter here so a soak of minutes sees many cycles).
TRIES_PER_CYCLE, RETRY_DELAYS_S = 3, (1.0, 2.0)
REQUEST_TIMEOUT_S = 15.0

Identity = tuple[str, datetime]  # (sensor_uuid, reading time in UTC)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


@dataclass
class PhaseTally:
    sent: int = 0
    accepted: int = 0
    duplicate: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    expected: set[Identity] = field(default_factory=set)
    slowest_s: float = 0.0  # the longest wait for an answer (a request that timed out counts its timeout)


class Tally:
    """What the devices saw, per phase (the phase an answer arrived in), shared by their threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.phase = "warm-up"
        self.phases: dict[str, PhaseTally] = {}
        self.accepted_batches: dict[str, float] = {}  # batch id -> monotonic time of its first 201
        self.sent_readings: set[Identity] = set()
        self.login_failures = 0

    def enter(self, phase: str) -> None:
        with self.lock:
            self.phase = phase
            self.phases.setdefault(phase, PhaseTally())

    def sending(self, readings: list[Identity]) -> None:
        with self.lock:
            self.sent_readings.update(readings)

    def accepted(self, batch_id: str, duplicate: bool, readings: list[Identity], waited_s: float) -> None:
        with self.lock:
            tally = self.phases[self.phase]
            tally.sent += 1
            tally.slowest_s = max(tally.slowest_s, waited_s)
            tally.accepted += 1
            tally.duplicate += duplicate
            tally.expected.update(readings)
            self.accepted_batches.setdefault(batch_id, time.monotonic())

    def refused(self, reason: str, waited_s: float) -> None:
        with self.lock:
            tally = self.phases[self.phase]
            tally.sent += 1
            tally.refused[reason] += 1
            tally.slowest_s = max(tally.slowest_s, waited_s)

    def first_accept_after(self, moment: float) -> float | None:
        with self.lock:
            return min((t for t in self.accepted_batches.values() if t >= moment), default=None)

    def batches_accepted_before(self, moment: float) -> list[str]:
        with self.lock:
            return [batch_id for batch_id, t in self.accepted_batches.items() if t <= moment]


class Device(threading.Thread):
    """One Home Assistant installation: collects readings each cycle, uploads everything it has not
    delivered yet, logs in again on 401 and keeps refused readings for the next cycle."""

    def __init__(self, soak: Soak, username: str, password: str, seed: int) -> None:
        super().__init__(name=username, daemon=True)
        self.soak, self.username, self.password, self.seed = soak, username, password, seed
        self.http = requests.Session()
        self.token: str | None = None
        self.rng = random.Random(seed)
        self.zone = ZoneInfo(TENANT_TIMEZONE)
        # Hours in the past, a cycle's span further each cycle: the readings of two cycles never share a time.
        self.collected_until = datetime.now(self.zone).replace(tzinfo=None) - timedelta(hours=12)
        self.pending: dict[str, dict] = {}  # equip_uuid -> the item with every reading not yet delivered
        self.error: BaseException | None = None
        self.last_retry_after: str | None = None

    def run(self) -> None:
        try:
            next_cycle = time.monotonic()
            while not self.soak.stop_collecting.wait(max(0.0, next_cycle - time.monotonic())):
                self.collect()
                self.deliver()
                # The client's timer does not catch up on cycles an upload's retries took.
                next_cycle = max(next_cycle + self.rng.uniform(0.5, 1.5) * self.soak.interval_s, time.monotonic())
            # The soak is ending: keep sending what is left, as the client would on its next cycles.
            while self.pending and time.monotonic() < self.soak.flush_deadline:
                if not self.deliver():
                    time.sleep(1.0)
        except BaseException as error:  # reported by the main thread
            self.error = error

    @property
    def pending_readings(self) -> int:
        return sum(len(item["sensor"]) for item in self.pending.values())

    def collect(self) -> None:
        self.collected_until += CYCLE_SPAN
        items = client_upload(
            READINGS_PER_CYCLE,
            seed=self.seed,
            equipments=EQUIPMENTS,
            end=self.collected_until,
            values_seed=self.rng.randrange(1 << 30),
        )
        for item in items:
            kept = self.pending.setdefault(item["equip_uuid"], {**item, "sensor": []})
            kept["sensor"].extend(item["sensor"])

    def identities(self) -> list[Identity]:
        return [
            (
                reading["sensor_uuid"],
                datetime.fromisoformat(reading["sensor_datahora_coleta"])
                .replace(tzinfo=self.zone)
                .astimezone(timezone.utc),
            )
            for item in self.pending.values()
            for reading in item["sensor"]
        ]

    def deliver(self) -> bool:
        """Sends every pending reading as one upload (a few tries); True when it was accepted."""
        items = list(self.pending.values())
        if not items:
            return True
        body = gzip.compress(orjson.dumps(items))
        readings = self.identities()
        for attempt in range(TRIES_PER_CYCLE):
            if attempt:
                time.sleep(self.retry_delay_s(attempt))
            if self.token is None and not self.login():
                continue
            self.soak.tally.sending(readings)
            sent_at = time.monotonic()
            try:
                answer = self.http.post(
                    f"{self.soak.base_url}/api/v1/telemetry/bulk",
                    data=body,
                    timeout=REQUEST_TIMEOUT_S,
                    headers={
                        "Authorization": f"Bearer {self.token}",
                        "Content-Encoding": "gzip",
                        "Content-Type": "application/json",
                    },
                )
            except requests.RequestException as error:
                self.soak.tally.refused(type(error).__name__, time.monotonic() - sent_at)
                continue
            if answer.status_code in (200, 201):
                result = answer.json()
                waited_s = time.monotonic() - sent_at
                self.soak.tally.accepted(result["batch_id"], bool(result.get("duplicate")), readings, waited_s)
                self.pending.clear()
                return True
            self.soak.tally.refused(str(answer.status_code), time.monotonic() - sent_at)
            self.last_retry_after = answer.headers.get("Retry-After")
            if answer.status_code == 401:
                self.token = None
        return False

    def retry_delay_s(self, attempt: int) -> float:
        delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S)) - 1]
        if self.last_retry_after and self.last_retry_after.isdigit():
            delay = max(delay, min(float(self.last_retry_after), 5.0))
        self.last_retry_after = None
        return delay

    def login(self) -> bool:
        try:
            answer = self.http.post(
                f"{self.soak.base_url}/api/v1/auth/device/login",
                json={"username": self.username, "password": self.password},
                timeout=REQUEST_TIMEOUT_S,
            )
        except requests.RequestException:
            answer = None
        if answer is not None and answer.status_code == 200:
            self.token = answer.json()["access_token"]
            return True
        with self.soak.tally.lock:
            self.soak.tally.login_failures += 1
        return False


@dataclass
class Fault:
    name: str
    service: str
    held_s: float = 0.0
    restore_s: float = 0.0  # how long the service took to come back (stack.sh start, or the supervisor)
    first_accept_s: float | None = None  # from the restore to the first upload answered 201
    drained_s: float | None = None  # from the restore to every batch accepted until then being done
    notes: list[str] = field(default_factory=list)


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base_url = os.environ.get("ESM_BASE_URL", "http://127.0.0.1:8080").rstrip("/")
        self.database_url = os.environ["DATABASE_URL"]
        self.interval_s = args.interval
        self.tally = Tally()
        self.stop_collecting = threading.Event()
        self.flush_deadline = float("inf")
        self.devices: list[Device] = []
        self.tenants: dict[str, str] = {}  # tenant id -> name
        self.faults: list[Fault] = []
        self.stopped_services: set[str] = set()

    # --- setup ---------------------------------------------------------------------------------------
    def create_devices(self) -> None:
        run = uuid.uuid4().hex[:8]
        conn = psycopg2.connect(self.database_url)
        with conn, conn.cursor() as cursor:
            for number in range(self.args.devices):
                tenant = f"soak-{run}-{number // DEVICES_PER_TENANT}"
                if number % DEVICES_PER_TENANT == 0:
                    self.tenants[accounts.create_tenant(cursor, tenant, TENANT_TIMEZONE)] = tenant
                username, password = f"soak-{run}-dev{number}", f"soak-{run}-pass-{number}"
                accounts.create_account(cursor, tenant, "device", username, password)
                self.devices.append(Device(self, username, password, seed=random.randrange(1 << 30)))
        conn.close()
        log(f"{len(self.devices)} devices in tenants {', '.join(self.tenants.values())}, uploading to {self.base_url}")

    # --- the stack -------------------------------------------------------------------------------------
    def stack(self, action: str, service: str) -> float:
        started = time.monotonic()
        stack_sh = str(ROOT / "infra/local/stack.sh")
        subprocess.run(["bash", stack_sh, action, service], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        if action == "stop":
            self.stopped_services.add(service)
        else:
            self.stopped_services.discard(service)
        return time.monotonic() - started

    def restore_stopped(self) -> None:
        for service in sorted(self.stopped_services):
            log(f"restoring {service}")
            self.stack("start", service)

    def process_master(self) -> int:
        return int((RUN_DIR / "process.pid").read_text().split()[0])

    def process_serving(self, old_master: int) -> bool:
        """A new master (started by the supervisor) answers on process's port."""
        try:
            if self.process_master() == old_master:
                return False
            port = os.environ.get("PROCESS_PORT", "8083")
            return requests.get(f"http://127.0.0.1:{port}/_/health", timeout=2).status_code == 200
        except (OSError, ValueError, requests.RequestException):
            return False

    # --- the ledger ------------------------------------------------------------------------------------
    def unfinished(self, batch_ids: list[str]) -> int | None:
        """How many of these batches are not done or failed yet (None: the database is not answering)."""
        if not batch_ids:
            return 0
        try:
            conn = psycopg2.connect(self.database_url, connect_timeout=3)
        except psycopg2.Error:
            return None
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM batches WHERE id = ANY(%s::uuid[]) AND status IN ('done', 'failed')",
                    (batch_ids,),
                )
                return len(batch_ids) - cursor.fetchone()[0]
        except psycopg2.Error:
            return None
        finally:
            conn.close()

    def wait_recovered(self, fault: Fault, restored_at: float) -> None:
        """Records when an upload is accepted again and when the batches accepted until the restore are done."""
        backlog = self.tally.batches_accepted_before(restored_at)
        deadline = restored_at + self.args.recovery_timeout
        while time.monotonic() < deadline:
            first = self.tally.first_accept_after(restored_at)
            if first is not None and fault.first_accept_s is None:
                fault.first_accept_s = first - restored_at
            if fault.drained_s is None and self.unfinished(backlog) == 0:
                fault.drained_s = time.monotonic() - restored_at
            if fault.first_accept_s is not None and fault.drained_s is not None:
                return
            time.sleep(0.5)
        fault.notes.append(f"not recovered within {self.args.recovery_timeout:.0f} s of the restore")

    # --- the phases ------------------------------------------------------------------------------------
    def kill_process(self) -> None:
        fault = Fault("process SIGKILL", "process")
        self.faults.append(fault)
        self.tally.enter(fault.name)
        master = self.process_master()
        os.kill(master, signal.SIGKILL)
        killed_at = time.monotonic()
        log(f"process: SIGKILL to its master {master}; the supervisor should restart it")
        deadline = killed_at + self.args.recovery_timeout
        while not self.process_serving(master):
            if time.monotonic() > deadline:
                fault.notes.append("the supervisor did not restart process")
                return
            time.sleep(0.2)
        fault.restore_s = time.monotonic() - killed_at
        log(f"process: serving again after {fault.restore_s:.1f} s")
        self.wait_recovered(fault, killed_at)

    def stop_and_start(self, name: str, service: str) -> None:
        fault = Fault(f"{name} down", service)
        self.faults.append(fault)
        self.tally.enter(fault.name)
        stopped_at = time.monotonic()
        self.stack("stop", service)
        log(f"{service}: stopped; holding {self.args.hold:.0f} s")
        time.sleep(max(0.0, stopped_at + self.args.hold - time.monotonic()))
        restored_at = time.monotonic()
        fault.held_s = restored_at - stopped_at
        fault.restore_s = self.stack("start", service)
        log(f"{service}: started again in {fault.restore_s:.1f} s")
        self.wait_recovered(fault, restored_at)

    def drain(self) -> tuple[float | None, int]:
        """Devices send what they still hold; then every accepted batch must finish. (seconds, unfinished)"""
        self.tally.enter("drain")
        started = time.monotonic()
        self.flush_deadline = started + self.args.flush_timeout
        self.stop_collecting.set()
        for device in self.devices:
            device.join(timeout=max(1.0, self.flush_deadline - time.monotonic() + REQUEST_TIMEOUT_S * TRIES_PER_CYCLE))
        deadline = started + self.args.drain_timeout
        while True:
            left = self.unfinished(list(self.tally.accepted_batches))
            if left == 0:
                return time.monotonic() - started, 0
            if time.monotonic() > deadline:
                return None, -1 if left is None else left
            time.sleep(1.0)

    def run(self) -> int:
        started = time.monotonic()
        self.create_devices()
        self.tally.enter("warm-up")
        for device in self.devices:
            device.start()
        faults: dict[str, Callable[[], None]] = {
            "process": self.kill_process,
            "kafka": lambda: self.stop_and_start("Kafka", "kafka"),
            "postgres": lambda: self.stop_and_start("PostgreSQL", "postgres"),
            "redis": lambda: self.stop_and_start("Redis", "redis"),
            "s3": lambda: self.stop_and_start("object store", "s3"),
        }
        try:
            time.sleep(self.args.warmup)
            for name in self.args.faults:
                faults[name]()
                time.sleep(self.args.settle)  # still in the fault's phase: uploads after its recovery
        finally:
            self.restore_stopped()
        drained_s, unfinished = self.drain()
        log(f"soak over in {time.monotonic() - started:.0f} s; checking what was stored")
        return self.report(drained_s, unfinished)

    # --- the checks ------------------------------------------------------------------------------------
    def stored(self) -> tuple[set[Identity], int]:
        conn = psycopg2.connect(self.database_url)
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    "SELECT s.uuid, t.ts FROM telemetry_data t JOIN sensors s ON s.id = t.sensor_id"
                    " WHERE s.tenant_id = ANY(%s::uuid[])",
                    (list(self.tenants),),
                )
                rows = [(sensor, ts.astimezone(timezone.utc)) for sensor, ts in cursor]
        finally:
            conn.close()
        return set(rows), len(rows)

    def batch_outcomes(self) -> Counter[str]:
        conn = psycopg2.connect(self.database_url)
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    "SELECT status, rejected > 0 FROM batches WHERE id = ANY(%s::uuid[])",
                    (list(self.tally.accepted_batches),),
                )
                outcomes = Counter(status + (" (rejected readings)" if rejected else "") for status, rejected in cursor)
        finally:
            conn.close()
        missing = len(self.tally.accepted_batches) - sum(outcomes.values())
        if missing:
            outcomes["no ledger row"] = missing
        return outcomes

    def dead_letters(self) -> tuple[int, int]:
        """(records of the soak's tenants, all records) on the dead-letter topic, read from its beginning."""
        topic = os.environ.get("KAFKA_TOPIC_DLQ", "telemetry.dlq")
        consumer = kafka.KafkaConsumer(
            bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"].split(","), enable_auto_commit=False
        )
        try:
            partitions = [kafka.TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            ends = consumer.end_offsets(partitions)
            tenant_ids = [tenant_id.encode() for tenant_id in self.tenants]
            found = seen = 0
            deadline = time.monotonic() + 60
            while any(consumer.position(p) < ends[p] for p in partitions) and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=1000).values():
                    for record in records:
                        seen += 1
                        raw = (record.key or b"") + record.value + b"".join(v for _, v in record.headers or [])
                        found += any(tenant_id in raw for tenant_id in tenant_ids)
            return found, seen
        finally:
            consumer.close()

    def report(self, drained_s: float | None, unfinished: int) -> int:
        problems = []
        stored, stored_rows = self.stored()
        expected = set().union(*(tally.expected for tally in self.tally.phases.values()))

        print("\nuploads and readings per phase (an upload counts in the phase its answer arrived in)")
        print(f"{'phase':<20}{'sent':>7}{'accepted':>10}{'(dup)':>7}{'refused':>9}{'slowest':>9}", end="")
        print(f"  {'expected':>9}{'stored':>9}  refusals")
        for name, tally in self.tally.phases.items():
            refusals = ", ".join(f"{reason} x{count}" for reason, count in tally.refused.most_common()) or "-"
            print(
                f"{name:<20}{tally.sent:>7}{tally.accepted:>10}{tally.duplicate:>7}{sum(tally.refused.values()):>9}"
                f"{tally.slowest_s:>8.1f}s"
                f"  {len(tally.expected):>9}{len(tally.expected & stored):>9}  {refusals}"
            )
        print(f"device logins refused or failed: {self.tally.login_failures}")

        print("\nrecovery per fault (seconds; first 201 and backlog drained are counted from the restore)")
        print(f"{'fault':<20}{'held':>6}{'restore':>9}{'first 201':>11}{'drained':>9}  notes")
        for fault in self.faults:
            print(
                f"{fault.name:<20}{fault.held_s:>6.1f}{fault.restore_s:>9.1f}{_seconds(fault.first_accept_s):>11}"
                f"{_seconds(fault.drained_s):>9}  {'; '.join(fault.notes) or '-'}"
            )
            if fault.notes:
                problems.append(f"{fault.name}: {'; '.join(fault.notes)}")
        print(f"drain: every accepted batch finished after {_seconds(drained_s)} s")

        missing = expected - stored
        foreign = stored - self.tally.sent_readings
        outcomes = self.batch_outcomes()
        left_with_devices = sum(device.pending_readings for device in self.devices)
        dead, dead_total = self.dead_letters()
        unanswered = sum(tally.refused["ReadTimeout"] for tally in self.tally.phases.values())
        print("\nchecks")
        print(f"  readings of uploads answered 201: {len(expected)}; of them stored: {len(expected & stored)}")
        print(f"  rows stored: {stored_rows}, distinct (sensor, time): {len(stored)}; never sent: {len(foreign)}")
        print(f"  accepted batches: {len(self.tally.accepted_batches)}: {dict(outcomes)}")
        print(f"  readings the devices could not deliver by the end: {left_with_devices}")
        print(f"  uploads without an answer within {REQUEST_TIMEOUT_S:.0f} s: {unanswered}")
        print(f"  records of the soak's tenants on the dead-letter topic: {dead} (of {dead_total} read)")
        if missing:
            problems.append(f"{len(missing)} readings of accepted uploads not stored, e.g. {sorted(missing)[:3]}")
        if stored_rows != len(stored):
            problems.append(f"{stored_rows - len(stored)} readings stored more than once")
        if foreign:
            problems.append(f"{len(foreign)} stored readings no device sent")
        if set(outcomes) != {"done"}:
            problems.append(f"accepted batches not all done: {dict(outcomes)}")
        if drained_s is None:
            problems.append(f"{unfinished} accepted batches unfinished after {self.args.drain_timeout:.0f} s")
        if left_with_devices:
            problems.append(f"{left_with_devices} readings never accepted after the faults ended")
        if unanswered:
            problems.append(f"{unanswered} uploads had no answer within {REQUEST_TIMEOUT_S:.0f} s")
        if dead:
            problems.append(f"{dead} dead-lettered records of the soak's tenants")
        for device in self.devices:
            if device.error is not None:
                problems.append(f"device {device.username} crashed: {device.error!r}")
        print("\n" + ("FAILED:\n  " + "\n  ".join(problems) if problems else "OK: every accepted reading stored once"))
        return 1 if problems else 0


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=20, help="simulated devices (10 per tenant)")
    parser.add_argument("--interval", type=float, default=1.5, help="mean seconds between a device's uploads")
    parser.add_argument("--warmup", type=float, default=20, help="seconds of uploads before the first fault")
    parser.add_argument("--hold", type=float, default=15, help="seconds each stopped service stays down")
    parser.add_argument("--settle", type=float, default=5, help="seconds of uploads after each recovery")
    parser.add_argument("--recovery-timeout", type=float, default=120, help="bound on each fault's recovery")
    parser.add_argument("--flush-timeout", type=float, default=60, help="bound on the devices' last deliveries")
    parser.add_argument("--drain-timeout", type=float, default=180, help="bound on processing what was accepted")
    parser.add_argument(
        "--faults",
        type=lambda text: text.split(","),
        default=["process", "kafka", "postgres", "redis", "s3"],
        help="faults in order (comma-separated): process,kafka,postgres,redis,s3",
    )
    args = parser.parse_args()
    unknown = set(args.faults) - {"process", "kafka", "postgres", "redis", "s3"}
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    return Soak(args).run()


if __name__ == "__main__":
    sys.exit(main())
