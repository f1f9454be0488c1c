"""Process: turn one claim-checked upload into rows of telemetry_data, exactly once.

The blob is read and parsed on this thread while a writer thread COPYs finished chunks into
a staging table and moves them into telemetry_data (ON CONFLICT DO NOTHING): parsing and the
database's work overlap across two cores. Everything, ledger included, commits in one
transaction, so a redelivered claim check or a re-upload stores nothing twice.
"""
from __future__ import annotations

import hashlib
import logging
import queue
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator

import orjson
import psycopg2
import psycopg2.errors
import psycopg2.extras

from easysmart.compression import CorruptGzipError, gunzip_chunks
from easysmart.config import ProcessSettings, RetentionSettings, UploadLimits
from easysmart.db import Database
from easysmart.errors import EasySmartError, PayloadTooLargeError, UnavailableError, UnprocessableError
from easysmart.events import ClaimCheck
from easysmart.jsonstream import (FIELD, ITEM_END, ITEM_START, NOT_AN_OBJECT, READING, MalformedJsonError,
                                  events_from_items, iter_upload_text, text_reader)
from easysmart.observability import READINGS, batch_id_var, tenant_id_var
from easysmart.payload import (EquipmentInfo, ReadingNormaliser, ReadingRejected, SensorInfo, Tally, equipment_info,
                               sensor_info, structure_violations)
from easysmart.storage import BlobMissingError, BlobStore
from easysmart.upload import ItemTracker

logger = logging.getLogger(__name__)

# Python objects of an upload parsed in one go take about this many times its JSON text.
ONE_GO_MEMORY_FACTOR = 5
_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_VALUE_COLUMNS = "ts, value, state, battery_pct, lqi, rssi, battery_voltage, voltage, current, power"
_STAGING_COLUMNS = f"sensor_uuid, {_VALUE_COLUMNS}"
_DATA_COLUMNS = f"sensor_id, equipment_id, {_VALUE_COLUMNS}"


class BatchFailedError(UnprocessableError):
    """The batch can never be processed (blob missing or corrupt, not JSON, over a limit)."""

    code = "batch_failed"


@dataclass
class ProcessResult:
    batch_id: str
    status: str
    stored: int = 0
    duplicate: int = 0
    skipped: int = 0
    rejected: int = 0
    readings: int = 0
    redelivery: bool = False

    def body(self) -> dict:
        return dict(vars(self))


class MemoryBudget:
    """Reserves memory for uploads parsed in one go; those that do not fit are streamed."""

    def __init__(self, total_bytes: int) -> None:
        self.available = total_bytes
        self._lock = threading.Lock()

    def try_reserve(self, amount: int) -> bool:
        with self._lock:
            if amount > self.available:
                return False
            self.available -= amount
            return True

    def release(self, amount: int) -> None:
        with self._lock:
            self.available += amount


def _copy_text(value: str | None) -> str:
    if value is None:
        return "\\N"
    return value.translate(_COPY_ESCAPES) if _NEEDS_ESCAPE.search(value) else value


def _copy_number(value: float | None) -> str:
    return "\\N" if value is None else repr(value)


