"""Local ping-source bridge with Knative PingSource semantics.

On each schedule's minute it POSTs a binary-mode CloudEvent (type dev.knative.sources.ping,
data `{"job": ...}`) to the retention function. Schedules are five-field cron expressions
(minute hour day-of-month month day-of-week, UTC) from RETENTION_REFRESH_SCHEDULE and
RETENTION_EXPIRE_SCHEDULE; the target is RETENTION_URL.

Run: python -m easysmart.bridges.ping_source
"""
from __future__ import annotations

import logging
import signal
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import orjson
import requests

from easysmart.config import LoggingSettings, PingSourceSettings
from easysmart.observability import configure_logging

logger = logging.getLogger(__name__)

EVENT_TYPE = "dev.knative.sources.ping"
SOURCE_PREFIX = "/apis/v1/namespaces/default/pingsources/"
# (name, low, high) of the five fields; day-of-week 7 is Sunday too.
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))


class CronError(ValueError):
    """A cron expression that cannot be read."""


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        spec, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if spec == "*":
                first, last = low, high
            elif "-" in spec:
                first, last = (int(bound) for bound in spec.split("-", 1))
            else:
                first = last = int(spec)
                if step_text:
                    last = high
        except ValueError:
            raise CronError(f"{name}: cannot read {part!r}") from None
        if step < 1 or not low <= first <= last <= high:
            raise CronError(f"{name}: {part!r} is outside {low}-{high} or has a bad step")
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> "CronSchedule":
        fields = expression.split()
        if len(fields) != 5:
            raise CronError(f"{expression!r}: a cron expression has 5 fields, not {len(fields)}")
        parsed = [_parse_field(text, *spec) for text, spec in zip(fields, _FIELDS)]
        weekdays = frozenset(day % 7 for day in parsed[4])
        return cls(parsed[0], parsed[1], parsed[2], parsed[3], weekdays,
                   not fields[2].startswith("*"), not fields[4].startswith("*"))

    def matches(self, moment: datetime) -> bool:
        if moment.minute not in self.minutes or moment.hour not in self.hours or moment.month not in self.months:
            return False
        day_ok = moment.day in self.days
        weekday_ok = (moment.isoweekday() % 7) in self.weekdays
        # Cron's rule: when both day fields are restricted, either one matching is enough.
        if self.days_restricted and self.weekdays_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok

    def next_after(self, moment: datetime) -> datetime:
        candidate = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(366 * 24 * 60):
            if self.matches(candidate):
                return candidate
            candidate += timedelta(minutes=1)
        raise CronError("the schedule never matches within a year")


def ping_headers(name: str, event_id: str | None = None, now: datetime | None = None) -> dict[str, str]:
    """Binary-mode CloudEvent headers of a ping, as a Knative PingSource sends them."""
    return {
        "ce-specversion": "1.0", "ce-type": EVENT_TYPE, "ce-source": SOURCE_PREFIX + name,
        "ce-id": event_id or str(uuid.uuid4()),
        "ce-time": (now or datetime.now(timezone.utc)).isoformat().replace("+00:00", "Z"),
        "Content-Type": "application/json",
    }


class PingSource:
    def __init__(self, url: str, schedules: dict[str, tuple[CronSchedule, dict]], timeout_s: float = 600) -> None:
        self.url = url
        self.schedules = schedules  # name -> (schedule, data)
        self.timeout_s = timeout_s
        self.stopping = threading.Event()

    def send(self, name: str, data: dict) -> int:
        try:
            response = requests.post(self.url, data=orjson.dumps(data), headers=ping_headers(name), timeout=self.timeout_s)
        except requests.RequestException as error:
            logger.warning("ping not delivered", extra={"ping": name, "error": str(error)})
            return 0
        level = logging.INFO if response.ok else logging.WARNING
        logger.log(level, "ping delivered", extra={"ping": name, "status": response.status_code})
        return response.status_code

    def run(self) -> None:
        moment = datetime.now(timezone.utc)
        while not self.stopping.is_set():
            moment = min(schedule.next_after(moment) for schedule, _ in self.schedules.values())
            wait = (moment - datetime.now(timezone.utc)).total_seconds()
            if wait > 0 and self.stopping.wait(wait):
                return
            for name, (schedule, data) in self.schedules.items():
                if schedule.matches(moment):
                    self.send(name, data)


def main() -> None:
    configure_logging("ping-bridge", LoggingSettings.from_env())
    config = PingSourceSettings.from_env()
    source = PingSource(config.retention_url, {
        "retention-refresh": (CronSchedule.parse(config.retention_refresh_schedule), {"job": "refresh"}),
        "retention-expire": (CronSchedule.parse(config.retention_expire_schedule), {"job": "expire"}),
    })
    signal.signal(signal.SIGTERM, lambda *_: source.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: source.stopping.set())
    logger.info("ping source started", extra={"url": config.retention_url})
    source.run()


if __name__ == "__main__":
    main()
