"""What each account uploaded: recorded by process in a batch's own transaction, read by the devices list.

Per account: the last upload time and the newest reading time (columns of `accounts`), and uploads and readings
per UTC hour (`account_upload_stats`), which sum to the last 24 hours' counts. The upsert that counts a batch
also deletes the account's hours older than KEPT_HOURS, so the table stays a few dozen rows per account.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg2.extensions

from easysmart.db import PreparedStatement, prepared

KEPT_HOURS = 48
# The counts "in the last 24 h" are the current hour's and the 23 before it.
WINDOW_HOURS = 24

_RECORD = PreparedStatement(
    "uploadstats_record",
    "WITH counted AS ("
    "  INSERT INTO account_upload_stats (account_id, hour, uploads, readings)"
    "  VALUES (%(account)s, date_trunc('hour', %(received)s::timestamptz, 'UTC'), 1, %(readings)s)"
    "  ON CONFLICT (account_id, hour) DO UPDATE SET uploads = account_upload_stats.uploads + 1,"
    "  readings = account_upload_stats.readings + EXCLUDED.readings),"
    " pruned AS (DELETE FROM account_upload_stats WHERE account_id = %(account)s AND hour < %(oldest_kept)s)"
    " UPDATE accounts SET last_upload_at = greatest(last_upload_at, %(received)s),"
    " last_reading_at = greatest(last_reading_at, %(newest)s) WHERE id = %(account)s",
    account="uuid",
    received="timestamptz",
    readings="integer",
    oldest_kept="timestamptz",
    newest="timestamptz",
)


def record_upload(
    cursor: psycopg2.extensions.cursor,
    account_id: str,
    received_at: datetime,
    readings: int,
    newest_reading: datetime | None,
) -> None:
    """Counts one processed upload of `readings` readings (the newest taken at `newest_reading`) for the account."""
    cursor.execute(
        prepared(cursor, _RECORD),
        {
            "account": account_id,
            "received": received_at,
            "readings": readings,
            "newest": newest_reading,
            "oldest_kept": received_at - timedelta(hours=KEPT_HOURS),
        },
    )


def window_start(now: datetime) -> datetime:
    """The first hour the last 24 hours' counts include."""
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=WINDOW_HOURS - 1)
