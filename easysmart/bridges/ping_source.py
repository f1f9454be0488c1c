"""Local ping-source bridge with Knative PingSource semantics.

On each schedule's minute it POSTs a binary-mode CloudEvent (type dev.knative.sources.ping,
data `{"job": ...}`) to the retention function. Schedules are five-field cron expressions
(minute hour day-of-month month day-of-week, UTC) from RETENTION_REFRESH_SCHEDULE and
RETENTION_EXPIRE_SCHEDULE; the target is RETENTION_URL.

Run: python -m easysmart.bridges.ping_source
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson
import requests
from croniter import CroniterError, croniter

from easysmart.config import LoggingSettings, PingSourceSettings
from easysmart.errors import EasySmartError
from easysmart.observability import configure_logging

logger = logging.getLogger(__name__)

EVENT_TYPE = "dev.knative.sources.ping"
SOURCE_PREFIX = "/apis/v1/namespaces/default/pingsources/"
_FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
# The grammar the bridge reads: numbers, '*', lists, ranges and steps. croniter also reads names,
# 'L', '#', 'H' and a seconds field, which the schedules here never use.
_FIELD = re.compile(r"[0-9*,/-]+")
_RANGE = re.compile(r"(\d+)-(\d+)")


class CronError(EasySmartError, ValueError):
    """A cron expression that cannot be read, or a schedule that never fires."""


@dataclass(frozen=True)
class CronSchedule:
    """A five-field cron schedule in UTC, read and evaluated by croniter.

    Day of week 0 and 7 are Sunday. When both day fields are restricted, either one matching is
    enough, as in cron and in Knative's PingSource (robfig/cron): a day field is unrestricted only
    when it is '*' (or '*/1'), so '*/2' in day of month with a weekday means either.
    """

    expression: str

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        fields = expression.split()
        if len(fields) != 5:
            raise CronError(f"{expression!r}: a cron expression has 5 fields, not {len(fields)}")
        for name, text in zip(_FIELD_NAMES, fields):
            if not _FIELD.fullmatch(text):
                raise CronError(f"{name}: cannot read {text!r}")
            # croniter reads a backwards range as one that wraps around; cron refuses it.
            for first, last in _RANGE.findall(text):
                if int(first) > int(last):
                    raise CronError(f"{name}: the range {first}-{last} runs backwards")
        # croniter counts '*/1' as restricted, which would make a weekday alone match every day.
        normalised = " ".join("*" if text == "*/1" else text for text in fields)
        try:
            croniter(normalised)
        except CroniterError as error:
            raise CronError(f"{expression!r}: {error}") from None
        return cls(normalised)

    def matches(self, moment: datetime) -> bool:
        return croniter.match(self.expression, moment)

    def next_after(self, moment: datetime) -> datetime:
        """The first minute after `moment`'s minute that the schedule fires on."""
        try:
            return croniter(self.expression, moment).get_next(datetime)
        except CroniterError as error:
            raise CronError(f"{self.expression!r} never fires: {error}") from None


def ping_headers(name: str, event_id: str | None = None, now: datetime | None = None) -> dict[str, str]:
    """Binary-mode CloudEvent headers of a ping, as a Knative PingSource sends them."""
    return {
        "ce-specversion": "1.0",
        "ce-type": EVENT_TYPE,
        "ce-source": SOURCE_PREFIX + name,
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
            response = requests.post(
                self.url, data=orjson.dumps(data), headers=ping_headers(name), timeout=self.timeout_s
            )
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
    source = PingSource(
        config.retention_url,
        {
            "retention-refresh": (CronSchedule.parse(config.retention_refresh_schedule), {"job": "refresh"}),
            "retention-expire": (CronSchedule.parse(config.retention_expire_schedule), {"job": "expire"}),
        },
    )
    signal.signal(signal.SIGTERM, lambda *_: source.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: source.stopping.set())
    logger.info("ping source started", extra={"url": config.retention_url})
    source.run()


if __name__ == "__main__":
    main()
