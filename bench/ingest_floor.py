"""Ingest of small uploads through the front door against the floor of the same work, in one run.

The floor: the same bytes PUT with boto3 to the same S3 server plus a 1 KB record produced with acks=all, at the
same concurrency. Ingest: the same uploads (40 readings in the client's shape, one equipment; gzip as the client
sends them, and uncompressed) POSTed through the front door. Rounds alternate floor / gzip / uncompressed so that
the shared machine's noise falls on all three alike; every upload is distinct, so duplicate detection never
short-cuts a request. Ingest is restarted for the run with the rate limits raised and its claim checks sent to a
topic nobody consumes (process does not compete for the cores). Prints JSON lines.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import boto3
import botocore.config
import kafka
import orjson
import psycopg2
import requests
from ingest_load import BENCH_TOPIC, ROOT, ensure_bench_topic, stack
from uploads import client_upload

from easysmart import accounts

BASE = os.environ.get("ESM_BASE_URL", "http://127.0.0.1:8080")
READINGS = 40
# The floor's record: about a claim check's size.
FLOOR_RECORD = b"x" * 1024
# Targets (issue 12): requests/s >= 0.7 x the floor's, p95 <= 1.5 x the floor's.
TARGET_RATE_RATIO, TARGET_P95_RATIO = 0.7, 1.5


def device_tokens(count: int) -> list[str]:
    """Tokens of `count` new device accounts (a fleet uploads from several)."""
    suffix = uuid.uuid4().hex[:8]
    names = [f"bench-floor-{suffix}-{n}" for n in range(count)]
    conn = psycopg2.connect(os.environ["DATABASE_URL"])
    with conn, conn.cursor() as cursor:
        accounts.create_tenant(cursor, f"bench-floor-{suffix}", "America/Sao_Paulo")
        for name in names:
            accounts.create_account(cursor, f"bench-floor-{suffix}", "device", name, "bench-pass")
    conn.close()
    tokens = []
    for name in names:
        answer = requests.post(
            f"{BASE}/api/v1/auth/device/login", json={"username": name, "password": "bench-pass"}, timeout=10
        )
        answer.raise_for_status()
        tokens.append(answer.json()["access_token"])
    return tokens


def upload_texts(count: int, first: int) -> list[bytes]:
    """`count` distinct uploads of 40 readings, each reading stamped as the client stamps it
    (datetime.now().isoformat(): naive, microseconds)."""
    end = datetime.now() - timedelta(minutes=5)
    return [
        orjson.dumps(client_upload(READINGS, seed=n % 8, equipments=1, end=end, values_seed=n))
        for n in range(first, first + count)
    ]


def latencies_of(concurrency: int, requests_total: int, one: Callable[[int], None]) -> tuple[list[float], float]:
    def timed(index: int) -> float:
        started = time.perf_counter()
        one(index)
        return time.perf_counter() - started

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm-up: connections, pools
        started = time.perf_counter()
        latencies = list(pool.map(timed, range(concurrency, concurrency + requests_total)))
        return latencies, time.perf_counter() - started


# The services of this tree's stack whose CPU a request costs (stack.sh starts each in a process group of its own).
SERVICES = ("frontdoor", "ingest", "redis", "s3", "kafka")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def service_pids() -> dict[str, list[int]]:
    """The processes of each service, PostgreSQL's postmaster and its backends included."""
    stats = {int(p.name): _stat(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
    groups = {name: int((ROOT / f".local/run/{name}.pid").read_text().split()[0]) for name in SERVICES}
    pids = {
        name: [pid for pid, stat in stats.items() if stat and int(stat[2]) == pgid] for name, pgid in groups.items()
    }
    postmaster = int((ROOT / ".local/pgdata/postmaster.pid").read_text().split()[0])
    pids["postgres"] = [postmaster] + [pid for pid, stat in stats.items() if stat and int(stat[1]) == postmaster]
    return pids


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU each process has used so far."""
    stats = {pid: _stat(pid) for pid in pids}
    return {pid: (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK") for pid, stat in stats.items() if stat}


def cpu_used(before: dict[int, float], pids: list[int]) -> float:
    """CPU used since `before` by the processes alive then and now (a forked child that exited meanwhile, such as
    Redis's snapshot, is not counted)."""
    after = cpu_seconds(pids)
    return sum(after[pid] - seconds for pid, seconds in before.items() if pid in after)


class Floor:
    """The same bytes PUT with boto3 plus a 1 KB record produced with acks=all: one client each, shared."""

    def __init__(self, concurrency: int) -> None:
        self.s3 = boto3.client(
            "s3",
            endpoint_url=os.environ["S3_ENDPOINT_URL"],
            aws_access_key_id=os.environ["S3_ACCESS_KEY_ID"],
            aws_secret_access_key=os.environ["S3_SECRET_ACCESS_KEY"],
            region_name=os.environ.get("S3_REGION", "us-east-1"),
            config=botocore.config.Config(
                max_pool_connections=concurrency,
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        self.bucket = os.environ["S3_BUCKET"]
        self.producer = kafka.KafkaProducer(
            bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"].split(","), acks="all", enable_idempotence=True
        )

    def one(self, body: bytes) -> None:
        key = f"bench/floor/{uuid.uuid4()}.json.gz"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentEncoding="gzip")
        self.producer.send(BENCH_TOPIC, key=key.encode(), value=FLOOR_RECORD).get(timeout=10)

    def close(self) -> None:
        self.producer.close()


def ingest_one(tokens: list[str], sessions: threading.local, gzipped: bool) -> Callable[[int, bytes], None]:
    def one(index: int, body: bytes) -> None:
        if not hasattr(sessions, "session"):
            sessions.session = requests.Session()
        headers = {"Authorization": f"Bearer {tokens[index % len(tokens)]}", "Content-Type": "application/json"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        response = sessions.session.post(f"{BASE}/api/v1/telemetry/bulk", data=body, headers=headers, timeout=60)
        if response.status_code != 201 or response.json().get("duplicate"):
            raise RuntimeError(f"upload answered {response.status_code}: {response.text[:200]}")

    return one


def summary(latencies: list[float], wall: float) -> dict:
    latencies = sorted(latencies)
    return {
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))] * 1000, 1),
        "requests": len(latencies),
    }


def measure(concurrency: int, rounds: int, per_round: int, tokens: list[str], first_upload: int) -> list[dict]:
    floor = Floor(concurrency)
    sessions = threading.local()
    modes: dict[str, Callable[[int, bytes], None]] = {
        "floor": lambda index, body: floor.one(body),
        "ingest_gzip": ingest_one(tokens, sessions, gzipped=True),
        "ingest_identity": ingest_one(tokens, sessions, gzipped=False),
    }
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    walls = dict.fromkeys(modes, 0.0)
    # CPU of each service, and of this client, while each mode ran (the warm-up included).
    cpu = {mode: dict.fromkeys([*SERVICES, "postgres", "client"], 0.0) for mode in modes}
    sizes: dict[str, int] = {}
    upload = first_upload
    try:
        for _ in range(rounds):
            for mode, send in modes.items():
                # Every request its own upload (made before the clock starts): warm-up and measured ones.
                texts = upload_texts(concurrency + per_round, upload)
                upload += len(texts)
                bodies = [text if mode == "ingest_identity" else gzip.compress(text, 6) for text in texts]
                sizes[mode] = len(bodies[-1])
                pids = service_pids()
                before = {name: cpu_seconds(found) for name, found in pids.items()}
                client_before = time.process_time()
                latencies, wall = latencies_of(concurrency, per_round, lambda index: send(index, bodies[index]))
                cpu[mode]["client"] += time.process_time() - client_before
                for name, found in pids.items():
                    cpu[mode][name] += cpu_used(before[name], found)
                samples[mode] += latencies
                walls[mode] += wall
    finally:
        floor.close()
    results = {mode: summary(samples[mode], walls[mode]) for mode in modes}
    lines = []
    for mode, result in results.items():
        line = {"bench": "ingest_floor", "mode": mode, "concurrency": concurrency, "body_bytes": sizes[mode], **result}
        sent = rounds * (concurrency + per_round)
        per_request = {name: round(1000 * seconds / sent, 2) for name, seconds in cpu[mode].items()}
        line |= {"cpu_ms_per_request": {"total": round(sum(per_request.values()), 2), **per_request}}
        if mode != "floor":
            rate_ratio = result["requests_per_s"] / results["floor"]["requests_per_s"]
            p95_ratio = result["p95_ms"] / results["floor"]["p95_ms"]
            line |= {
                "rate_vs_floor": round(rate_ratio, 2),
                "p95_vs_floor": round(p95_ratio, 2),
                "targets_met": rate_ratio >= TARGET_RATE_RATIO and p95_ratio <= TARGET_P95_RATIO,
            }
        lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200, help="measured requests per round and mode")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--no-restart", action="store_true", help="use ingest as it runs (its limits must allow it)")
    args = parser.parse_args()
    ensure_bench_topic()
    bench_env = {
        "RATELIMIT_DEVICE_PER_MINUTE": "100000000",
        "RATELIMIT_ADDRESS_PER_MINUTE": "100000000",
        "KAFKA_TOPIC_RAW": BENCH_TOPIC,
    }
    if not args.no_restart:
        stack("restart", "ingest", env=bench_env)
    try:
        tokens = device_tokens(args.devices)
        # Not measured: every ingest worker makes its clients on its first requests.
        measure(8, rounds=1, per_round=40, tokens=tokens, first_upload=9_000_000)
        for number, concurrency in enumerate(args.concurrency):
            for line in measure(concurrency, args.rounds, args.requests, tokens, first_upload=number * 1_000_000):
                print(json.dumps(line), flush=True)
    finally:
        if not args.no_restart:
            stack("restart", "ingest")


if __name__ == "__main__":
    main()
