"""Retention: keep the raw table's day partitions ready, refresh the aggregates, then expire raw data, blobs
and ledger rows past their time.

Every run (refresh or expire) first creates the day partitions of the whole accepted window, so process
never has to (easysmart.partitions). Order matters: raw data is dropped only where every aggregate has
materialised it (the plain refresh runs first, and a partition is dropped only when the watermarks are
past it and no logged late range reaches into it). Partition steps wait for their locks at most
`partition_lock_timeout_s`; one that could not have them is reported as deferred and done by a later run.
One run at a time (a PostgreSQL advisory lock, waited for); every step is idempotent, so a repeated or
overlapping run does no harm.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import date, datetime, timedelta, timezone
from typing import Callable

import botocore.exceptions

from easysmart import aggregates, audit, partitions
from easysmart.aggregates import AggregateBackend
from easysmart.auth import prune_login_records
from easysmart.config import AggregateSettings, AuditSettings, LoginSettings, RetentionSettings
from easysmart.db import Database
from easysmart.errors import BadRequestError, UnavailableError
from easysmart.ledger import BatchLedger

logger = logging.getLogger(__name__)

JOBS = ("refresh", "expire", "all")
RUN_LOCK = "esm_retention_run"
RUN_LOCK_WAIT = "120s"
_BLOB_DAY = re.compile(r"^raw/(\d{4})/(\d{2})/(\d{2})/$")
_BLOB_BATCH = re.compile(  # a blob's batch id
    r"^raw/\d{4}/\d{2}/\d{2}/[^/]+/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.json\.gz$"
)


def parse_job(raw: object) -> str:
    job = "all" if raw is None else raw
    if job not in JOBS:
        raise BadRequestError(f"job: must be one of {', '.join(JOBS)}, not {raw!r}", parameter="job")
    return job


class BlobExpiry:
    """Deletes blobs by their date-partitioned prefixes raw/YYYY/MM/DD/<tenant>/<batch>.json.gz (the ingest key layout).

    A done batch's blob goes after the blob retention. Any other batch's (failed, dead-lettered by the source
    after its retries, or never finished) is kept as long as the dead-letter topic keeps claim checks, so
    `esm dlq replay` after a fix finds the blob its claim check names; then the whole day goes.
    """

    def __init__(self, client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket
        self.lifecycle: str | None = None

    def _prefixes(self, prefix: str) -> list[str]:
        found: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, Delimiter="/"
        ):
            found.extend(entry["Prefix"] for entry in page.get("CommonPrefixes", []))
        return found

    def days(self) -> list[tuple[date, str]]:
        days = []
        for year in self._prefixes("raw/"):
            for month in self._prefixes(year):
                for day in self._prefixes(month):
                    match = _BLOB_DAY.match(day)
                    if match:
                        days.append((date(int(match[1]), int(match[2]), int(match[3])), day))
        return sorted(days)

    def delete_prefix(self, prefix: str, keep: Callable[[list[str]], set[str]] | None = None) -> int:
        """Deletes the blobs under prefix, but those of the keys keep(keys) returns; how many went."""
        deleted = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys = [entry["Key"] for entry in page.get("Contents", [])]
            kept = keep(keys) if keep and keys else set()
            going = [{"Key": key} for key in keys if key not in kept]
            if going:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": going, "Quiet": True})
                deleted += len(going)
        return deleted

    def expire(self, retention: RetentionSettings, now: datetime, ledger: BatchLedger) -> dict:
        today = now.astimezone(timezone.utc).date()
        kept_days = max(retention.blob_retention_days, retention.dlq_retention_days)
        done_cutoff = today - timedelta(days=retention.blob_retention_days)
        kept_cutoff = today - timedelta(days=kept_days)
        self._ensure_lifecycle(kept_days)

        def not_done(keys: list[str]) -> set[str]:
            batches = {key: match[1] for key in keys if (match := _BLOB_BATCH.match(key))}
            done = ledger.done_among(list(set(batches.values()))) if batches else set()
            return {key for key in keys if batches.get(key) not in done}

        expired, trimmed, deleted = [], [], 0
        try:
            for day, prefix in self.days():
                # A day goes once all of it is older than the retention.
                if day + timedelta(days=1) <= kept_cutoff:
                    deleted += self.delete_prefix(prefix)
                    expired.append(day.isoformat())
                elif day + timedelta(days=1) <= done_cutoff:
                    deleted += self.delete_prefix(prefix, keep=not_done)
                    trimmed.append(day.isoformat())
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise UnavailableError(f"the object store failed during blob expiry: {error}") from error
        return {
            "blob_days_expired": expired,
            "blob_days_kept_for_replay": trimmed,
            "blobs_deleted": deleted,
            "blob_lifecycle_rule": self.lifecycle,
        }

    def _ensure_lifecycle(self, retention_days: int) -> None:
        """Where the store supports lifecycle rules, it expires blobs itself too (belt and braces), after the
        longest any blob is kept (a rule cannot tell a done batch's blob from another's)."""
        if self.lifecycle is not None:
            return
        try:
            self.client.put_bucket_lifecycle_configuration(
                Bucket=self.bucket,
                LifecycleConfiguration={
                    "Rules": [
                        {
                            "ID": "expire-raw-uploads",
                            "Status": "Enabled",
                            "Filter": {"Prefix": "raw/"},
                            "Expiration": {"Days": retention_days + 1},
                        }
                    ]
                },
            )
            self.lifecycle = "set"
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            logger.info("the object store does not take a lifecycle rule (%s); expiry deletes blobs itself", error)
            self.lifecycle = "unsupported"


class RetentionService:
    def __init__(
        self,
        settings: RetentionSettings,
        aggregates: AggregateSettings,
        db: Database,
        blobs: BlobExpiry | None,
        backend: AggregateBackend | None = None,
        partition_lock_timeout_s: float = 1.0,
        login: LoginSettings = LoginSettings(),
        audit_settings: AuditSettings = AuditSettings(),
    ) -> None:
        self.settings = settings
        self.login = login
        self.audit_settings = audit_settings
        self.aggregates = aggregates
        self.db = db
        self.blobs = blobs
        self.backend = backend
        self.partition_lock_timeout_s = partition_lock_timeout_s
        self.ledger = BatchLedger(db)

    def run(self, job: str = "all", now: datetime | None = None) -> dict:
        started = time.perf_counter()
        backend = self.backend or aggregates.backend_for(self.db)
        report: dict = {"job": job}
        now = now or datetime.now(timezone.utc)
        with self.db.connection() as lock_conn:
            with lock_conn.cursor() as cursor:
                cursor.execute(f"SET lock_timeout = '{RUN_LOCK_WAIT}'")
                cursor.execute("SELECT pg_advisory_lock(hashtext(%s))", (RUN_LOCK,))
            lock_conn.commit()
            try:
                report["partitions"] = backend.ensure_raw_partitions(
                    self.db,
                    *partitions.accepted_window(now, self.settings.raw_retention_days),
                    self.partition_lock_timeout_s,
                )
                report["refresh"] = backend.refresh(self.db, self.aggregates.aggregate_timezone).body()
                if job in ("expire", "all"):
                    report["expire"] = self.expire(backend, now)
            finally:
                with lock_conn.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", (RUN_LOCK,))
                    cursor.execute("RESET lock_timeout")
                lock_conn.commit()
        report["duration_s"] = round(time.perf_counter() - started, 3)
        logger.info("retention run", extra=report)
        return report

    def expire(self, backend: AggregateBackend, now: datetime) -> dict:
        result = self._expire_raw(backend, now)
        result["batches_pruned"] = self.ledger.prune(now - timedelta(days=self.settings.raw_retention_days))
        result.update(prune_login_records(self.db, now, self.login.login_lockout_s))
        result.update(audit.prune(self.db, now, self.audit_settings.audit_retention_days))
        if self.blobs is not None:
            result.update(self.blobs.expire(self.settings, now, self.ledger))
        return result

    def _expire_raw(self, backend: AggregateBackend, now: datetime) -> dict:
        cutoff = now - timedelta(days=self.settings.raw_retention_days)
        return backend.drop_raw_before(self.db, cutoff, self.partition_lock_timeout_s)
