"""Ingest latency and throughput through the front door, and ingest's memory during a 10 MiB upload.

Runs against the local stack with ingest restarted for the run: rate limits raised and claim
checks sent to a topic nobody consumes (so process does not compete for the two cores).
Prints JSON lines.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import requests
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError
from uploads import sized_for_gzip, unique_variant

from easysmart import accounts

ROOT = Path(__file__).resolve().parent.parent
BASE = os.environ.get("ESM_BASE_URL", "http://127.0.0.1:8080")
BENCH_TOPIC = "bench.raw"
KiB, MiB = 1024, 1024 * 1024


def stack(*args: str, env: dict | None = None) -> None:
    subprocess.run(
        ["bash", str(ROOT / "infra/local/stack.sh"), *args],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def device_token() -> str:
    suffix = uuid.uuid4().hex[:8]
    conn = psycopg2.connect(os.environ["DATABASE_URL"])
    with conn, conn.cursor() as cursor:
        accounts.create_tenant(cursor, f"bench-ingest-{suffix}", "America/Sao_Paulo")
        accounts.create_account(cursor, f"bench-ingest-{suffix}", "device", f"bench-ingest-{suffix}", "bench-pass")
    conn.close()
    answer = requests.post(
        f"{BASE}/api/v1/auth/device/login",
        json={"username": f"bench-ingest-{suffix}", "password": "bench-pass"},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()["access_token"]


def post(session: requests.Session, token: str, body: bytes) -> float:
    started = time.perf_counter()
    response = session.post(
        f"{BASE}/api/v1/telemetry/bulk",
        data=body,
        timeout=60,
        headers={"Authorization": f"Bearer {token}", "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 201:
        raise RuntimeError(f"upload answered {response.status_code}: {response.text[:200]}")
    return elapsed


def load(token: str, body: bytes, concurrency: int, requests_total: int, tag_base: int) -> dict:
    sessions = threading.local()

    def one(index: int) -> float:
        if not hasattr(sessions, "session"):
            sessions.session = requests.Session()
        return post(sessions.session, token, unique_variant(body, tag_base + index))

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm-up: connections, pools, caches
        started = time.perf_counter()
        latencies = list(pool.map(one, range(concurrency, concurrency + requests_total)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))] * 1000, 1),
        "requests_per_s": round(requests_total / wall, 1),
        "requests": requests_total,
    }


def ingest_pids() -> list[int]:
    pgid = int((ROOT / ".local/run/ingest.pid").read_text().split()[0])
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _pgid(int(p.name)) == pgid]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KiB
    return 0


def memory_during_upload(token: str, body: bytes, small_body: bytes) -> dict:
    pids = ingest_pids()
    session = requests.Session()
    for tag in range(8):  # every worker has served small uploads before the baseline
        post(session, token, unique_variant(small_body, 900_000 + tag))
    baseline = {pid: rss(pid) for pid in pids}
    peak = dict(baseline)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid in pids:
                peak[pid] = max(peak[pid], rss(pid))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    post(session, token, unique_variant(body, 999_999))
    done.set()
    sampler.join()
    growth = max(peak[pid] - baseline[pid] for pid in pids)
    return {
        "upload_bytes": len(body),
        "rss_growth_mib": round(growth / MiB, 1),
        "baseline_rss_mib": round(max(baseline.values()) / MiB, 1),
    }


def ensure_bench_topic() -> None:
    admin = KafkaAdminClient(bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"].split(","))
    try:
        admin.create_topics([NewTopic(BENCH_TOPIC, 1, 1, topic_configs={"retention.ms": str(3600 * 1000)})])
    except TopicAlreadyExistsError:
        pass
    admin.close()


def main() -> None:
    ensure_bench_topic()
    bench_env = {
        "RATELIMIT_DEVICE_PER_MINUTE": "100000000",
        "RATELIMIT_ADDRESS_PER_MINUTE": "100000000",
        "KAFKA_TOPIC_RAW": BENCH_TOPIC,
    }
    stack("restart", "ingest", env=bench_env)
    try:
        token = device_token()
        for size, total in ((64 * KiB, 400), (1 * MiB, 120)):
            _, text, body = sized_for_gzip(size)
            for concurrency in (8, 32):
                result = load(token, body, concurrency, total, tag_base=size + concurrency * 10_000)
                print(
                    json.dumps(
                        {
                            "bench": "ingest",
                            "gzip_bytes": len(body),
                            "json_bytes": len(text),
                            "concurrency": concurrency,
                            **result,
                        }
                    ),
                    flush=True,
                )
        small = sized_for_gzip(64 * KiB)[2]
        _, text, body = sized_for_gzip(10 * MiB - 64 * KiB)
        stack("restart", "ingest", env=bench_env)  # a fresh process: its peak is this upload's
        report = memory_during_upload(token, body, small)
        print(json.dumps({"bench": "ingest_memory", "json_bytes": len(text), **report}), flush=True)
    finally:
        stack("restart", "ingest")


if __name__ == "__main__":
    main()
