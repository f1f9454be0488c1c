"""The sample uploads of the real client, with their times moved to recent ones.

Offsets and naive times stay as they are: only the clock time moves, by whole minutes,
so every reading lands inside the raw-data retention whatever the date of the run.
"""

from __future__ import annotations

import copy
import gzip
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TIME_FIELDS = ("sensor_datahora_coleta", "timestamp")


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def _format_like(original: str, moved: datetime) -> str:
    if original.endswith("Z"):
        return moved.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
    if "." in original:
        return moved.isoformat(timespec="microseconds")
    return moved.isoformat(timespec="seconds")


def shift_times(items: list, delta: timedelta) -> list:
    moved = copy.deepcopy(items)
    for item in moved:
        for reading in item.get("sensor", []):
            for name in TIME_FIELDS:
                stamp = reading.get(name)
                if isinstance(stamp, str):
                    reading[name] = _format_like(stamp, _parse(stamp) + delta)
    return moved


def latest_time(items: list) -> datetime:
    """The latest reading time, naive ones read as UTC (close enough to pick a shift)."""
    latest = None
    for item in items:
        for reading in item.get("sensor", []):
            for name in TIME_FIELDS:
                stamp = reading.get(name)
                if isinstance(stamp, str):
                    parsed = _parse(stamp)
                    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
                    latest = parsed if latest is None or parsed > latest else latest
    return latest


def recent_sample(name: str, hours_ago: float = 3.0) -> list:
    """The sample with its latest reading about `hours_ago` hours before now."""
    items = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    target = datetime.now(timezone.utc) - timedelta(hours=hours_ago)
    delta = target - latest_time(items)
    return shift_times(items, timedelta(minutes=round(delta.total_seconds() / 60)))


def gzipped(items: list) -> bytes:
    return gzip.compress(json.dumps(items).encode())


def client_backlog(polls: int, end: datetime | None = None) -> list:
    """The small sample's equipment as the client sends a backlog: its sensors polled every 10 s, each
    reading stamped by `datetime.now().isoformat()` (naive, microseconds), door states and extras constant."""
    items = json.loads((FIXTURES / "ha-bulk-small.json").read_text(encoding="utf-8"))
    item = items[0]
    sensors = {reading["sensor_uuid"]: reading for reading in item["sensor"]}
    end = end or datetime.now() - timedelta(hours=3)
    readings = []
    for poll in range(polls):
        taken = end - timedelta(seconds=10 * (polls - poll))
        for number, reading in enumerate(sensors.values()):
            stamp = (taken + timedelta(microseconds=41 * number + poll % 997)).isoformat(timespec="microseconds")
            readings.append({**reading, "sensor_datahora_coleta": stamp})
    return [{**item, "sensor": readings}]
