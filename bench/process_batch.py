"""One measurement of process, run in its own interpreter so its peak memory is its own.

Stages a generated upload in the real client's format as a blob, processes it in-process with
the real PostgreSQL and S3 server, then (with --bare-copy) deletes the rows and COPYs the very
same rows straight into telemetry_data, for the ratio. Prints one JSON line.

    python bench/process_batch.py --readings 200000 [--bare-copy] [--max-gzip-bytes N] [--without-outbox]
        [--shared-times]

Every reading has its own microsecond timestamp, as the client stamps them; --shared-times gives an
equipment's sensors one time per step (the shape this benchmark had before, which parses each time once).

--without-outbox processes as before the outbox: no telemetry.stored event and no per-sensor ranges
(bench/outbox_cost.py alternates rounds with and without it).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import io
import json
import subprocess
import sys
import time
import uuid

import orjson
from uploads import client_upload, sized_for_gzip, stage_blob

from easysmart import accounts
from easysmart import process as process_module
from easysmart.claimsig import ClaimKeyring
from easysmart.config import (
    ClaimSigningSettings,
    DatabaseSettings,
    ObjectStoreSettings,
    ProcessSettings,
    RetentionSettings,
    UploadLimits,
)
from easysmart.copywriter import CopyWriter
from easysmart.db import Database
from easysmart.events import ClaimCheck
from easysmart.process import BatchProcessor
from easysmart.storage import make_blob_store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--max-gzip-bytes", type=int, help="instead: the largest upload whose gzip fits this size")
    parser.add_argument("--bare-copy", action="store_true")
    parser.add_argument("--without-outbox", action="store_true")
    parser.add_argument("--shared-times", action="store_true", help="an equipment's sensors share each time")
    parser.add_argument("--process-claim", help=argparse.SUPPRESS)  # internal: process this claim, print the figures
    args = parser.parse_args()
    if args.process_claim:
        process_only(ClaimCheck(**json.loads(args.process_claim)), args.without_outbox)
        return

    store = ObjectStoreSettings.from_env()
    db = Database(DatabaseSettings.from_env().database_url, 4)
    blobs = make_blob_store(store, timeout_s=60)
    suffix = uuid.uuid4().hex[:8]
    with db.transaction() as cursor:
        tenant_id = accounts.create_tenant(cursor, f"bench-{suffix}", "America/Sao_Paulo")
        account_id = accounts.create_account(cursor, f"bench-{suffix}", "device", f"bench-{suffix}", "bench")

    if args.max_gzip_bytes:
        items, text, body = sized_for_gzip(args.max_gzip_bytes, distinct_times=not args.shared_times)
    else:
        items = client_upload(args.readings, distinct_times=not args.shared_times)
        text = orjson.dumps(items)
        body = gzip.compress(text, 6)
    readings = sum(len(item["sensor"]) for item in items)
    del items
    # Signed as ingest signs it, with the local stack's key (make bench exports it).
    keyring = ClaimKeyring.from_settings(ClaimSigningSettings.from_env())
    window_bytes = UploadLimits.from_env().ingest_sync_window_bytes
    claim = stage_blob(
        blobs, keyring, tenant_id, account_id, "bench", body, len(text) if len(text) <= window_bytes else None
    )
    decompressed = len(text)
    del text, body
    # Processed in a child interpreter, so the peak memory is process's, not the generator's.
    child = subprocess.run(
        [sys.executable, __file__, "--process-claim", json.dumps(dataclasses.asdict(claim))]
        + (["--without-outbox"] if args.without_outbox else []),
        check=True,
        capture_output=True,
        text=True,
    )
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    process_s = measured["process_s"]
    report = {
        "timestamps": "shared" if args.shared_times else "distinct",
        "readings": readings,
        "gzip_bytes": claim.size_bytes,
        "decompressed_bytes": decompressed,
        **measured,
    }

    if args.bare_copy:
        with db.connection() as conn, conn.cursor() as cursor:
            columns = (
                "sensor_id, equipment_id, ts, value, state, battery_pct, lqi, rssi,"
                " battery_voltage, voltage, current, power"
            )
            rows = io.BytesIO()
            cursor.copy_expert(
                f"COPY (SELECT {columns} FROM telemetry_data t WHERE t.sensor_id IN"
                f" (SELECT id FROM sensors WHERE tenant_id = '{tenant_id}')) TO STDOUT",
                rows,
            )
            cursor.execute(
                "DELETE FROM telemetry_data WHERE sensor_id IN (SELECT id FROM sensors WHERE tenant_id = %s)",
                (tenant_id,),
            )
            conn.commit()
            # The COPY then meets a table as clean as process met it.
            conn.autocommit = True
            cursor.execute("VACUUM telemetry_data")
            conn.autocommit = False
            rows.seek(0)
            started = time.perf_counter()
            cursor.copy_expert(f"COPY telemetry_data ({columns}) FROM STDIN", rows)
            conn.commit()
            copy_s = time.perf_counter() - started
        report.update(
            {
                "bare_copy_s": round(copy_s, 3),
                "bare_copy_readings_per_s": round(measured["stored"] / copy_s),
                "ratio": round(copy_s / process_s, 3),
            }
        )
    print(json.dumps(report))
    sys.stdout.flush()


class _WriterWithoutSpans(CopyWriter):
    def _note_stored(self, rows: list[tuple[str, str]]) -> None:
        return None


def process_only(claim: ClaimCheck, without_outbox: bool) -> None:
    if without_outbox:
        process_module.outbox.enqueue = lambda cursor, event: None  # type: ignore[assignment]
    store = ObjectStoreSettings.from_env()
    processor = BatchProcessor(
        ProcessSettings.from_env(),
        UploadLimits.from_env(),
        RetentionSettings.from_env(),
        Database(DatabaseSettings.from_env().database_url, 4),
        make_blob_store(store, timeout_s=60),
        writer_factory=_WriterWithoutSpans if without_outbox else CopyWriter,
        keyring=ClaimKeyring.from_settings(ClaimSigningSettings.from_env()),
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    result = processor.process(claim)
    process_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec from the (large) parent.
    peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(
        json.dumps(
            {
                "stored": result.stored,
                "process_s": round(process_s, 3),
                "process_readings_per_s": round(result.stored / process_s),
                # CPU seconds of both threads (parser and writer): steadier than wall time on a shared machine.
                "process_cpu_s": round(cpu_s, 3),
                "process_cpu_us_per_reading": round(cpu_s / max(result.readings, 1) * 1e6, 2),
                "process_peak_rss_mib": round(peak / 2**20, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
