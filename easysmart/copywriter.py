"""The COPY writer of process: equipment, sensors and readings into PostgreSQL on a thread of its own.

Readings arrive as COPY text lines grouped by sensor uuid. Those of known sensors are COPYed straight into
telemetry_data; the others wait in a temporary staging table keyed by sensor uuid until their sensors exist.
"""

from __future__ import annotations

import queue
import threading
from datetime import datetime, timezone
from typing import Callable

import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from easysmart.copytext import copy_text
from easysmart.db import PreparedStatement, one_row, prepared
from easysmart.payload import EquipmentInfo, SensorInfo

_VALUE_COLUMNS = "ts, value, state, battery_pct, lqi, rssi, battery_voltage, voltage, current, power"
_STAGING_COLUMNS = f"sensor_uuid, {_VALUE_COLUMNS}"
_DATA_COLUMNS = f"sensor_id, equipment_id, {_VALUE_COLUMNS}"


# Every batch upserts its equipment and their sensors (see easysmart.db.PreparedStatement).
_UPSERT_EQUIPMENT = PreparedStatement(
    "copywriter_upsert_equipment",
    "INSERT INTO equipment (tenant_id, uuid, name, location, status, collect_interval_s, siren_active, siren_time_s)"
    " VALUES (%(tenant)s, %(uuid)s, %(name)s, %(location)s, %(status)s, %(collect_interval_s)s, %(siren_active)s,"
    "  %(siren_time_s)s)"
    " ON CONFLICT (tenant_id, uuid) DO UPDATE SET"
    " name = COALESCE(EXCLUDED.name, equipment.name),"
    " location = COALESCE(EXCLUDED.location, equipment.location),"
    " status = COALESCE(EXCLUDED.status, equipment.status),"
    " collect_interval_s = COALESCE(EXCLUDED.collect_interval_s, equipment.collect_interval_s),"
    " siren_active = COALESCE(EXCLUDED.siren_active, equipment.siren_active),"
    " siren_time_s = COALESCE(EXCLUDED.siren_time_s, equipment.siren_time_s), updated_at = now()"
    " RETURNING id",
    tenant="uuid",
    uuid="text",
    name="text",
    location="text",
    status="text",
    collect_interval_s="integer",
    siren_active="boolean",
    siren_time_s="integer",
)
# (parameter, SensorInfo attribute): one array per column, the sensors in the same order in each.
_SENSOR_ARRAYS = (
    ("uuids", "uuid"),
    ("names", "name"),
    ("kinds", "kind"),
    ("units", "unit"),
    ("statuses", "status"),
    ("manufacturers", "manufacturer"),
    ("models", "model"),
    ("firmwares", "firmware"),
    ("hardware_ids", "hardware_id"),
    ("via_hubs", "via_hub"),
)
_UPSERT_SENSORS = PreparedStatement(
    "copywriter_upsert_sensors",
    "INSERT INTO sensors (tenant_id, equipment_id, uuid, name, kind, unit, status, manufacturer, model, firmware,"
    " hardware_id, via_hub)"
    " SELECT %(tenant)s, %(equipment)s, sensor.uuid, sensor.name, sensor.kind, sensor.unit, sensor.status,"
    "  sensor.manufacturer, sensor.model, sensor.firmware, sensor.hardware_id, sensor.via_hub"
    " FROM unnest(%(uuids)s::text[], %(names)s::text[], %(kinds)s::text[],"
    "  %(units)s::text[], %(statuses)s::text[], %(manufacturers)s::text[], %(models)s::text[], %(firmwares)s::text[],"
    "  %(hardware_ids)s::text[], %(via_hubs)s::boolean[]) WITH ORDINALITY"
    "  AS sensor (uuid, name, kind, unit, status, manufacturer, model, firmware, hardware_id, via_hub, position)"
    " ORDER BY sensor.position"
    " ON CONFLICT (tenant_id, uuid) DO UPDATE SET"
    " equipment_id = EXCLUDED.equipment_id, name = COALESCE(EXCLUDED.name, sensors.name),"
    " kind = COALESCE(EXCLUDED.kind, sensors.kind), unit = COALESCE(EXCLUDED.unit, sensors.unit),"
    " status = COALESCE(EXCLUDED.status, sensors.status),"
    " manufacturer = COALESCE(EXCLUDED.manufacturer, sensors.manufacturer),"
    " model = COALESCE(EXCLUDED.model, sensors.model),"
    " firmware = COALESCE(EXCLUDED.firmware, sensors.firmware),"
    " hardware_id = COALESCE(EXCLUDED.hardware_id, sensors.hardware_id),"
    " via_hub = COALESCE(EXCLUDED.via_hub, sensors.via_hub), updated_at = now()"
    " RETURNING uuid, id, equipment_id, kind",
    tenant="uuid",
    equipment="bigint",
    uuids="text[]",
    names="text[]",
    kinds="text[]",
    units="text[]",
    statuses="text[]",
    manufacturers="text[]",
    models="text[]",
    firmwares="text[]",
    hardware_ids="text[]",
    via_hubs="boolean[]",
)


