"""Process with and without the per-account upload statistics (easysmart.uploadstats), in alternating rounds.

The statistics are one statement per batch whatever its size, so small batches show their cost best: each round
processes `--batches` uploads of `--readings` readings (the client's shape, bench/uploads.py; successive uploads
of one installation, so the statistics row is updated, not created) in process, with the real PostgreSQL and S3
server, alternating batch by batch with and without the statistics. Prints each round's medians, the medians
over every batch and the median time of the statement alone.

    python bench/upload_stats_cost.py --rounds 6 --batches 40 --readings 500
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
import uuid
from datetime import datetime, timedelta, timezone

import orjson
from uploads import client_upload, stage_blob

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
from easysmart.db import Database
from easysmart.events import ClaimCheck
from easysmart.process import BatchProcessor
from easysmart.storage import BlobStore, make_blob_store
from easysmart.uploadstats import record_upload


def staged(blobs: BlobStore, keyring: ClaimKeyring, tenant_id: str, account_id: str, items: list) -> ClaimCheck:
    text = orjson.dumps(items)
    body = gzip.compress(text, 6)
    return stage_blob(blobs, keyring, tenant_id, account_id, "bench", body, len(text))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--readings", type=int, default=500)
    parser.add_argument("--statement-runs", type=int, default=500)
    args = parser.parse_args()
    store = ObjectStoreSettings.from_env()
    db = Database(DatabaseSettings.from_env().database_url, 4)
    blobs = make_blob_store(store, timeout_s=60)
    keyring = ClaimKeyring.from_settings(ClaimSigningSettings.from_env())
    processor = BatchProcessor(
        ProcessSettings.from_env(), UploadLimits.from_env(), RetentionSettings.from_env(), db, blobs, keyring=keyring
    )
    suffix = uuid.uuid4().hex[:8]
    with db.transaction() as cursor:
        tenant_id = accounts.create_tenant(cursor, f"bench-{suffix}", "America/Sao_Paulo")
        account_id = accounts.create_account(cursor, f"bench-{suffix}", "device", f"bench-{suffix}", "bench")
    # Every batch a later stretch of the installation's readings: stored, not duplicates.
    start = datetime.now() - timedelta(days=2)
    step = timedelta(seconds=10 * args.readings // 30 + 60)
    uploads = (client_upload(args.readings, end=start + step * n, values_seed=n) for n in range(10**6))
    per_batch_ms: dict[str, list[float]] = {"with": [], "without": []}
    for index in range(args.rounds):
        claims = [staged(blobs, keyring, tenant_id, account_id, next(uploads)) for _ in range(args.batches)]
        round_ms: dict[str, list[float]] = {"with": [], "without": []}
        # Batch by batch the two modes alternate (and which goes first alternates by round), so drift on a shared
        # machine falls on both alike.
        for number, claim in enumerate(claims):
            mode = "with" if (number + index) % 2 == 0 else "without"
            process_module.record_upload = record_upload if mode == "with" else lambda *_: None  # type: ignore
            started = time.perf_counter()
            processor.process(claim)
            round_ms[mode].append(1000 * (time.perf_counter() - started))
        for mode, times in round_ms.items():
            per_batch_ms[mode].extend(times)
            print(
                json.dumps(
                    {"round": index + 1, "stats": mode, "median_ms_per_batch": round(statistics.median(times), 2)}
                ),
                flush=True,
            )
    with_stats, without = statistics.median(per_batch_ms["with"]), statistics.median(per_batch_ms["without"])
    # The statement alone, as process runs it (a transaction already open), rolled back.
    statement_us = []
    with db.connection() as conn, conn.cursor() as cursor:
        for _ in range(args.statement_runs):
            started = time.perf_counter()
            record_upload(cursor, account_id, datetime.now(timezone.utc), args.readings, datetime.now(timezone.utc))
            statement_us.append(1e6 * (time.perf_counter() - started))
        conn.rollback()
    print(
        json.dumps(
            {
                "readings_per_batch": args.readings,
                "median_ms_per_batch_with_stats": round(with_stats, 2),
                "median_ms_per_batch_without_stats": round(without, 2),
                "change_pct": round(100 * (with_stats - without) / without, 1),
                "median_statement_us": round(statistics.median(statement_us)),
            }
        )
    )


if __name__ == "__main__":
    main()
