"""Day partitions of telemetry_data in plain PostgreSQL mode, kept off process's hot path.

Retention creates the partitions of the whole accepted window (today - RAW_RETENTION_DAYS to today + 2)
ahead of time, and drops expired ones; process only makes a day that is truly missing (a fresh stack
before retention ever ran). Neither stops readers or batches: a partition is created apart and ATTACHed
(SHARE UPDATE EXCLUSIVE on telemetry_data, which reads and writes do not conflict with; CREATE TABLE ...
PARTITION OF would take ACCESS EXCLUSIVE and queue them all behind any open transaction; migration 0008),
and goes by DETACH PARTITION ... CONCURRENTLY, then DROP. Retention runs each step under a short
lock_timeout: a step that cannot have its lock in time is left to the next run rather than queueing in
front of readers, and a detach it interrupted is finished then (FINALIZE).
"""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import date, datetime, timedelta, timezone
from typing import Iterator

import psycopg2.extensions
from psycopg2 import sql

from easysmart.db import Database
from easysmart.errors import DatabaseTimeoutError

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^telemetry_data_p(\d{8})$")  # esm_ensure_telemetry_partition's names (migration 0003)
# Past today: readings up to FUTURE_TOLERANCE_S (a day by default) ahead are accepted, and a day to spare
# covers a missed retention run.
DAYS_AHEAD = 2


def name_of(day: date) -> str:
    return f"telemetry_data_p{day:%Y%m%d}"


def day_of(name: str) -> date | None:
    match = _NAME.match(name)
    return None if match is None else date(int(match[1][:4]), int(match[1][4:6]), int(match[1][6:]))


def accepted_window(now: datetime, raw_retention_days: int) -> tuple[date, date]:
    """The first and last UTC day a reading may fall on (the normaliser rejects the others)."""
    today = now.astimezone(timezone.utc).date()
    return today - timedelta(days=raw_retention_days), today + timedelta(days=DAYS_AHEAD)


def _milliseconds(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def create_window(db: Database, first: date, last: date, lock_timeout_s: float) -> dict:
    """Creates the missing day partitions from first to last, each in a transaction of its own under
    lock_timeout; when one cannot have its lock in time, it and the rest are left to the next run."""
    with db.transaction() as cursor:
        cursor.execute(
            "SELECT d::date FROM generate_series(%s::date, %s::date, interval '1 day') d"
            " WHERE to_regclass(format('telemetry_data_p%%s', to_char(d, 'YYYYMMDD'))) IS NULL ORDER BY 1",
            (first, last),
        )
        missing = [day for (day,) in cursor.fetchall()]
    created: list[str] = []
    for day in missing:
        try:
            with db.transaction() as cursor:
                cursor.execute("SELECT set_config('lock_timeout', %s, true)", (_milliseconds(lock_timeout_s),))
                cursor.execute("SELECT esm_ensure_telemetry_partition(%s)", (day,))
        except DatabaseTimeoutError:
            deferred = [later.isoformat() for later in missing[len(created) :]]
            logger.warning(
                "day partitions not created: telemetry_data's lock was not free in time; the next run retries",
                extra={"days": deferred},
            )
            return {"raw_partitions_created": created, "raw_partitions_creation_deferred": deferred}
        created.append(day.isoformat())
    return {"raw_partitions_created": created, "raw_partitions_creation_deferred": []}


def tables_before(cursor: psycopg2.extensions.cursor, end: date) -> list[date]:
    """Days before `end` that still have a table, attached, being detached or detached, oldest first."""
    cursor.execute(
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ '^telemetry_data_p[0-9]{8}$'"
        " AND pg_table_is_visible(oid)"
    )
    days = (day_of(name) for (name,) in cursor.fetchall())
    return sorted(day for day in days if day is not None and day < end)


@contextlib.contextmanager
def _autocommit(db: Database, lock_timeout_s: float) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor outside any transaction block (DETACH ... CONCURRENTLY needs one) whose statements wait at most
    lock_timeout for a lock; the pooled connection gets its own setting back afterwards."""
    with db.connection() as conn:
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT set_config('lock_timeout', %s, false)", (_milliseconds(lock_timeout_s),))
                try:
                    yield cursor
                finally:
                    if not conn.closed:
                        cursor.execute("RESET lock_timeout")
        finally:
            if not conn.closed:
                conn.autocommit = False


def drop_day(db: Database, day: date, lock_timeout_s: float) -> None:
    """Detaches (CONCURRENTLY, or FINALIZE where an earlier detach was interrupted) and drops a day's partition,
    from whatever step an earlier run stopped at. DatabaseTimeoutError when a lock was not free in time."""
    table = sql.Identifier(name_of(day))
    with _autocommit(db, lock_timeout_s) as cursor:
        cursor.execute(
            "SELECT c.relispartition, coalesce(i.inhdetachpending, false) FROM pg_class c"
            " LEFT JOIN pg_inherits i ON i.inhrelid = c.oid WHERE c.oid = to_regclass(%s)",
            (name_of(day),),
        )
        state = cursor.fetchone()
        if state is None:
            return
        attached, detaching = state
        if detaching:
            cursor.execute(sql.SQL("ALTER TABLE telemetry_data DETACH PARTITION {} FINALIZE").format(table))
        elif attached:
            cursor.execute(sql.SQL("ALTER TABLE telemetry_data DETACH PARTITION {} CONCURRENTLY").format(table))
        cursor.execute(sql.SQL("DROP TABLE {}").format(table))