def create_staging_table(cursor: psycopg2.extensions.cursor) -> None:
    """The session's staging table, emptied at every commit."""
    cursor.execute(
        "CREATE TEMP TABLE IF NOT EXISTS esm_staging (sensor_uuid text, ts timestamptz, value float8,"
        " state text, battery_pct real, lqi real, rssi real, battery_voltage real, voltage real,"
        " current real, power real) ON COMMIT DELETE ROWS"
    )


def grouped_copy_text(rows: dict[str, list[str]], first_columns: dict[str, str]) -> str:
    """COPY text of rows grouped by sensor uuid: each line is the sensor's first columns, a tab and the line as the
    builder gave it; joined in C, a group at a time."""
    parts = []
    for sensor_uuid, lines in rows.items():
        prefix = first_columns[sensor_uuid] + "\t"
        parts.append(prefix + ("\n" + prefix).join(lines) + "\n")
    return "".join(parts)


class CopyWriter:
    """Runs database operations, in order, on the cursor (and so the transaction) it is given: on its own thread, so
    that parsing and the database's work overlap, or (`threaded=False`, for small uploads, where starting and joining
    a thread costs more than the overlap gains) at once on the caller's."""

    _STOP = object()

    def __init__(self, cursor: psycopg2.extensions.cursor, tenant_id: str, *, threaded: bool = True) -> None:
        self.cursor = cursor
        self.tenant_id = tenant_id
        self.stored = 0
        # sensor uuid -> "sensor_id\tequipment_id", the first two COPY columns of its rows
        self.sensor_ids: dict[str, str] = {}
        # What the batch touched, for its telemetry.stored event: every equipment it carried (id -> uuid), every
        # sensor upserted (uuid -> id, equipment id, kind), and per sensor the readings stored (not duplicates):
        # uuid -> [first ts, last ts, count], times as ISO-8601 UTC text (which sorts as time does).
        self.equipment: dict[int, str] = {}
        self.sensors: dict[str, tuple[int, int, str | None]] = {}
        self.stored_spans: dict[str, list] = {}
        self._conflicts_seen = False
        self._staging_created = False
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if threaded:
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
        if self._thread is None:
            operation()
        else:
            self._queue.put(operation)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(self._STOP)
            self._thread.join()
        if self._error is not None:
            raise self._error

    # Operations (run on the writer thread)

    def upsert(self, equipment: EquipmentInfo, sensors: list[SensorInfo]) -> None:
        self.cursor.execute(
            prepared(self.cursor, _UPSERT_EQUIPMENT),
            {
                "tenant": self.tenant_id,
                "uuid": equipment.uuid,
                "name": equipment.name,
                "location": equipment.location,
                "status": equipment.status,
                "collect_interval_s": equipment.collect_interval_s,
                "siren_active": equipment.siren_active,
                "siren_time_s": equipment.siren_time_s,
            },
        )
        equipment_id = one_row(self.cursor)[0]
        self.equipment[equipment_id] = equipment.uuid
        if not sensors:
            return
        # Sorted so concurrent batches lock sensor rows in one order (no deadlocks).
        ordered = sorted(sensors, key=lambda sensor: sensor.uuid)
        self.cursor.execute(
            prepared(self.cursor, _UPSERT_SENSORS),
            {
                "tenant": self.tenant_id,
                "equipment": equipment_id,
                **{column: [getattr(sensor, attribute) for sensor in ordered] for column, attribute in _SENSOR_ARRAYS},
            },
        )
        for uuid_, sensor_id, sensor_equipment_id, kind in self.cursor.fetchall():
            self.sensor_ids[uuid_] = f"{sensor_id}\t{sensor_equipment_id}"
            self.sensors[uuid_] = (sensor_id, sensor_equipment_id, kind)

    def stage(self, rows: dict[str, list[str]]) -> None:
        """COPY rows whose sensors may not exist yet into the staging table, keyed by sensor uuid."""
        if not self._staging_created:
            # Made when first needed: most batches (sensors known, nothing resent) never stage a row.
            create_staging_table(self.cursor)
            self._staging_created = True
        text = grouped_copy_text(rows, {sensor_uuid: copy_text(sensor_uuid) for sensor_uuid in rows})
        self.cursor.copy_expert(f"COPY esm_staging ({_STAGING_COLUMNS}) FROM STDIN", _StringReader(text))

    def write(self, rows: dict[str, list[str]]) -> None:
        """Rows of upserted sensors: COPY straight into telemetry_data, as fast as a bare COPY.

        A reading stored before (a resend) makes that COPY fail: the chunk then goes through
        the staging table and ON CONFLICT DO NOTHING, and so does the rest of the batch."""
        if not self._conflicts_seen:
            text = grouped_copy_text(rows, self.sensor_ids)
            self.cursor.execute("SAVEPOINT direct_copy")
            try:
                self.cursor.copy_expert(f"COPY telemetry_data ({_DATA_COLUMNS}) FROM STDIN", _StringReader(text))
            except psycopg2.errors.UniqueViolation:
                self.cursor.execute("ROLLBACK TO SAVEPOINT direct_copy")
                self._conflicts_seen = True
            else:
                self.cursor.execute("RELEASE SAVEPOINT direct_copy")
                self.stored += sum(map(len, rows.values()))
                self._note_stored(rows)
                return
        self.stage(rows)
        self.move_staged()

    def discard_staged(self) -> None:
        """Drop the staged rows (their equipment turned out to be unstorable)."""
        self.cursor.execute("TRUNCATE esm_staging")

    def move_staged(self) -> None:
        # Only the rows inserted (not the duplicates) come back, summed per sensor.
        self.cursor.execute(
            "WITH moved AS (INSERT INTO telemetry_data (sensor_id, equipment_id, ts, value, state, battery_pct, lqi,"
            " rssi, battery_voltage, voltage, current, power)"
            " SELECT s.id, s.equipment_id, st.ts, st.value, st.state, st.battery_pct, st.lqi, st.rssi,"
            " st.battery_voltage, st.voltage, st.current, st.power"
            " FROM esm_staging st JOIN sensors s ON s.tenant_id = %s AND s.uuid = st.sensor_uuid"
            " ON CONFLICT DO NOTHING RETURNING sensor_id, ts)"
            " SELECT s.uuid, s.id, s.equipment_id, s.kind, min(m.ts), max(m.ts), count(*)"
            " FROM moved m JOIN sensors s ON s.id = m.sensor_id GROUP BY s.uuid, s.id, s.equipment_id, s.kind",
            (self.tenant_id,),
        )
        for sensor_uuid, sensor_id, equipment_id, kind, first, last, count in self.cursor.fetchall():
            self.stored += count
            self.sensors.setdefault(sensor_uuid, (sensor_id, equipment_id, kind))
            self._note_span(sensor_uuid, _utc_text(first), _utc_text(last), count)
        self.cursor.execute("TRUNCATE esm_staging")

    def _note_stored(self, rows: dict[str, list[str]]) -> None:
        """Adds rows just stored to their sensors' spans. A row's COPY text starts with its ISO-8601 UTC time and a
        tab, and no such time is a prefix of another, so the least and greatest lines of a sensor are its first and
        last times (compared by min() and max() in C)."""
        for sensor_uuid, lines in rows.items():
            first, last = min(lines), max(lines)
            self._note_span(sensor_uuid, first[: first.index("\t")], last[: last.index("\t")], len(lines))

    def _note_span(self, sensor_uuid: str, first: str, last: str, count: int) -> None:
        span = self.stored_spans.get(sensor_uuid)
        if span is None:
            self.stored_spans[sensor_uuid] = [first, last, count]
        else:
            span[0], span[1], span[2] = min(span[0], first), max(span[1], last), span[2] + count


def _utc_text(moment: datetime) -> str:
    # As ReadingNormaliser writes a reading's time: datetime.isoformat() in UTC.
    return moment.astimezone(timezone.utc).isoformat()


class _StringReader:
    """A file-like view of a str for COPY, encoded in slices to keep memory flat."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = len(self._text) - self._pos
        size = max(size, 65536)
        chunk = self._text[self._pos : self._pos + size]
        self._pos += len(chunk)
        return chunk.encode("utf-8")

    def readline(self, size: int = -1) -> bytes:  # copy_expert requires it; COPY FROM uses read()
        return self.read(size)
