"""Walks upload events (easysmart.jsonstream): structure checks and counts shared by ingest and process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, cast

from easysmart.jsonstream import FIELD, ITEM_END, ITEM_START, NOT_AN_OBJECT, READING, Event
from easysmart.payload import structure_violations

MAX_LISTED_VIOLATIONS = 100


@dataclass
class UploadShape:
    """What a structural pass over (a prefix of) an upload found."""

    items: int = 0
    readings: int = 0
    violations: list[str] = field(default_factory=list)
    violation_count: int = 0

    def add_violations(self, problems: list[str]) -> None:
        self.violation_count += len(problems)
        room = MAX_LISTED_VIOLATIONS - len(self.violations)
        if room > 0:
            self.violations.extend(problems[:room])


class ItemTracker:
    """Collects one item's scalar fields and reading count from events to check its structure."""

    def __init__(self) -> None:
        self.index = -1
        self.fields: dict[str, object] = {}
        self.readings = 0

    def start(self, index: int) -> None:
        self.index, self.fields, self.readings = index, {}, 0

    def violations(self) -> list[str]:
        # A non-empty sensor list arrives as READING events, never as a field.
        shaped = dict(self.fields)
        if self.readings:
            shaped["sensor"] = [None]
        return structure_violations(shaped, self.index)


def scan_shape(events: Iterable[Event], shape: UploadShape) -> UploadShape:
    """Counts items and readings and lists structure violations; fills `shape` as it goes
    so a caller that stops early (a window ran out) keeps what was seen."""
    tracker = ItemTracker()
    for kind, index, payload in events:
        if kind == READING:
            tracker.readings += 1
            shape.readings += 1
        elif kind == FIELD:
            key, value = cast("tuple[str, object]", payload)
            tracker.fields[key] = value
        elif kind == ITEM_START:
            tracker.start(index)
        elif kind == ITEM_END:
            shape.items += 1
            shape.add_violations(tracker.violations())
        elif kind == NOT_AN_OBJECT:
            shape.items += 1
            shape.add_violations(structure_violations(payload, index))
    return shape
