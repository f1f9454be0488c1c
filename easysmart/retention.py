"""Retention: refresh the aggregates, then expire raw data, blobs and ledger rows past their time.

Order matters: raw data is dropped only where every aggregate has materialised it (the plain
refresh runs first, and a partition is dropped only when the watermarks are past it and no
logged late range reaches into it). One run at a time (a PostgreSQL advisory lock, waited
for); every step is idempotent, so a repeated or overlapping run does no harm.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import date, datetime, timedelta, timezone

import botocore.exceptions

from easysmart import aggregates
from easysmart.aggregates import AggregateBackend
from easysmart.auth import prune_login_records
from easysmart.config import AggregateSettings, LoginSettings, RetentionSettings
from easysmart.db import Database
from easysmart.errors import BadRequestError, UnavailableError
from easysmart.ledger import BatchLedger

logger = logging.getLogger(__name__)

JOBS = ("refresh", "expire", "all")
RUN_LOCK = "esm_retention_run"
RUN_LOCK_WAIT = "120s"
_BLOB_DAY = re.compile(r"^raw/(\d{4})/(\d{2})/(\d{2})/$")


def parse_job(raw: object) -> str:
    job = "all" if raw is None else raw
    if job not in JOBS:
        raise BadRequestError(f"job: must be one of {', '.join(JOBS)}, not {raw!r}", parameter="job")
    return job


class BlobExpiry:
    """Deletes blobs by their date-partitioned prefixes raw/YYYY/MM/DD/ (the ingest key layout)."""

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

    def delete_prefix(self, prefix: str) -> int:
        deleted = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys = [{"Key": entry["Key"]} for entry in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                deleted += len(keys)
        return deleted

    def expire(self, retention_days: int, now: datetime) -> dict:
        cutoff = now.astimezone(timezone.utc).date() - timedelta(days=retention_days)
        self._ensure_lifecycle(retention_days)
        expired, deleted = [], 0
        try:
            for day, prefix in self.days():
                # A day goes once all of it is older than the retention.
                if day + timedelta(days=1) <= cutoff:
                    deleted += self.delete_prefix(prefix)
                    expired.append(day.isoformat())
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise UnavailableError(f"the object store failed during blob expiry: {error}") from error
        return {"blob_days_expired": expired, "blobs_deleted": deleted, "blob_lifecycle_rule": self.lifecycle}

    def _ensure_lifecycle(self, retention_days: int) -> None:
        """Where the store supports lifecycle rules, it expires blobs itself too (belt and braces)."""
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
        login: LoginSettings = LoginSettings(),
    ) -> None:
        self.settings = settings
        self.login = login
        self.aggregates = aggregates
        self.db = db
        self.blobs = blobs
        self.backend = backend
        self.ledger = BatchLedger(db)

    def run(self, job: str = "all", now: datetime | None = None) -> dict:
        started = time.perf_counter()
        backend = self.backend or aggregates.backend_for(self.db)
        report: dict = {"job": job}
        with self.db.connection() as lock_conn:
            with lock_conn.cursor() as cursor:
                cursor.execute(f"SET lock_timeout = '{RUN_LOCK_WAIT}'")
                cursor.execute("SELECT pg_advisory_lock(hashtext(%s))", (RUN_LOCK,))
            lock_conn.commit()
            try:
                report["refresh"] = backend.refresh(self.db, self.aggregates.aggregate_timezone).body()
                if job in ("expire", "all"):
                    report["expire"] = self.expire(backend, now or datetime.now(timezone.utc))
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
        if self.blobs is not None:
            result.update(self.blobs.expire(self.settings.blob_retention_days, now))
        return result

    def _expire_raw(self, backend: AggregateBackend, now: datetime) -> dict:
        cutoff = now - timedelta(days=self.settings.raw_retention_days)
        with self.db.transaction() as cursor:
            # No refresh may run while raw data goes.
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (aggregates.REFRESH_LOCK,))
            return backend.drop_raw_before(cursor, cutoff)
