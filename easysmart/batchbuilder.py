"""Turns the events of an upload into COPY text for the writer, chunk by chunk, and tallies the readings."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Iterable, cast

from easysmart.copywriter import CopyWriter
from easysmart.jsonstream import FIELD, ITEM_END, ITEM_START, NOT_AN_OBJECT, READING
from easysmart.payload import (
    ReadingNormaliser,
    ReadingRejected,
    Tally,
    copy_columns,
    equipment_info,
    identity_problem,
    sensor_info,
    structure_violations,
)
from easysmart.upload import ItemTracker


class BatchBuilder:
    """Consumes upload events: normalises readings into COPY text and feeds the writer."""

    def __init__(self, normaliser: ReadingNormaliser, writer: CopyWriter, chunk_readings: int) -> None:
        self.normaliser = normaliser
        self.writer = writer
        self.chunk_readings = chunk_readings
        self.tally = Tally()
        self.item = ItemTracker()
        self.items = 0
        self.violations: list[str] = []
        # sensor uuid -> its readings' COPY lines after the sensor's columns (without newlines), in upload order
        self._rows: dict[str, list[str]] = {}
        self._row_count = 0
        self._sensors: dict[str, tuple[int, Any]] = {}  # uuid -> (position, its latest reading)
        self._staged_unmoved = False
        # The current item: why its equip_uuid cannot be stored (its readings are then rejected), and how many
        # of its readings were taken as valid so far (undone if that turns out after them).
        self._item_problem: str | None = None
        self._item_valid = 0
        self._cuts_noted: set[tuple[str, str]] = set()
        # The time range of the valid readings, logged for the aggregates' refresh: ISO-8601 UTC text (which sorts
        # as time does), taken from the COPY lines (which start with it) as they leave the builder.
        self._oldest: str | None = None
        self._newest: str | None = None

    @property
    def oldest(self) -> datetime | None:
        return None if self._oldest is None else datetime.fromisoformat(self._oldest)

    @property
    def newest(self) -> datetime | None:
        return None if self._newest is None else datetime.fromisoformat(self._newest)

    def consume(self, events: Iterable[tuple[str, int, object]]) -> None:
        for kind, index, payload in events:
            if kind == READING:
                self._reading(index, payload)
            elif kind == FIELD:
                key, value = cast("tuple[str, object]", payload)
                self.item.fields[key] = value
                if key == "equip_uuid":
                    self._equipment_uuid_seen(index, value)
            elif kind == ITEM_START:
                self.item.start(index)
                self._item_problem, self._item_valid = None, 0
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
        if self._item_problem is not None:
            self.tally.reject(f"[{index}].sensor[{position}]", self._item_problem)
            return
        row = self.normaliser.copy_line(raw)
        if row is None:
            try:
                reading = self.normaliser.normalise(raw)
            except ReadingRejected as rejection:
                path = f"[{index}].sensor[{position}]"
                if rejection.skipped:
                    self.tally.skip(path, rejection.reason)
                else:
                    self.tally.reject(path, rejection.reason)
                return
            row = reading.sensor_uuid, copy_columns(reading)
        sensor_uuid, line = row
        self.tally.valid += 1
        self._item_valid += 1
        # The latest reading of a sensor carries its latest settings; they are read at flush time.
        self._sensors[sensor_uuid] = (position, raw)
        lines = self._rows.get(sensor_uuid)
        if lines is None:
            self._rows[sensor_uuid] = lines = []
        lines.append(line)
        self._row_count += 1
        if self._row_count >= self.chunk_readings:
            self._flush(final=False)

    def _take_rows(self) -> dict[str, list[str]]:
        """The rows gathered so far, their times folded into the batch's range."""
        rows, self._rows, self._row_count = self._rows, {}, 0
        for lines in rows.values():
            # A line starts with its time, and no such time is a prefix of another: the least line is the oldest.
            first, last = min(lines), max(lines)
            first, last = first[: first.index("\t")], last[: last.index("\t")]
            if self._oldest is None or first < self._oldest:
                self._oldest = first
            if self._newest is None or last > self._newest:
                self._newest = last
        return rows

    def _equipment_uuid_seen(self, index: int, equip_uuid: object) -> None:
        if not isinstance(equip_uuid, str) or not equip_uuid.strip():
            return  # a structure violation, reported at the item's end
        self._item_problem = identity_problem("equip_uuid", equip_uuid.strip(), self.normaliser.limits)
        if self._item_problem is None or not self._item_valid:
            return
        # An identity is never cut: the readings already taken from this item (waiting for their
        # equipment, here or in the staging table) are rejected after all.
        self.tally.valid -= self._item_valid
        self.tally.reject(f"[{index}].sensor", self._item_problem, self._item_valid)
        self._item_valid = 0
        self._take_rows()
        self._sensors = {}
        if self._staged_unmoved:
            self.writer.submit(self.writer.discard_staged)
            self._staged_unmoved = False

    def _cut_noter(self, path: str) -> Callable[[str], None]:
        def note(reason: str) -> None:
            # An item's settings are read at every flush of its readings: each cut is noted once.
            if (path, reason) not in self._cuts_noted and len(self._cuts_noted) < 10_000:
                self._cuts_noted.add((path, reason))
                self.tally.cut(path, reason)

        return note

    def _item_end(self) -> None:
        self.items += 1
        problems = self.item.violations()
        if problems:
            self.violations.extend(problems)
            return
        self._flush(final=False, item_complete=True)

    def _equipment_known(self) -> bool:
        equip_uuid = self.item.fields.get("equip_uuid")
        return isinstance(equip_uuid, str) and bool(equip_uuid.strip()) and self._item_problem is None

    def _flush(self, final: bool, item_complete: bool = False) -> None:
        if self.violations:
            # The batch will fail as a whole; writing more is wasted work.
            self._take_rows()
            self._sensors = {}
            return
        rows = self._take_rows()
        # Rows can be written once their sensors exist, which needs the item's equipment;
        # until then (equip_uuid after the sensor list) they wait in the staging table.
        if (item_complete or not final) and self._equipment_known():
            index, limits = self.item.index, self.normaliser.limits
            equipment = equipment_info(self.item.fields, limits, self._cut_noter(f"[{index}]"))
            sensors = [
                sensor_info(raw, uuid, limits, self._cut_noter(f"[{index}].sensor[{position}]"))
                for uuid, (position, raw) in self._sensors.items()
            ]
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
