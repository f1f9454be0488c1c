"""Turns the events of an upload into COPY text for the writer, chunk by chunk, and tallies the readings."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Iterable, cast

from easysmart.copywriter import CopyWriter, copy_number, copy_text
from easysmart.jsonstream import FIELD, ITEM_END, ITEM_START, NOT_AN_OBJECT, READING
from easysmart.payload import (
    ReadingNormaliser,
    ReadingRejected,
    Tally,
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
        self._rows: list[tuple[str, str]] = []  # (sensor uuid, the rest of its COPY line)
        self._extras_text: dict[tuple, str] = {}
        self._sensors: dict[str, tuple[int, Any]] = {}  # uuid -> (position, its latest reading)
        self._staged_unmoved = False
        # The current item: why its equip_uuid cannot be stored (its readings are then rejected), and how many
        # of its readings were taken as valid so far (undone if that turns out after them).
        self._item_problem: str | None = None
        self._item_valid = 0
        self._cuts_noted: set[tuple[str, str]] = set()
        # The time range of the valid readings, logged for the aggregates' refresh.
        self.oldest: datetime | None = None
        self.newest: datetime | None = None

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
        self._item_valid += 1
        if self.oldest is None or reading.ts < self.oldest:
            self.oldest = reading.ts
        if self.newest is None or reading.ts > self.newest:
            self.newest = reading.ts
        # The latest reading of a sensor carries its latest settings; they are read at flush time.
        self._sensors[reading.sensor_uuid] = (position, raw)
        extras = self._extras_text.get(reading.extras)
        if extras is None:
            # Battery, signal and power values repeat across readings: format each combination once.
            extras = "\t".join(["\\N" if v is None else repr(v) for v in reading.extras])
            if len(self._extras_text) < 50_000:
                self._extras_text[reading.extras] = extras
        self._rows.append(
            (
                reading.sensor_uuid,
                f"{reading.ts_text}\t{copy_number(reading.value)}\t{copy_text(reading.state)}\t{extras}\n",
            )
        )
        if len(self._rows) >= self.chunk_readings:
            self._flush(final=False)

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
        self._rows, self._sensors = [], {}
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
            self._rows, self._sensors = [], {}
            return
        rows, self._rows = self._rows, []
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
