"""make bench: process throughput and memory, ingest latency and memory, analytics, alerts, on this machine.

Every figure is printed with the command that produced it. Needs the local stack (make bench starts it).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psycopg2

from easysmart.config import DatabaseSettings

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable


def run(args: list[str]) -> list[dict]:
    command = " ".join(["python", *[str(Path(a).relative_to(HERE.parent)) if a.endswith(".py") else a for a in args]])
    print(f"$ {command}", flush=True)
    output = subprocess.run(
        [PYTHON, *args],
        check=True,
        capture_output=True,
        text=True,
        cwd=HERE,
        # The tree's own package first (a worktree's stack restarted by a benchmark runs that tree's code).
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])},
    ).stdout
    results = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    for result in results:
        print("  " + json.dumps(result), flush=True)
    return results


def settle(timeout_s: float = 180.0, quiet_s: float = 3.0) -> None:
    """Waits (at most timeout_s) until PostgreSQL has done for quiet_s what the benchmarks before left it to do
    (autovacuum after their bulk loads, batches still being processed): a side-by-side ratio measured meanwhile
    charges that work to whichever side ran then."""
    busy = (
        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
        " AND (backend_type = 'autovacuum worker' OR state = 'active')"
    )
    conn = psycopg2.connect(DatabaseSettings.from_env().database_url)
    conn.autocommit = True
    try:
        deadline, quiet_since = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            with conn.cursor() as cursor:
                cursor.execute(busy)
                active = cursor.fetchone()[0]
            now = time.monotonic()
            quiet_since = (quiet_since or now) if active == 0 else None
            if quiet_since is not None and now - quiet_since >= quiet_s:
                return
            time.sleep(0.5)
        print(f"  (PostgreSQL still busy after {timeout_s:.0f} s; measuring anyway)", flush=True)
    finally:
        conn.close()


def main() -> None:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(
        f"machine: {os.cpu_count()} cores ({cpu}),"
        f" {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB,"
        f" Python {platform.python_version()}"
    )
    print(
        "\n== process: a large upload in the client's format (every reading its own microsecond time) vs a bare COPY"
        " of the same rows (target ratio >= 0.35)"
    )
    run([str(HERE / "process_batch.py"), "--readings", "200000", "--bare-copy"])
    print(
        "\n== small batches: 40-reading gzip uploads from 16 devices at concurrency 8, first 201 to last done, vs the"
        " floor of the same bytes PUT, produced, consumed, fetched and COPYed (targets: ratio >= 0.5, >= 156/s)"
    )
    settle()
    run([str(HERE / "small_batches.py"), "--uploads", "400", "--rounds", "3"])
    print("\n== process: the largest upload the limits allow (10 MiB gzip body)")
    run([str(HERE / "process_batch.py"), "--max-gzip-bytes", str(10 * 1024 * 1024)])
    print("\n== process with and without its telemetry.stored outbox event, 5 alternating rounds (median drop <= 5 %)")
    run([str(HERE / "outbox_cost.py"), "--rounds", "5", "--readings", "200000"])
    print(
        "\n== process and ingest (in-process) with tracing on, 10 % sampled and exported to a local OTLP receiver,"
        " vs off, 5 alternating rounds (median drop <= 5 %)"
    )
    run([str(HERE / "tracing_cost.py"), "--rounds", "5", "--ratio", "0.1"])
    print(
        "\n== ingest through http://127.0.0.1:8080"
        " (targets at concurrency 8: p95 <= 25 ms for 64 KiB, <= 150 ms for 1 MiB),"
        " then ingest's memory growth during a 10 MiB upload (target <= 64 MiB)"
    )
    run([str(HERE / "ingest_load.py")])
    print(
        "\n== ingest of 40-reading uploads (gzip as the client sends them, and uncompressed) through"
        f" {os.environ.get('ESM_BASE_URL', 'http://127.0.0.1:8080')} vs the floor (the same bytes PUT with boto3"
        " plus a 1 KB record produced with acks=all), alternating rounds at concurrency 8 and 32"
        " (targets: requests/s >= 0.7x the floor's, p95 <= 1.5x the floor's)"
    )
    settle()
    run([str(HERE / "ingest_floor.py")])
    print(
        "\n== analytics: 30-day hourly history of one equipment over 10.4 million readings, through the aggregates vs"
        " from raw rows, the HTTP endpoint via :8080 with and without analytics' cache (targets: p95 <= 20 ms, the"
        " raw-row answer >= 20x slower), a refresh after one hour (the seed is kept for the next run)"
    )
    run([str(HERE / "analytics_query.py")])
    print(
        "\n== alerts: an upload's 201 to its alert's webhook through the whole stack"
        " (40-reading batches, 5/s for 30 s),"
        " then AlertEngine.on_stored per 40-reading batch with 4 and with 10,000 rules in the tenant"
    )
    run([str(HERE / "alert_latency.py"), "--rate", "5", "--seconds", "30"])
    run([str(HERE / "alert_rules_cost.py"), "--rules", "10000", "--calls", "21"])


if __name__ == "__main__":
    main()