class _Writer:
    """Runs database operations, in order, on its own thread and connection/transaction."""

    _STOP = object()

    def __init__(self, cursor, tenant_id: str) -> None:
        self.cursor = cursor
        self.tenant_id = tenant_id
        self.stored = 0
        # sensor uuid -> "sensor_id\tequipment_id", the first two COPY columns of its rows
        self.sensor_ids: dict[str, str] = {}
        self._conflicts_seen = False
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="process-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            operation = self._queue.get()
            if operation is self._STOP:
                return
            if self._error is None:
                try:
                    operation()
                except BaseException as error:  # re-raised on the parsing thread
                    self._error = error

    def submit(self, operation: Callable[[], None]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(operation)

    def close(self) -> None:
        self._queue.put(self._STOP)
        self._thread.join()
        if self._error is not None:
            raise self._error

    # Operations (run on the writer thread)

    def upsert(self, equipment: EquipmentInfo, sensors: list[SensorInfo]) -> None:
        self.cursor.execute(
            "INSERT INTO equipment (tenant_id, uuid, name, location, status, collect_interval_s, siren_active, siren_time_s)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (tenant_id, uuid) DO UPDATE SET"
            " name = COALESCE(EXCLUDED.name, equipment.name), location = COALESCE(EXCLUDED.location, equipment.location),"
            " status = COALESCE(EXCLUDED.status, equipment.status),"
            " collect_interval_s = COALESCE(EXCLUDED.collect_interval_s, equipment.collect_interval_s),"
            " siren_active = COALESCE(EXCLUDED.siren_active, equipment.siren_active),"
            " siren_time_s = COALESCE(EXCLUDED.siren_time_s, equipment.siren_time_s), updated_at = now()"
            " RETURNING id",
            (self.tenant_id, equipment.uuid, equipment.name, equipment.location, equipment.status,
             equipment.collect_interval_s, equipment.siren_active, equipment.siren_time_s),
        )
        equipment_id = self.cursor.fetchone()[0]
        if not sensors:
            return
        # Sorted so concurrent batches lock sensor rows in one order (no deadlocks).
        rows = [(self.tenant_id, equipment_id, s.uuid, s.name, s.kind, s.unit, s.status, s.manufacturer, s.model,
                 s.firmware, s.hardware_id, s.via_hub) for s in sorted(sensors, key=lambda s: s.uuid)]
        returned = psycopg2.extras.execute_values(
            self.cursor,
            "INSERT INTO sensors (tenant_id, equipment_id, uuid, name, kind, unit, status, manufacturer, model, firmware,"
            " hardware_id, via_hub) VALUES %s ON CONFLICT (tenant_id, uuid) DO UPDATE SET"
            " equipment_id = EXCLUDED.equipment_id, name = COALESCE(EXCLUDED.name, sensors.name),"
            " kind = COALESCE(EXCLUDED.kind, sensors.kind), unit = COALESCE(EXCLUDED.unit, sensors.unit),"
            " status = COALESCE(EXCLUDED.status, sensors.status),"
            " manufacturer = COALESCE(EXCLUDED.manufacturer, sensors.manufacturer),"
            " model = COALESCE(EXCLUDED.model, sensors.model), firmware = COALESCE(EXCLUDED.firmware, sensors.firmware),"
            " hardware_id = COALESCE(EXCLUDED.hardware_id, sensors.hardware_id),"
            " via_hub = COALESCE(EXCLUDED.via_hub, sensors.via_hub), updated_at = now()"
            " RETURNING uuid, id, equipment_id",
            rows, page_size=1000, fetch=True,
        )
        for uuid_, sensor_id, sensor_equipment_id in returned:
            self.sensor_ids[uuid_] = f"{sensor_id}\t{sensor_equipment_id}"

    def stage(self, rows: list[tuple[str, str]]) -> None:
        """COPY rows whose sensors may not exist yet into the staging table, keyed by sensor uuid."""
        text = "".join([f"{_copy_text(sensor_uuid)}\t{rest}" for sensor_uuid, rest in rows])
        self.cursor.copy_expert(f"COPY esm_staging ({_STAGING_COLUMNS}) FROM STDIN", _StringReader(text))

    def write(self, rows: list[tuple[str, str]]) -> None:
        """Rows of upserted sensors: COPY straight into telemetry_data, as fast as a bare COPY.

        A reading stored before (a resend) makes that COPY fail: the chunk then goes through
        the staging table and ON CONFLICT DO NOTHING, and so does the rest of the batch."""
        if not self._conflicts_seen:
            ids = self.sensor_ids
            text = "".join([f"{ids[sensor_uuid]}\t{rest}" for sensor_uuid, rest in rows])
            self.cursor.execute("SAVEPOINT direct_copy")
            try:
                self.cursor.copy_expert(f"COPY telemetry_data ({_DATA_COLUMNS}) FROM STDIN", _StringReader(text))
            except psycopg2.errors.UniqueViolation:
                self.cursor.execute("ROLLBACK TO SAVEPOINT direct_copy")
                self._conflicts_seen = True
            else:
                self.cursor.execute("RELEASE SAVEPOINT direct_copy")
                self.stored += len(rows)
                return
        self.stage(rows)
        self.move_staged()

    def move_staged(self) -> None:
        self.cursor.execute(
            "INSERT INTO telemetry_data (sensor_id, equipment_id, ts, value, state, battery_pct, lqi, rssi,"
            " battery_voltage, voltage, current, power)"
            " SELECT s.id, s.equipment_id, st.ts, st.value, st.state, st.battery_pct, st.lqi, st.rssi,"
            " st.battery_voltage, st.voltage, st.current, st.power"
            " FROM esm_staging st JOIN sensors s ON s.tenant_id = %s AND s.uuid = st.sensor_uuid"
            " ON CONFLICT DO NOTHING",
            (self.tenant_id,),
        )
        self.stored += self.cursor.rowcount
        self.cursor.execute("TRUNCATE esm_staging")


class _StringReader:
    """A file-like view of a str for COPY, encoded in slices to keep memory flat."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = len(self._text) - self._pos
        size = max(size, 65536)
        chunk = self._text[self._pos:self._pos + size]
        self._pos += len(chunk)
        return chunk.encode("utf-8")

    def readline(self, size: int = -1) -> bytes:  # copy_expert requires it; COPY FROM uses read()
        return self.read(size)


class _BatchBuilder:
    """Consumes upload events: normalises readings into COPY text and feeds the writer."""

    def __init__(self, normaliser: ReadingNormaliser, writer: _Writer, chunk_readings: int) -> None:
        self.normaliser = normaliser
        self.writer = writer
        self.chunk_readings = chunk_readings
        self.tally = Tally()
        self.item = ItemTracker()
        self.items = 0
        self.violations: list[str] = []
        self._rows: list[tuple[str, str]] = []  # (sensor uuid, the rest of its COPY line)
        self._extras_text: dict[tuple, str] = {}
        self._sensors: dict[str, dict] = {}
        self._staged_unmoved = False
        # The time range of the valid readings, logged for the aggregates' refresh.
        self.oldest: datetime | None = None
        self.newest: datetime | None = None

    def consume(self, events: Iterable[tuple[str, int, object]]) -> None:
        for kind, index, payload in events:
            if kind == READING:
                self._reading(index, payload)
            elif kind == FIELD:
                key, value = payload
                self.item.fields[key] = value
            elif kind == ITEM_START:
                self.item.start(index)
            elif kind == ITEM_END:
                self._item_end()
            elif kind == NOT_AN_OBJECT:
                self.items += 1
                self.violations.extend(structure_violations(payload, index))
        self._flush(final=True)

    def _reading(self, index: int, raw: object) -> None:
        position = self.item.readings
        self.item.readings += 1
        self.tally.readings += 1
        try:
            reading = self.normaliser.normalise(raw)
        except ReadingRejected as rejection:
            path = f"[{index}].sensor[{position}]"
            if rejection.skipped:
                self.tally.skip(path, rejection.reason)
            else:
                self.tally.reject(path, rejection.reason)
            return
        self.tally.valid += 1
        if self.oldest is None or reading.ts < self.oldest:
            self.oldest = reading.ts
        if self.newest is None or reading.ts > self.newest:
            self.newest = reading.ts
        # The latest reading of a sensor carries its latest settings; they are read at flush time.
        self._sensors[reading.sensor_uuid] = raw
        extras = self._extras_text.get(reading.extras)
        if extras is None:
            # Battery, signal and power values repeat across readings: format each combination once.
            extras = "\t".join(["\\N" if v is None else repr(v) for v in reading.extras])
            if len(self._extras_text) < 50_000:
                self._extras_text[reading.extras] = extras
        self._rows.append((reading.sensor_uuid,
                           f"{reading.ts_text}\t{_copy_number(reading.value)}\t{_copy_text(reading.state)}\t{extras}\n"))
        if len(self._rows) >= self.chunk_readings:
            self._flush(final=False)

    def _item_end(self) -> None:
        self.items += 1
        problems = self.item.violations()
        if problems:
            self.violations.extend(problems)
            return
        self._flush(final=False, item_complete=True)

    def _equipment_known(self) -> bool:
        equip_uuid = self.item.fields.get("equip_uuid")
        return isinstance(equip_uuid, str) and bool(equip_uuid.strip())

    def _flush(self, final: bool, item_complete: bool = False) -> None:
        if self.violations:
            # The batch will fail as a whole; writing more is wasted work.
            self._rows, self._sensors = [], {}
            return
        rows, self._rows = self._rows, []
        # Rows can be written once their sensors exist, which needs the item's equipment;
        # until then (equip_uuid after the sensor list) they wait in the staging table.
        if (item_complete or not final) and self._equipment_known():
            equipment = equipment_info(self.item.fields)
            sensors = [sensor_info(raw, uuid) for uuid, raw in self._sensors.items()]
            self._sensors = {}
            self.writer.submit(lambda: self.writer.upsert(equipment, sensors))
            if self._staged_unmoved:
                self.writer.submit(self.writer.move_staged)
                self._staged_unmoved = False
            if rows:
                self.writer.submit(lambda: self.writer.write(rows))
        elif rows:
            self.writer.submit(lambda: self.writer.stage(rows))
            self._staged_unmoved = True


class BatchProcessor:
    def __init__(self, settings: ProcessSettings, limits: UploadLimits, retention: RetentionSettings, db: Database,
                 blobs: BlobStore) -> None:
        self.settings = settings
        self.limits = limits
        self.retention = retention
        self.db = db
        self.blobs = blobs
        self.memory = MemoryBudget(settings.process_max_memory_bytes)
        self._partition_days: set = set()

    def process(self, claim: ClaimCheck, now: datetime | None = None) -> ProcessResult:
        batch_id_var.set(claim.batch_id)
        tenant_id_var.set(claim.tenant_id)
        now = now or datetime.now(timezone.utc)
        zone, status = self._open_ledger(claim)
        if status == "done":
            return self._done_result(claim.batch_id)
        normaliser = ReadingNormaliser(zone, now, self.retention.raw_retention_days, self.settings.future_tolerance_s)
        self._ensure_partitions(*normaliser.time_window())
        try:
            result = self._load(claim, normaliser)
        except (BlobMissingError, BatchFailedError, CorruptGzipError, PayloadTooLargeError, MalformedJsonError) as error:
            reason = error.message if isinstance(error, EasySmartError) else str(error)
            self._mark_failed(claim, reason)
            raise BatchFailedError(f"batch {claim.batch_id} failed: {reason}", batch_id=claim.batch_id) from error
        if result.redelivery:
            return result
        if self.settings.process_delete_blob_after_commit:
            self.blobs.delete(claim.key)
        READINGS.labels("stored").inc(result.stored)
        READINGS.labels("duplicate").inc(result.duplicate)
        READINGS.labels("skipped").inc(result.skipped)
        READINGS.labels("rejected").inc(result.rejected)
        logger.info("batch processed", extra={k: v for k, v in result.body().items() if k != "batch_id"})
        return result

    def _open_ledger(self, claim: ClaimCheck) -> tuple[str, str]:
        with self.db.transaction() as cursor:
            cursor.execute("SELECT timezone FROM tenants WHERE id = %s", (claim.tenant_id,))
            row = cursor.fetchone()
            if row is None:
                raise BatchFailedError(f"tenant {claim.tenant_id} does not exist")
            zone = row[0]
            cursor.execute(
                "INSERT INTO batches (id, tenant_id, account_id, request_id, sha256, status, received_items, readings,"
                " bucket, object_key, size_bytes, decompressed_bytes, received_at)"
                " VALUES (%s, %s, %s, %s, %s, 'processing', %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET status = CASE WHEN batches.status = 'done' THEN 'done' ELSE 'processing' END,"
                " attempts = batches.attempts + 1 RETURNING status",
                (claim.batch_id, claim.tenant_id, claim.account_id, claim.request_id, claim.sha256, claim.items,
                 claim.readings, claim.bucket, claim.key, claim.size_bytes, claim.decompressed_bytes, claim.received_at),
            )
            return zone, cursor.fetchone()[0]

    def _done_result(self, batch_id: str) -> ProcessResult:
        with self.db.transaction() as cursor:
            cursor.execute("SELECT stored, duplicate, skipped, rejected, readings FROM batches WHERE id = %s", (batch_id,))
            stored, duplicate, skipped, rejected, readings = cursor.fetchone()
        return ProcessResult(batch_id, "done", stored, duplicate, skipped, rejected, readings or 0, redelivery=True)

    def _ensure_partitions(self, oldest: datetime, newest: datetime) -> None:
        days = {oldest.date(), newest.date()}
        if days <= self._partition_days and (newest.date() - oldest.date()).days < 40:
            return
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT esm_ensure_telemetry_partition(d::date) FROM generate_series(%s::date, %s::date, interval '1 day') d",
                (oldest.date(), newest.date()),
            )
        self._partition_days |= days

    def _events(self, claim: ClaimCheck, digest) -> tuple[Iterator, Callable[[], None]]:
        """Upload events, parsed in one go when memory allows, else streamed; and a release()."""
        limit = self.limits.ingest_max_decompressed_bytes
        texts = gunzip_chunks(_hashed(self.blobs.iter_chunks(claim.key), digest), limit)
        # The size is known when ingest saw the whole upload; unknown sizes are streamed.
        one_go_size = claim.decompressed_bytes
        reserve = (one_go_size or 0) * ONE_GO_MEMORY_FACTOR
        if (one_go_size is not None and one_go_size <= self.settings.process_parse_in_one_go_bytes
                and self.memory.try_reserve(reserve)):
            try:
                text = b"".join(texts)
                items = orjson.loads(text)
            except orjson.JSONDecodeError as error:
                self.memory.release(reserve)
                raise MalformedJsonError(f"the upload is not valid JSON: {error}") from None
            except BaseException:
                self.memory.release(reserve)
                raise
            del text
            if not isinstance(items, list):
                self.memory.release(reserve)
                raise MalformedJsonError("the upload is not a JSON array of equipment objects")
            return events_from_items(items), lambda: self.memory.release(reserve)
        return iter_upload_text(text_reader(texts)), lambda: None

    def _load(self, claim: ClaimCheck, normaliser: ReadingNormaliser) -> ProcessResult:
        digest = hashlib.sha256()
        with self.db.connection() as conn:
            with conn.cursor() as cursor:
                try:
                    cursor.execute("SELECT status FROM batches WHERE id = %s FOR UPDATE", (claim.batch_id,))
                    if cursor.fetchone()[0] == "done":
                        conn.rollback()
                        return self._done_result(claim.batch_id)
                    cursor.execute(
                        "CREATE TEMP TABLE IF NOT EXISTS esm_staging (sensor_uuid text, ts timestamptz, value float8,"
                        " state text, battery_pct real, lqi real, rssi real, battery_voltage real, voltage real,"
                        " current real, power real) ON COMMIT DELETE ROWS"
                    )
                    events, release = self._events(claim, digest)
                    writer = _Writer(cursor, claim.tenant_id)
                    builder = _BatchBuilder(normaliser, writer, self.settings.process_chunk_readings)
                    try:
                        builder.consume(events)
                    finally:
                        release()
                        writer.close()
                    if builder.violations:
                        raise BatchFailedError("equipment item(s) cannot be used: " + "; ".join(builder.violations[:20]))
                    if digest.hexdigest() != claim.sha256:
                        raise BatchFailedError("the blob's sha256 does not match the claim check")
                    tally = builder.tally
                    result = ProcessResult(claim.batch_id, "done", writer.stored, tally.valid - writer.stored,
                                           tally.skipped, tally.rejected, tally.readings)
                    # The touched range is logged in this transaction, so no refresh can miss it.
                    cursor.execute(
                        "WITH touched AS (INSERT INTO aggregate_touched (lo, hi) SELECT %s, %s WHERE %s)"
                        " UPDATE batches SET status = 'done', received_items = %s, readings = %s, stored = %s,"
                        " duplicate = %s, skipped = %s, rejected = %s, reasons = %s, reason_counts = %s,"
                        " processed_at = now() WHERE id = %s",
                        (builder.oldest, builder.newest, result.stored > 0, builder.items, tally.readings, result.stored, result.duplicate, result.skipped, result.rejected,
                         psycopg2.extras.Json(tally.reasons), psycopg2.extras.Json(tally.reason_counts), claim.batch_id),
                    )
                    conn.commit()
                    return result
                except BaseException:
                    if not conn.closed:
                        conn.rollback()
                    raise

    def _mark_failed(self, claim: ClaimCheck, reason: str) -> None:
        logger.warning("batch failed", extra={"reason": reason})
        try:
            with self.db.transaction() as cursor:
                cursor.execute(
                    "UPDATE batches SET status = 'failed', reasons = %s, reason_counts = %s, processed_at = now()"
                    " WHERE id = %s AND status <> 'done'",
                    (psycopg2.extras.Json([{"path": "$", "reason": reason, "outcome": "failed"}]),
                     psycopg2.extras.Json({reason: 1}), claim.batch_id),
                )
        except UnavailableError:
            logger.warning("could not record the failure; the batch will be retried")
            raise


def _hashed(chunks: Iterable[bytes], digest) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk
